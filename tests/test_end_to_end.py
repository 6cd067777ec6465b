"""End to end: `hftagg run` in a subprocess, subscribers in other processes, signals."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import PYTHON, hftagg_cmd

HERE = Path(__file__).parent

pytestmark = pytest.mark.slow  # every test here runs hftagg in a subprocess

CONFIG = """
[runtime]
status_interval_secs = 0.5
plugin_paths = []

[data_sources.sim]
type = "simulator"
instruments = 6
rate = {rate}

[processing]
ema_window = 10

[delivery]
target = "{address}"
pattern = "{pattern}"
topics = ["ind.ema"]
"""


def start_pipeline(
    tmp_path: Path, address: str, pattern: str, rate: int = 50_000, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(address=address, pattern=pattern, rate=rate))
    proc = subprocess.Popen(
        hftagg_cmd(
            "run", "--config", str(config), "--summary-json", str(tmp_path / "s.json"), *extra
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("hftagg: running"), line + proc.stderr.read()
    return proc


def start_subscriber(address: str, pattern: str, idle_secs: float = 3.0) -> subprocess.Popen:
    proc = subprocess.Popen(
        [PYTHON, str(HERE / "subscriber_process.py"), address, "ind.ema", pattern, str(idle_secs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert json.loads(proc.stdout.readline()) == {"ready": True}
    return proc


def wait_until_delivering(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Read status lines until the publisher has sent something (kernels compiled, running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if re.search(r"delivery [1-9][\d.]*k? rec/s", line):
            return
    raise AssertionError("the pipeline delivered nothing")


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_pub_subscriber_in_another_process_gets_contiguous_seq_and_sigterm_exits_0(
    tmp_path, address
):
    pipeline = start_pipeline(tmp_path, address, "pub")
    subscriber = start_subscriber(address, "pub")
    wait_until_delivering(pipeline)
    time.sleep(2.0)
    code, out, err = stop(pipeline)
    assert code == 0, err
    assert "hftagg summary: ran" in out
    report = json.loads(subscriber.communicate(timeout=60)[0].splitlines()[-1])
    assert report["records"] > 1_000
    assert report["seq_breaks"] == 0 and report["gaps"] == 0 and report["bad_frames"] == 0
    assert len(report["first_seq"]) == 6
    assert report["dtype_names"] == ["ts_event", "ts_recv", "seq", "instrument_id", "value"]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stages"]["ema"]["records"] >= report["records"]
    assert summary["stages"]["delivery"]["backlog"] == 0  # drained before exit


def test_push_pattern_is_lossless_from_first_to_last_record(tmp_path, address):
    pipeline = start_pipeline(tmp_path, address, "push")
    subscriber = start_subscriber(address, "push")
    wait_until_delivering(pipeline)
    time.sleep(2.0)
    code, out, err = stop(pipeline, signal.SIGINT)  # Ctrl-C drains the same way
    assert code == 0, err
    report = json.loads(subscriber.communicate(timeout=60)[0].splitlines()[-1])
    summary = json.loads((tmp_path / "s.json").read_text())
    assert report["seq_breaks"] == 0 and report["gaps"] == 0
    assert set(report["first_seq"].values()) == {0}  # nothing lost at the start either
    assert report["records"] == summary["stages"]["ema"]["records"]  # nor at the end
    assert report["records"] == summary["stages"]["delivery"]["records"]


def test_duration_runs_for_that_long_and_prints_status_lines(tmp_path, address):
    pipeline = start_pipeline(tmp_path, address, "pub", extra=("--duration", "2"))
    out, err = pipeline.communicate(timeout=60)
    assert pipeline.returncode == 0, err
    status = [line for line in out.splitlines() if line.startswith("[")]
    assert 2 <= len(status) <= 5
    assert all("sim " in x and "rec/s" in x and "backlog" in x and "drops" in x for x in status)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert 1.9 < summary["elapsed_secs"] < 10
    assert summary["stages"]["sim"]["records"] > 0


def test_tail_prints_decoded_records_from_a_running_pipeline(tmp_path, address):
    pipeline = start_pipeline(tmp_path, address, "pub")
    try:
        tail = subprocess.run(
            hftagg_cmd("tail", "ind.ema", "--address", address, "--count", "5", "--timeout", "20"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        stop(pipeline)
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.strip().splitlines()
    assert len(lines) == 5
    assert all(line.startswith("ind.ema ts_event=") and " value=" in line for line in lines)
    value = float(lines[0].split("value=")[1])
    assert 50 < value < 150  # an EMA of prices around the simulator's 100.0 start


def test_tail_with_nothing_there_says_so(address):
    tail = subprocess.run(
        hftagg_cmd("tail", "ind.ema", "--address", address, "--timeout", "1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tail.returncode == 1
    assert f"nothing on 'ind.ema' at {address} within 1.0s" in tail.stderr


def test_invalid_config_does_not_start_and_exits_1(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[processing]\nema_window = 0\n")
    result = subprocess.run(
        hftagg_cmd("run", "--config", str(config)), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "processing.ema_window = 0: input should be greater than or equal to 1" in result.stderr


@pytest.mark.parametrize("target", ["tcp://0.0.0.0:5999", "tcp://10.1.2.3:5999"])
def test_publisher_refuses_non_loopback_unless_allowed(tmp_path, target):
    config = tmp_path / "config.toml"
    config.write_text(f'[delivery]\ntarget = "{target}"\n[runtime]\nplugin_paths = []\n')
    result = subprocess.run(
        hftagg_cmd("run", "--config", str(config), "--duration", "1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    # refused by validation, before anything opens
    assert f"delivery.target = '{target}': listens beyond loopback" in result.stderr
    assert "not started (1 problem(s))" in result.stderr
