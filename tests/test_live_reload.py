"""Live change on a running pipeline under load: config edits, plugin files -- nothing lost.

The pipeline runs in this process with its real threads, rings and file watcher; edits are real
writes to a real config.toml and plugin folder. A capture sink (tests/plugin_files/capture.py)
keeps what reaches the end, so the checks are exact: per instrument, output ``seq`` is contiguous
(nothing lost, nothing twice) and every EMA value equals a reference recurrence that switches
its window exactly at the batch boundary where each change was applied.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hftagg import hookimpl
from hftagg.runtime.assemble import assemble
from hftagg.runtime.session import Session

HERE = Path(__file__).parent
CONFIG = """\
# live-reload test config
[runtime]
plugin_paths = ["plugins"]
max_batch = 512

[data_sources.sim]
type = "simulator"
instruments = 5
rate = 160000            # events/s: ~100k records/s of book updates, quotes and trades
seed = 11

[processing]
ema_window = {window}    # edited by the test

{extra}
[stages.capture]
type = "capture"
streams = ["md.trades", "ind.ema"]

[delivery]
enabled = false

[telemetry]
prometheus = false
"""
MID_STAGE = '[stages.mid]\ntype = "example_midprice"\n'


def write_whole(path: Path, text: str) -> None:
    """Write a file whole and rename it over ``path``, as editors save. A plain write_text
    truncates first, and a reload that reads the file in between sees it empty or half written
    (seen as rare rejections on a loaded machine); the watcher's concern, not these tests'."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class LivePipeline:
    """``hftagg run`` in this process: a Session (pipeline, reloader watching the files,
    telemetry) with status lines on, produced every 10 ms by a status thread, as the CLI does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.toml"
        self.assembled = assemble(self.config, environ={})
        self.session = Session(self.assembled, self.config, environ={})
        self.pipeline = self.session.pipeline
        self.reloader = self.session.reloader
        self.status_lines: list[str] = []
        self._status = threading.Thread(
            target=self.session.run_until, args=(None, 0.01, self.status_lines.append)
        )

    def __enter__(self) -> LivePipeline:
        self.session.start()
        self._status.start()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if exc[0] is None:  # status lines still come at the end, after every change
                self.wait_for(lambda: len(self.status_lines) > 0, "a status line")
                seen = len(self.status_lines)
                self.wait_for(lambda: len(self.status_lines) > seen, "status lines at the end")
        finally:
            self.session.stop_requested.set()
            self._status.join(5)
            self.summary = self.session.stop()

    @staticmethod
    def wait_for(condition, what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.002)

    def write_and_wait(self, text: str, timeout: float = 5.0):
        """Write the config and wait until the reloader has handled that edit."""
        before = len(self.reloader.history)
        write_whole(self.config, text)
        return self.wait_event(before, timeout)

    def wait_event(self, before: int, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while len(self.reloader.history) == before:
            assert time.monotonic() < deadline, "the change was never handled"
            time.sleep(0.002)
        return self.reloader.history[-1]


@pytest.fixture
def live_root(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(HERE / "plugin_files" / "capture.py", plugins / "capture.py")
    shutil.copy(HERE.parent / "plugins" / "example_midprice.py", plugins / "example_midprice.py")
    (tmp_path / "config.toml").write_text(CONFIG.format(window=20, extra=""))
    return tmp_path


INLINE_CONFIG = CONFIG.replace("max_batch = 512\n", 'max_batch = 512\nthreading = "inline"\n')


@pytest.fixture(params=["threaded", "inline"])
def threading_mode(request, monkeypatch, live_root):
    """Run a test in both threading modes: ``inline`` runs the core stages and the sinks on
    the source's thread, so parking, swapping and draining take other paths there."""
    if request.param == "inline":
        monkeypatch.setattr(sys.modules[__name__], "CONFIG", INLINE_CONFIG)
        (live_root / "config.toml").write_text(INLINE_CONFIG.format(window=20, extra=""))
    return request.param


def captured(key: str) -> list:
    return sys.modules["hftagg_plugins.capture"].CAPTURED[key]


def records(key: str) -> np.ndarray:
    chunks = sorted(captured(key), key=lambda c: c[0])
    offsets = [o for o, _ in chunks]
    sizes = [len(b) for _, b in chunks]
    assert offsets == list(np.cumsum([offsets[0]] + sizes[:-1])), "a gap or overlap between batches"
    return np.concatenate([b for _, b in chunks])


def reference_ema(trades: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
    """EMA per instrument (pandas adjust=False seeding), window switching at stream offsets."""
    out = np.empty(len(trades))
    prices = trades["price"] * 1e-9
    ids = trades["instrument_id"]
    state: dict[int, float] = {}
    switch = iter(windows[1:] + [(len(trades) + 1, 0)])
    next_at, next_window = next(switch)
    alpha = 2.0 / (windows[0][1] + 1)
    for i in range(len(trades)):
        while i == next_at:
            alpha = 2.0 / (next_window + 1)
            next_at, next_window = next(switch)
        iid = int(ids[i])
        prev = state.get(iid)
        value = prices[i] if prev is None else (1 - alpha) * prev + alpha * prices[i]
        state[iid] = value
        out[i] = value
    return out


@pytest.mark.slow
def test_hundreds_of_edits_under_load_lose_nothing_and_take_effect(live_root, threading_mode):
    rng = np.random.default_rng(5)
    windows = [(0, 20)]
    accepted = rejected = structural = 0
    with LivePipeline(live_root) as live:
        time.sleep(0.3)
        window, mid = 20, False
        for i in range(240):
            if i % 9 == 4:  # an invalid edit every so often
                bad = rng.choice(["ema_window = -3", "ema_windw = 5", 'ema_window = "x"'])
                text = CONFIG.format(window=window, extra=MID_STAGE if mid else "")
                event = live.write_and_wait(text.replace(f"ema_window = {window}", str(bad)))
                assert not event.accepted
                assert "processing.ema_wind" in event.problems[0]
                assert str(live.config) in event.problems[0]
                rejected += 1
                continue
            if i % 12 == 6:  # add or remove a stage
                mid = not mid
                structural += 1
            else:
                window = int(rng.choice([w for w in range(2, 200) if w != window]))
            event = live.write_and_wait(
                CONFIG.format(window=window, extra=MID_STAGE if mid else "")
            )
            assert event.accepted, event.problems
            if "ema" in event.offsets:
                windows.append((event.offsets["ema"]["input"], window))
                assert any(c.startswith("ema: window") for c in event.changes)
            else:
                assert any(c.startswith("mid: ") for c in event.changes), event.changes
            accepted += 1
            time.sleep(rng.uniform(0.0, 0.02))
        time.sleep(0.2)
    assert live.reloader.rejected == rejected and live.reloader.applied == accepted
    assert structural >= 15 and accepted >= 180
    trades = records("default:md.trades")
    ema = records("default:ind.ema")
    assert len(trades) > 50_000  # the load was real
    assert len(ema) == len(trades)  # one EMA per trade: nothing lost, nothing twice
    np.testing.assert_array_equal(ema["seq"], trades["seq"])
    np.testing.assert_array_equal(ema["instrument_id"], trades["instrument_id"])
    for iid in np.unique(ema["instrument_id"]):
        seq = ema["seq"][ema["instrument_id"] == iid]
        np.testing.assert_array_equal(seq, np.arange(len(seq)))
    np.testing.assert_allclose(ema["value"], reference_ema(trades, windows), rtol=1e-9)
    assert live.summary["stages"]["sim"]["records"] / live.summary["elapsed_secs"] > 100_000


class _Observer:
    """A plugin implementing the reload hook, as a third party would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, list, list]] = []

    @hookimpl
    def hftagg_config_changed(self, source, accepted, changes, problems):
        self.calls.append((source, accepted, changes, problems))


def test_runtime_setting_that_needs_a_restart_is_refused_and_plugins_hear_of_each_change(
    live_root,
):
    with LivePipeline(live_root) as live:
        observer = _Observer()
        live.assembled.host.pm.register(observer, name="observer")
        text = CONFIG.format(window=20, extra="").replace("max_batch = 512", "max_batch = 1024")
        event = live.write_and_wait(text)
        applied = live.write_and_wait(CONFIG.format(window=30, extra=""))
    assert not event.accepted
    assert event.problems == [
        f"{live.config.resolve()}: runtime.max_batch = 1024: cannot change "
        f"while running (was 512); restart hftagg to apply it"
    ]
    source = str(live.config.resolve())
    assert applied.accepted
    assert observer.calls == [
        (source, False, [], event.problems),
        (source, True, ["ema: window 20 -> 30 (live)"], []),
    ]


def counter_values() -> np.ndarray:
    return records("default:ind.count")["value"]


def test_plugin_file_added_changed_broken_and_removed_while_running(live_root):
    plugins = live_root / "plugins"
    counter = plugins / "counter.py"
    v1 = (HERE / "plugin_files" / "counter_v1.py").read_text()
    with_counter = CONFIG.format(window=20, extra='[stages.count]\ntype = "counter"\n').replace(
        'streams = ["md.trades", "ind.ema"]', 'streams = ["md.trades", "ind.ema", "ind.count"]'
    )
    with LivePipeline(live_root) as live:
        # a config using a type nobody provides yet is refused
        event = live.write_and_wait(with_counter)
        assert (
            not event.accepted
            and "stages.count.type = 'counter': unknown stage type" in event.problems[0]
        )
        # add the plugin file: it loads, and re-applying the config now starts the stage
        before = len(live.reloader.history)
        write_whole(counter, v1)
        event = live.wait_event(before)
        assert event.accepted and event.source == "plugin counter", event.problems
        assert "count: added (counter)" in event.changes
        time.sleep(0.3)
        # change it: re-imported, the running stage replaced, its count carried over
        before = len(live.reloader.history)
        write_whole(counter, v1.replace("VERSION = 1", "VERSION = 2"))
        event = live.wait_event(before)
        assert event.accepted and "count: replaced (plugin code reloaded)" in event.changes
        time.sleep(0.3)
        # break it: reported, the old (v2) code keeps running
        before = len(live.reloader.history)
        write_whole(counter, v1.replace("VERSION = 1", "VERSION = ("))
        event = live.wait_event(before)
        assert not event.accepted
        assert (
            "new version failed to load, the old one keeps running: SyntaxError"
            in event.problems[0]
        )
        time.sleep(0.3)
        # remove it: unregistered; the config still uses it, so that is refused and it runs on
        before = len(live.reloader.history)
        counter.unlink()
        event = live.wait_event(before)
        assert not event.accepted and "unknown stage type" in event.problems[0]
        assert live.pipeline.graph.node("count").stage.type_name == "counter"
        time.sleep(0.3)
    values = counter_values()
    version = (values // 1e9).astype(int)
    count = values - version * 1e9
    assert set(version) == {1, 2} and np.all(np.diff(version) >= 0)
    np.testing.assert_array_equal(count, np.arange(1, len(values) + 1))  # state carried, no gap
    assert (version == 2).sum() > 1000  # v2 ran on after the broken edit and the removal


def test_consul_change_goes_through_the_same_validate_diff_apply_path(live_root):
    from hftagg.config.consul import ConsulSource

    from .consul_fake import FakeConsul

    server = FakeConsul().start()
    try:
        with LivePipeline(live_root) as live:
            source = ConsulSource(
                server.address, prefix="hftagg/", on_change=live.reloader.set_consul_layer
            )
            live.reloader.consul_layer = source.fetch_once()
            source.start()
            try:
                before = len(live.reloader.history)
                server.put("hftagg/processing/ema_window", "33")
                event = live.wait_event(before)
                assert event.accepted and event.source == "consul"
                assert event.changes == ["ema: window 20 -> 33 (live)"]
                assert live.pipeline.graph.node("ema").stage.params.window == 33
                before = len(live.reloader.history)
                server.put("hftagg/processing/ema_window", "0")  # invalid: rejected, kept
                event = live.wait_event(before)
                assert not event.accepted
                assert event.problems == [
                    "consul: processing.ema_window = 0: input should be greater than or equal to 1"
                ]
                assert live.pipeline.graph.node("ema").stage.params.window == 33
                before = len(live.reloader.history)
                server.put("hftagg/processing/ema_window", "40")
                assert live.wait_event(before).changes == ["ema: window 33 -> 40 (live)"]
                server.stop()  # Consul goes away: the pipeline runs on with what it has
                time.sleep(0.5)
                assert source.status.startswith("unreachable")
                assert live.pipeline.running
                # a file edit still applies, under the Consul layer (Consul wins over the file)
                event = live.write_and_wait(CONFIG.format(window=25, extra=MID_STAGE))
                assert event.accepted and "mid: added (example_midprice)" in event.changes
                assert live.pipeline.graph.node("ema").stage.params.window == 40
            finally:
                source.stop()
    finally:
        server.stop()
    ema = records("default:ind.ema")
    for iid in np.unique(ema["instrument_id"]):
        seq = ema["seq"][ema["instrument_id"] == iid]
        np.testing.assert_array_equal(seq, np.arange(len(seq)))


def test_a_change_that_fails_while_applying_rolls_back_to_the_old_graph(live_root):
    """The new publisher cannot start (its port is taken, which only opening finds; a bad
    address is refused earlier, by validation): the old one is restored."""
    from hftagg.client import subscribe

    from .conftest import free_port

    good = f"tcp://127.0.0.1:{free_port()}"
    text = CONFIG.format(window=20, extra="").replace(
        "[delivery]\nenabled = false", f'[delivery]\ntarget = "{good}"\npattern = "push"'
    )
    (live_root / "config.toml").write_text(text)
    with LivePipeline(live_root) as live:
        with subscribe(good, "ind.ema", pattern="push", timeout_secs=5) as sub:
            assert sub.next_frame() is not None
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                busy = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
                event = live.write_and_wait(text.replace(good, busy))
            assert not event.accepted
            assert "previous config restored" in event.problems[0], event.problems
            frames_before = sub.frames
            deadline = time.monotonic() + 5
            while sub.frames < frames_before + 5 and time.monotonic() < deadline:
                sub.next_frame(1.0)
            assert sub.frames >= frames_before + 5  # the old publisher delivers on
            assert live.pipeline.graph.node("delivery").stage.params.target == good
        event = live.write_and_wait(text.replace("ema_window = 20", "ema_window = 21"))
        assert event.accepted  # and the pipeline still takes valid changes


@pytest.mark.slow
def test_two_hundred_source_replacements_under_load_keep_data_flowing_and_seq_contiguous(
    live_root, threading_mode
):
    """Issue #9.1: a restart-only source parameter toggled under load used to end the core loop
    (it saw no live source between the old thread's retirement and the new one's start)."""
    with LivePipeline(live_root) as live:
        time.sleep(0.2)
        for i in range(200):
            seed = 12 if i % 2 == 0 else 11
            text = CONFIG.format(window=20, extra="").replace("seed = 11", f"seed = {seed}")
            event = live.write_and_wait(text)
            assert event.accepted, event.problems
            assert event.changes == ["sim: replaced (restart-only parameter(s) seed changed)"], (
                event.changes
            )
            # data flows after each replacement: the sink sees trades the new source produced
            sink = live.pipeline.stats["capture"]
            seen = sink.records_in
            deadline = time.monotonic() + 5
            while sink.records_in <= seen:
                assert time.monotonic() < deadline, f"no data after replacement {i + 1}"
                assert live.pipeline.failure is None, live.pipeline.failure
                time.sleep(0.001)
    assert live.summary["left_over"] == 0
    trades = records("default:md.trades")
    ema = records("default:ind.ema")
    assert len(trades) > 50_000
    np.testing.assert_array_equal(ema["seq"], trades["seq"])
    for iid in np.unique(trades["instrument_id"]):
        seq = trades["seq"][trades["instrument_id"] == iid]
        np.testing.assert_array_equal(seq, np.arange(len(seq)))


class _Lines:
    """Lines of a subprocess stream, collected by a thread, waited for by content."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait(self, predicate, what: str, start: int = 0, timeout: float = 30.0) -> str:
        """The first line from index ``start`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = start
        while time.monotonic() < deadline:
            while seen < len(self.lines):
                if predicate(self.lines[seen]):
                    return self.lines[seen]
                seen += 1
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}; got:\n" + "\n".join(self.lines))


@pytest.mark.slow
def test_hftagg_run_with_status_lines_takes_stages_added_and_removed_and_lists_them(live_root):
    """Issue #9.2: adding a stage to a running ``hftagg run`` with status lines on used to exit 1
    with a KeyError in the status reporter and no summary."""
    import json
    import signal
    import subprocess

    from .conftest import hftagg_cmd

    config = live_root / "config.toml"
    with_mid = CONFIG.format(window=20, extra=MID_STAGE)
    with_both = CONFIG.format(window=20, extra=MID_STAGE + '[stages.sma]\ntype = "sma"\n')
    proc = subprocess.Popen(
        hftagg_cmd("run", "--config", str(config), "--status-interval", "0.05",
                   "--summary-json", str(live_root / "summary.json")),
        cwd=live_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, err = _Lines(proc.stdout), _Lines(proc.stderr)
    try:
        out.wait(lambda x: x.startswith("[") and "sim " in x, "a first status line")
        steps = [
            (with_mid, "mid: added (example_midprice)", "mid "),
            (with_both, "sma: added (sma)", "sma "),
            (CONFIG.format(window=20, extra='[stages.sma]\ntype = "sma"\n'), "mid: removed", None),
            (CONFIG.format(window=20, extra=""), "sma: removed", None),
        ]
        for text, change, shown in steps:
            write_whole(config, text)
            err.wait(lambda x, c=change: "applied:" in x and c in x, change)
            # the run goes on: a status line that started after the change was applied
            at = len(out.lines) + 1
            out.wait(lambda x: x.startswith("["), "a status line after the change", start=at)
            if shown:
                out.wait(
                    lambda x, s=shown: x.startswith("[") and f"| {s}" in x, f"{shown}", start=at
                )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "\n".join(err.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [x for x in err.lines if "Traceback" in x or "failed" in x], err.lines
    summary = json.loads((live_root / "summary.json").read_text())
    stages = summary["stages"]
    assert stages["mid"]["state"] == stages["sma"]["state"] == "removed"
    assert 0 < stages["mid"]["added_secs"] < stages["mid"]["removed_secs"]
    assert stages["mid"]["records"] > 0 and stages["sma"]["records"] > 0
    assert stages["ema"]["state"] == "running" and "added_secs" not in stages["ema"]
    text = "\n".join(out.lines)
    assert re.search(r"^hftagg: ring memory: [\d.]+ MiB in \d+ rings$", text, re.M)
    assert "hftagg summary" in text
    assert re.search(r"mid\s+example_midprice .*\(added at [\d.]+s\)\s+\(removed at", text)


def test_a_change_refused_because_a_stage_is_stuck_in_a_batch_leaves_the_pipeline_running(
    live_root, monkeypatch
):
    """The core thread cannot park in time: after a few attempts the change is refused, and once
    the stage finishes its batch the pipeline runs on (it used to park for good: nobody withdrew
    the request). A stage busy for less than those attempts only delays the change."""
    import hftagg.runtime.apply as apply

    monkeypatch.setattr(apply, "PARK_TIMEOUT_SECS", 0.3)
    shutil.copy(HERE / "plugin_files" / "gate.py", live_root / "plugins" / "gate.py")
    gate_stage = '[stages.gate]\ntype = "gate"\n'
    text = CONFIG.format(window=20, extra=gate_stage)
    (live_root / "config.toml").write_text(text)
    with LivePipeline(live_root) as live:
        gate = sys.modules["hftagg_plugins.gate"]
        live.wait_for(lambda: live.pipeline.summary()["stages"]["gate"]["records_out"] > 0, "flow")
        gate.OPEN.clear()
        live.wait_for(gate.HOLDING.is_set, "the gate holding a batch")
        event = live.write_and_wait(text.replace("ema_window = 20", "ema_window = 21"))
        assert not event.accepted
        assert "did not reach a batch boundary" in event.problems[0]
        assert "save the file again" in event.problems[0]
        gate.OPEN.set()  # the batch ends: the core thread must run on, not park
        out = live.pipeline.summary()["stages"]["ema"]["records_out"]
        live.wait_for(
            lambda: live.pipeline.summary()["stages"]["ema"]["records_out"] > out + 1000,
            "data flowing after the refused change",
        )
        event = live.write_and_wait(text.replace("ema_window = 20", "ema_window = 22"))
        assert event.accepted, event.problems
        # held for less than the reloader's attempts together: applied on a later attempt
        gate.HOLDING.clear()
        gate.OPEN.clear()
        live.wait_for(gate.HOLDING.is_set, "the gate holding a batch again")
        threading.Timer(0.45, gate.OPEN.set).start()
        event = live.write_and_wait(text.replace("ema_window = 20", "ema_window = 23"))
        assert event.accepted, event.problems
