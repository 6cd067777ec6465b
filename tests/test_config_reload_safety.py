"""A running pipeline never applies a broken or half-written config.

Editors (and ``>`` redirection) truncate ``config.toml`` and write it a moment later; the
reloader must wait for the file to settle and refuse an empty file or a change that removes every
source or stage. Files that cannot be read at all are rejections like any other: logged with the
file, what was found and the fix, counted, and announced through ``hftagg_config_changed``.

The pipeline runs in this process with its real threads, rings and file watcher; every edit is a
real write to a real file. A capture sink keeps what reaches the end, so the checks are exact.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hftagg import hookimpl
from hftagg.config.edit import write_atomic
from hftagg.runtime.assemble import assemble, plugin_dirs
from hftagg.runtime.reload import Reloader
from hftagg.telemetry.prometheus import render_prometheus

from .conftest import free_port, hftagg_cmd

HERE = Path(__file__).parent
CONFIG = """\
[runtime]
plugin_paths = ["plugins"]
max_batch = 512

[data_sources.sim]
type = "simulator"
instruments = 4
rate = 40000
seed = 3

[processing]
ema_window = {window}

[stages.mid]
type = "example_midprice"

[stages.capture]
type = "capture"
key = "safety"
streams = ["md.trades", "ind.ema"]

[delivery]
enabled = false
"""


class _Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[bool, list, list]] = []

    @hookimpl
    def hftagg_config_changed(self, accepted, changes, problems):
        self.calls.append((accepted, changes, problems))


class Live:
    """A pipeline, its reloader watching ``config.toml``, and a plugin observing changes."""

    def __init__(self, root: Path, watch: bool = True) -> None:
        self.watch = watch
        self.config = root / "config.toml"
        assembled = assemble(self.config, environ={})
        self.pipeline = assembled.pipeline()
        self.reloader = Reloader(
            self.pipeline,
            assembled.host,
            self.config,
            plugin_dirs=plugin_dirs(assembled.spec.raw, self.config),
            environ={},
        )
        self.observer = _Observer()
        assembled.host.pm.register(self.observer, name="observer")

    def __enter__(self) -> Live:
        self.pipeline.start()
        if self.watch:
            self.reloader.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.watch:
            self.reloader.stop()
        self.summary = self.pipeline.stop()

    def wait_for(self, predicate, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while not any(predicate(e) for e in self.reloader.history):
            assert time.monotonic() < deadline, [vars(e) for e in self.reloader.history]
            time.sleep(0.005)


@pytest.fixture
def root(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(HERE / "plugin_files" / "capture.py", plugins / "capture.py")
    shutil.copy(HERE.parent / "plugins" / "example_midprice.py", plugins / "example_midprice.py")
    (tmp_path / "config.toml").write_text(CONFIG.format(window=20))
    return tmp_path


def contiguous_per_instrument(key: str) -> np.ndarray:
    chunks = sorted(sys.modules["hftagg_plugins.capture"].CAPTURED[key], key=lambda c: c[0])
    offsets = [o for o, _ in chunks]
    sizes = [len(b) for _, b in chunks]
    assert offsets == list(np.cumsum([offsets[0]] + sizes[:-1])), "a gap or overlap"
    out = np.concatenate([b for _, b in chunks])
    for iid in np.unique(out["instrument_id"]):
        seq = out["seq"][out["instrument_id"] == iid]
        np.testing.assert_array_equal(seq, np.arange(len(seq)))
    return out


def truncate_then_write(path: Path, text: str, gap_secs: float) -> None:
    """What an editor saving in place does: truncate, then write a moment later."""
    with open(path, "w") as f:
        f.flush()
        time.sleep(gap_secs)
        f.write(text)


@pytest.mark.slow
def test_truncate_then_write_at_any_gap_never_applies_the_empty_file(root):
    windows = {0.0: 31, 0.005: 32, 0.02: 33, 0.1: 34}
    with Live(root) as live:
        time.sleep(0.2)
        for gap, window in windows.items():
            truncate_then_write(live.config, CONFIG.format(window=window), gap)
            live.wait_for(lambda e, w=window: e.accepted and f"-> {w} (live)" in str(e.changes))
        time.sleep(0.1)
    applied = [e for e in live.reloader.history if e.accepted and e.changes]
    assert [e.changes for e in applied] == [
        [f"ema: window {old} -> {new} (live)"]
        for old, new in zip([20, 31, 32, 33], [31, 32, 33, 34], strict=True)
    ]  # only the window ever changed: no stage removed, replaced or re-added
    for event in live.reloader.history:
        if not event.accepted:  # a truncation seen before the write: refused, and it says why
            assert len(event.problems) == 1 and "has no settings" in event.problems[0]
            assert str(live.config.resolve()) in event.problems[0]
    rejected = [c for c in live.observer.calls if not c[0]]
    assert len(rejected) == live.reloader.rejected
    trades = contiguous_per_instrument("safety:md.trades")
    ema = contiguous_per_instrument("safety:ind.ema")
    assert len(trades) > 1000 and len(ema) == len(trades)  # nothing lost, nothing twice


def test_an_edit_made_while_the_pipeline_starts_is_not_missed(root):
    live = Live(root)  # the config is read here ...
    write_atomic(live.config, CONFIG.format(window=27).encode())  # ... then edited at once
    with live:  # before the watcher is watching
        live.wait_for(lambda e: e.accepted and e.changes == ["ema: window 20 -> 27 (live)"])
    assert live.reloader.rejected == 0


def test_a_change_that_removes_every_source_or_stage_is_refused_unless_allowed(root):
    full = CONFIG.format(window=20)
    no_sources = full.split("[data_sources.sim]")[0]  # a file cut part-way through a save
    no_stages = full.split("[stages.mid]")[0] + "[delivery]\nenabled = false\n"
    allowed = no_stages.replace("[runtime]", "[runtime]\nallow_remove_all = true")
    with Live(root, watch=False) as live:
        events = []
        for text in (no_sources, no_stages, allowed, "# nothing yet\n"):
            live.config.write_text(text)
            events.append(live.reloader.reload())
    refused, refused_stages, allowed, empty = events
    assert not refused.accepted
    assert "data_sources = ['sim']: this change removes every data source" in refused.problems[0]
    assert "runtime.allow_remove_all = true" in refused.problems[0]
    assert not refused_stages.accepted and len(refused_stages.problems) == 1
    assert "removes every [stages.*] stage that runs (mid, capture)" in refused_stages.problems[0]
    assert allowed.accepted
    assert sorted(allowed.changes) == ["capture: removed", "mid: removed"]
    assert not empty.accepted and "has no settings" in empty.problems[0]
    assert live.reloader.rejected == 3


UNREADABLE = {
    "not UTF-8": (b"[processing]\nema_window = 30 # \xff\xfe\n", "is not UTF-8 text (byte 0xff"),
    "binary": (b"\x7fELF\x02\x01\x01\x00\x00\x00", "is a binary file (a NUL byte at offset 7)"),
    "deep arrays": (
        b"[processing]\nx = " + b"[" * 3000 + b"]" * 3000 + b"\n",
        "nested too deeply to read",
    ),
    "deep tables": (
        b"[processing]\nx = " + b"[" * 40 + b"1" + b"]" * 40 + b"\n",
        "nested 42 levels deep",
    ),
    "duplicate stage id": (
        CONFIG.format(window=20).encode() + b'\n[stages.ema]\ntype = "ema"\n',
        "stage id 'ema' is used by processing, stages.ema; ids must be unique: rename "
        "[stages.ema] ([processing] runs the 'ema' stage; set processing.enabled = "
        "false to run only yours)",
    ),
}


def test_unreadable_configs_are_counted_rejections_with_the_fix(root):
    with Live(root, watch=False) as live:
        events = {}
        for name, (data, _) in UNREADABLE.items():
            live.config.write_bytes(data)
            events[name] = live.reloader.reload()
        live.config.unlink()
        events["removed"] = live.reloader.reload()
        live.config.mkdir()
        events["a directory"] = live.reloader.reload()
        metrics = render_prometheus(live.pipeline, live.reloader)
        live.config.rmdir()
        live.config.write_text(CONFIG.format(window=21))
        after = live.reloader.reload()
    expected = {name: text for name, (_, text) in UNREADABLE.items()}
    expected["a directory"] = "is a directory, not a config file; pass the TOML file"
    expected["removed"] = "was removed or renamed: the pipeline keeps its current config"
    for name, event in events.items():
        assert not event.accepted, name
        assert str(live.config.resolve()) in event.problems[0], name
        assert expected[name] in event.problems[0], (name, event.problems)
    assert live.reloader.rejected == len(events)
    assert f'hftagg_reloads_total{{result="rejected"}} {len(events)}' in metrics
    assert [c[0] for c in live.observer.calls] == [False] * len(events) + [True]
    assert after.accepted and after.changes == ["ema: window 20 -> 21 (live)"]
    assert live.summary["stages"]["sim"]["records"] > 0


class Run:
    """``hftagg run`` in a subprocess, its output lines collected as they come."""

    def __init__(self, root: Path, config: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            hftagg_cmd("run", "--config", str(config), "--status-interval", "0.5"),
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, f"never saw {text!r}:\n" + "\n".join(self.lines)
            time.sleep(0.01)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        self.reader.join(10)
        return code


@pytest.mark.slow
def test_hftagg_run_under_load_survives_truncate_then_write_saves(tmp_path):
    plugins = tmp_path / "plugins"
    shutil.copytree(HERE.parent / "plugins", plugins)
    shutil.copy(HERE / "plugin_files" / "seqcheck.py", plugins / "seqcheck.py")
    shipped = (HERE.parent / "config.toml").read_text()
    base = (
        shipped.replace("tcp://127.0.0.1:5555", f"tcp://127.0.0.1:{free_port()}")
        .replace("prometheus = true", "prometheus = false")
        .replace("status_interval_secs = 1.0", "status_interval_secs = 0.5")
        + '\n[stages.check]\ntype = "seqcheck"\nstreams = ["md.trades", "ind.ema"]\n'
        + f'out = "{tmp_path / "seq.json"}"\n'
    )
    config = tmp_path / "config.toml"
    config.write_text(base)
    run = Run(tmp_path, config)
    run.wait_for("hftagg: running")
    run.wait_for(" rec/s ")  # a status line: the pipeline is moving, the watcher is on
    previous = 20
    for gap, window in {0.0: 41, 0.005: 42, 0.02: 43, 0.1: 44}.items():
        truncate_then_write(config, base.replace("ema_window = 20", f"ema_window = {window}"), gap)
        run.wait_for(f"applied: ema: window {previous} -> {window} (live)")
        previous = window
    time.sleep(1.0)
    code = run.stop()
    log = "\n".join(run.lines)
    assert code == 0, log
    assert not any(w in log for w in (": removed", ": added", ": replaced")), log
    refused = [line for line in run.lines if "change rejected" in line]
    notes = [line for line in run.lines if "has no settings" in line]
    assert len(notes) == len(refused)  # every refusal was an empty save, and said so
    found = json.loads((tmp_path / "seq.json").read_text())
    assert found["md.trades"]["records"] > 20_000, found  # under load, through SBE and back
    assert found["ind.ema"]["records"] == found["md.trades"]["records"]
    for stream in found.values():
        assert stream["gaps"] == 0 and stream["repeats"] == 0, found
