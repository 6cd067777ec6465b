"""``hftagg top``: a live terminal view of a running pipeline, read from its metrics endpoint.

Per stage: records/s, mean batch size, p50/p99 processing time per batch, backlog, drops -- all
over the last refresh interval; per sink: end-to-end latency p50/p99/p99.9 from ts_recv; per
database sink (PostgreSQL, MongoDB): connected or retrying, pending, spill and retries. Works
over SSH: it only needs the pipeline's loopback metrics endpoint and a terminal.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from hftagg.telemetry.histogram import quantile_from_counts

__all__ = ["fetch", "render", "run_top"]


def fetch(address: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(f"http://{address}/metrics.json", timeout=timeout) as response:
        return json.loads(response.read())


def _delta_hist(new: dict | None, old: dict | None) -> tuple[np.ndarray, np.ndarray] | None:
    if not new:
        return None
    counts = np.array(new["counts"])
    if old and len(old["counts"]) == len(counts):
        delta = counts - np.array(old["counts"])
        if delta.sum() > 0:
            counts = delta
    return np.array(new["bounds"]), counts


def _fmt_ns(ns: float) -> str:
    if ns != ns:  # nan
        return "-"
    for div, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "us")):
        if ns >= div:
            return f"{ns / div:.1f}{unit}"
    return f"{ns:.0f}ns"


def _fmt_rate(x: float) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}"


def _q(hist, q: float) -> float:
    return float("nan") if hist is None else quantile_from_counts(hist[0], hist[1], q)


def render(new: dict, old: dict | None, address: str) -> Group:
    dt = max(new["time"] - old["time"], 1e-9) if old else max(new["elapsed_secs"], 1e-9)
    before = {s["stage"]: s for s in (old or {"stages": []})["stages"]}
    stages = Table(title=f"hftagg {address}  up {new['elapsed_secs']:.0f}s", expand=True)
    for col in ("stage", "type", "rec/s", "batch", "p50 proc", "p99 proc", "backlog", "drops"):
        stages.add_column(col, justify="left" if col in ("stage", "type") else "right")
    latency = Table(title="end-to-end latency from ts_recv (last interval)", expand=True)
    for col in ("sink", "p50", "p99", "p99.9", "records"):
        latency.add_column(col, justify="left" if col == "sink" else "right")
    for st in new["stages"]:
        prev = before.get(st["stage"], {})
        key_r, key_b = (
            ("records_out", "batches_out")
            if st["role"] == "source"
            else ("records_in", "batches_in")
        )
        d_rec = st[key_r] - prev.get(key_r, 0)
        d_bat = st[key_b] - prev.get(key_b, 0)
        proc = _delta_hist(st.get("processing_ns"), prev.get("processing_ns"))
        stages.add_row(
            st["stage"],
            st["type"],
            _fmt_rate(d_rec / dt),
            f"{d_rec / d_bat:.1f}" if d_bat else "-",
            _fmt_ns(_q(proc, 0.5)),
            _fmt_ns(_q(proc, 0.99)),
            str(sum(r["backlog"] for r in st["readers"])),
            str(sum(r["dropped"] for r in st["readers"])),
        )
        lat = _delta_hist(st.get("latency_recv_ns"), prev.get("latency_recv_ns"))
        if lat is not None:
            latency.add_row(
                st["stage"],
                _fmt_ns(_q(lat, 0.5)),
                _fmt_ns(_q(lat, 0.99)),
                _fmt_ns(_q(lat, 0.999)),
                str(int(lat[1].sum())),
            )
    parts: list[Any] = [stages, latency]
    external = _external_table(new["stages"])
    if external is not None:
        parts.append(external)
    if new.get("reloads"):
        parts.append(
            f"reloads: {new['reloads']['applied']} applied, {new['reloads']['rejected']} rejected"
        )
    return Group(*parts)


def _external_table(stages: list[dict]) -> Table | None:
    """Sinks into databases (PostgreSQL, MongoDB): connection state, pending, spill, retries."""
    rows = [st for st in stages if "connected" in st.get("counters", {})]
    if not rows:
        return None
    table = Table(title="database sinks", expand=True)
    for col in ("sink", "state", "pending", "spilled", "spill on disk", "retries", "written"):
        table.add_column(col, justify="left" if col in ("sink", "state") else "right")
    for st in rows:
        c = st["counters"]
        table.add_row(
            st["stage"],
            "connected" if c["connected"] else "[bold red]retrying[/]",
            _fmt_rate(c.get("pending", 0)),
            _fmt_rate(c.get("spilled", 0)),
            f"{c.get('spill_bytes', 0) / 2**20:.1f} MiB",
            str(c.get("retries", 0)),
            _fmt_rate(c.get("written", 0)),
        )
    return table


def run_top(
    address: str, interval: float = 1.0, iterations: int = 0, console: Console | None = None
) -> int:
    """Refresh every ``interval`` seconds; ``iterations`` > 0 stops after that many."""
    console = console or Console()
    try:
        old = fetch(address)
    except OSError as exc:
        console.print(
            f"hftagg top: cannot read http://{address}/metrics.json ({exc}); is the "
            f"pipeline running with telemetry.prometheus = true at that address?"
        )
        return 1
    count = 0
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    if live:
        live.start()
    try:
        while not iterations or count < iterations:
            time.sleep(interval)
            try:
                new = fetch(address)
            except OSError as exc:
                console.print(f"hftagg top: pipeline at {address} went away ({exc})")
                return 1
            view = render(new, old, address)
            if live:
                live.update(view, refresh=True)
            else:
                console.print(view)
            old = new
            count += 1
    except KeyboardInterrupt:
        pass
    finally:
        if live:
            live.stop()
    return 0
