"""Delivery keeps its promises: `hftagg run` in a subprocess, real pynng pullers and subscribers.

push: a stop with a connected puller loses nothing (counted record by record, end to end), also
when the puller has stalled so nng's queue is full at the stop; without a puller the exit is clean
and every undelivered record is counted. A live replacement of the publisher loses nothing.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import PYTHON, free_port, hftagg_cmd

HERE = Path(__file__).parent

CONFIG = """
[runtime]
status_interval_secs = 0.5
drain_timeout_secs = {drain}
plugin_paths = []

[data_sources.sim]
type = "simulator"
instruments = 4
rate = {rate}

[processing]
ema_window = 10

[delivery]
target = "{address}"
pattern = "{pattern}"
topics = ["ind.ema"]
buffer_frames = {buffer}
linger_secs = {linger}

[telemetry]
prometheus_address = "127.0.0.1:{metrics_port}"
"""


def write_config(tmp_path: Path, address: str, pattern: str, **values) -> Path:
    settings = {"rate": 100_000, "drain": 30, "buffer": 1024, "linger": 2.0, **values}
    config = tmp_path / "config.toml"
    config.write_text(
        CONFIG.format(address=address, pattern=pattern, metrics_port=free_port(), **settings)
    )
    return config


def start_pipeline(tmp_path: Path, config: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        hftagg_cmd("run", "--config", str(config), "--summary-json", str(tmp_path / "s.json"))
        + list(extra),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("hftagg: running"), line + proc.stderr.read()
    return proc


def start_puller(
    address: str,
    pattern: str = "push",
    delay_secs: float = 0.0,
    idle: float = 4,
    buffer: int = 8192,
    stall: float = 0.0,
):
    proc = subprocess.Popen(
        [PYTHON, str(HERE / "subscriber_process.py"), address, "ind.ema", pattern, str(idle)]
        + [str(delay_secs), str(buffer), str(stall)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert json.loads(proc.stdout.readline()) == {"ready": True}
    return proc


def wait_for_status(proc: subprocess.Popen, stage_text: str, timeout: float = 60) -> str:
    """Read status lines until one shows ``stage_text`` (e.g. the sink has sent records)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if re.search(stage_text, line):
            return line
    raise AssertionError(f"no status line matched {stage_text!r}")


def finish(proc: subprocess.Popen, sig=signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def report_of(puller: subprocess.Popen) -> dict:
    out, err = puller.communicate(timeout=120)
    assert puller.returncode == 0, err
    return json.loads(out.splitlines()[-1])


@pytest.mark.slow
def test_push_sigterm_under_load_with_a_stalled_puller_loses_nothing(tmp_path, address):
    # Arrange: a puller that stops reading for 6 s after its first frame, so at the SIGTERM
    # nng's queue and the TCP buffers are full (closing then discarded 200 k records)
    config = write_config(tmp_path, address, "push", rate=2_000_000)
    pipeline = start_pipeline(tmp_path, config)
    puller = start_puller(address, delay_secs=0.0, idle=4, buffer=16, stall=6.0)
    wait_for_status(pipeline, r"delivery [1-9][\d.]*[kM]? rec/s")
    time.sleep(2.0)
    # Act
    code, out, err = finish(pipeline)
    report = report_of(puller)
    # Assert: every record the publisher accepted reached the puller, in order
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    delivery = summary["stages"]["delivery"]
    assert delivery["frames_queued"] == 0 and delivery["frames_lost"] == 0
    assert delivery["drops"] == 0 and summary["left_over"] == 0
    assert report["records"] == delivery["records"] == summary["stages"]["ema"]["records"]
    assert report["frames"] == delivery["frames_sent"]
    assert report["gaps"] == report["duplicates"] == report["seq_breaks"] == 0
    assert "not delivered" not in err


@pytest.mark.slow
def test_push_sigterm_without_a_puller_exits_0_and_counts_every_undelivered_record(
    tmp_path, address
):
    # Arrange: nobody pulls; the send queue fills and the sink blocks in send
    config = write_config(tmp_path, address, "push", rate=50_000, buffer=64, drain=1, linger=0.5)
    pipeline = start_pipeline(tmp_path, config)
    wait_for_status(pipeline, r"ema [1-9][\d.]*k? rec/s")  # (the 64-frame queue fills at once)
    time.sleep(1.0)
    # Act
    code, out, err = finish(pipeline)
    # Assert: a clean exit with a summary that accounts for every record
    assert code == 0, err
    assert "hftagg summary: ran" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    delivery = summary["stages"]["delivery"]
    assert delivery["peers"] == 0 and delivery["frames_queued"] == 0
    assert delivery["drops"] == delivery["records"] > 0  # accepted, none delivered
    assert delivery["frames_lost"] >= 64
    ema = summary["stages"]["ema"]["records"]  # (a batch cut by the hard stop is discarded)
    assert ema == delivery["records"] + delivery["backlog"] + summary["discarded"]
    assert summary["left_over"] >= delivery["backlog"]
    assert "were not delivered to a puller at" in err
    assert f"drops {delivery['drops']}" in out


@pytest.mark.slow
def test_live_replacement_of_the_push_publisher_loses_nothing(tmp_path, address):
    # Arrange: a connected puller that stalls 3 s after its first frame, so the publisher's
    # queue is full when a restart parameter changes and the publisher is rebuilt
    config = write_config(tmp_path, address, "push", rate=1_000_000, buffer=256)
    text = config.read_text().replace("buffer_frames", "max_frame_bytes = 16384\nbuffer_frames")
    config.write_text(text)  # 256 frames of 400 records queued: drained within apply's 5 s
    pipeline = start_pipeline(tmp_path, config)
    puller = start_puller(address, idle=6, buffer=16, stall=2.0)
    wait_for_status(pipeline, r"delivery [1-9][\d.]*[kM]? rec/s")
    # Act
    config.write_text(config.read_text().replace("buffer_frames = 256", "buffer_frames = 128"))
    wait_for_status(pipeline, r"delivery [1-9][\d.]*[kM]? rec/s")  # the new one delivers
    time.sleep(1.0)
    code, out, err = finish(pipeline)
    report = report_of(puller)
    # Assert
    assert code == 0, err
    assert re.search(r"applied: .*delivery", err), err
    summary = json.loads((tmp_path / "s.json").read_text())
    delivery = summary["stages"]["delivery"]
    assert delivery["drops"] == 0 and delivery["frames_lost"] == 0
    assert report["records"] == summary["stages"]["ema"]["records"]
    assert report["gaps"] == report["duplicates"] == report["seq_breaks"] == 0
    assert report["restarts"] == 0  # the stream continues: same session, contiguous offsets
