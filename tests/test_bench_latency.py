"""``hftagg bench latency``: the command runs the shipped config and prints the named results.

Speed is not asserted (a benchmark, not a test): only that each named figure is there, is a
positive number, and that the subscriber process received what the publisher sent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hftagg.bench.latency import bench_config, runtime_variants

from .conftest import hftagg_cmd

ROOT = Path(__file__).resolve().parent.parent


def test_bench_config_controls_rate_address_and_servers_but_keeps_the_pipeline():
    import tomllib

    text = bench_config(ROOT / "config.toml", rate=12345, address="tcp://127.0.0.1:1")
    cfg = tomllib.loads(text)
    shipped = tomllib.loads((ROOT / "config.toml").read_text())
    assert cfg["data_sources"]["sim"]["rate"] == 12345
    assert cfg["delivery"]["target"] == "tcp://127.0.0.1:1"
    assert cfg["telemetry"]["prometheus"] is False
    assert cfg["runtime"]["plugin_paths"] == [str(ROOT / "plugins")]
    assert cfg["stages"] == shipped["stages"]  # the same graph
    assert cfg["delivery"]["topics"] == shipped["delivery"]["topics"]
    assert runtime_variants()[0] == ("default", {})


@pytest.mark.slow
def test_bench_latency_quick_prints_the_named_results():
    proc = subprocess.run(
        hftagg_cmd("bench", "latency", "--quick", "--json", "-c", str(ROOT / "config.toml")),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    results = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert {"latency-in-process p99", "latency-subscriber p99", "pipeline-default"} <= set(results)
    for name in ("latency-in-process p99", "latency-subscriber p99"):
        assert results[name]["unit"] == "ns" and results[name]["hftagg"] > 0
    assert results["pipeline-default"]["unit"] == "rec/s"
    assert results["pipeline-default"]["hftagg"] > 0 and results["pipeline-default"]["baseline"] > 0
    detail = results["latency-in-process p99"]["extra"]["100k/s p50/p99/p99.9/max"]
    assert "subscriber gaps 0" in detail  # the subscriber kept up at 100 k/s
    assert "measuring" in proc.stderr and "Traceback" not in proc.stderr
