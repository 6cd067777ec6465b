"""The benchmark result type, timing helpers and output formatting."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

__all__ = [
    "TIME_UNITS",
    "environment",
    "Result",
    "best_rate",
    "format_quantity",
    "format_result",
    "to_json",
]


@dataclass
class Result:
    """One comparison: hftagg's rate and a baseline's, in the same unit, measured in one run."""

    name: str
    hftagg: float
    baseline: float
    baseline_name: str
    unit: str
    target: float | None = None
    extra: dict = field(default_factory=dict)
    lower_is_better: bool = False  # latencies: ratio = baseline / hftagg

    @property
    def ratio(self) -> float:
        if self.lower_is_better:
            return self.baseline / self.hftagg if self.hftagg else float("inf")
        return self.hftagg / self.baseline if self.baseline else float("inf")

    @property
    def target_met(self) -> bool | None:
        if self.target is None:
            return None
        return self.hftagg <= self.target if self.lower_is_better else self.hftagg >= self.target

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ratio"] = self.ratio
        out["target_met"] = self.target_met
        out["machine"] = f"{platform.machine()} {platform.python_version()}"
        out["environment"] = environment()
        return out


def environment() -> dict:
    """What a figure depends on besides the code: versions, CPU, cores, and the date -- printed
    at the start of every run and stored with each JSON result, so a table can say what it was
    measured with."""
    import datetime
    import os
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("numpy", "numba", "pandas", "ta-lib", "pynng", "pyarrow", "duckdb"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "missing"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), cpu)
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return versions | {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_1min": round(load, 2),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def format_environment(env: dict) -> str:
    """``Python 3.11.7, numpy 2.4.6, ... on Intel Xeon (2 cores, load 1.2), 2026-12-02 12:20 UTC``."""
    skip = {"cpu", "cores", "load_1min", "date"}
    libs = ", ".join(f"{k} {v}" for k, v in env.items() if k not in skip)
    return f"{libs} on {env['cpu']} ({env['cores']} cores, load {env['load_1min']}), {env['date']}"


def best_rate(work: Callable[[], int], repeat: int = 5) -> float:
    """Run ``work`` (which returns how many items it processed) ``repeat`` times; best items/s."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = work()
        dt = time.perf_counter() - t0
        best = max(best, n / dt)
    return best


# seconds per unit, for results measured in time (latencies): shown in the readable unit
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def format_quantity(value: float, unit: str) -> str:
    """``value`` in ``unit``, readable: times in ns/us/ms/s (``11400000, "ns"`` -> ``11.40 ms``,
    never "11.40 Mns"), everything else with an SI prefix (``5.9e8, "el/s"`` -> ``592.12 Mel/s``)."""
    if unit in TIME_UNITS:
        secs = value * TIME_UNITS[unit]
        for name, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
            if abs(secs) >= scale:
                return f"{secs / scale:.2f} {name}"
        return f"{secs / 1e-9:.2f} ns"
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.2f} {prefix}{unit}"
    return f"{value:.2f} {unit}".rstrip()


def _extra_value(key: str, value: object) -> str:
    """Numbers in the details: counts with separators, rates with prefixes."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    unit = key.rsplit(" ", 1)[-1] if " " in key else ""
    if unit.endswith("/s") or unit in TIME_UNITS:
        return format_quantity(float(value), unit).removesuffix(" " + unit).removesuffix(unit)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) >= 1000 else f"{value:.4g}"


def format_result(r: Result) -> str:
    target = ""
    if r.target is not None:
        verdict = "met" if r.target_met else "MISSED"
        target = f"  (target {format_quantity(r.target, r.unit)}: {verdict})"
    extra = "".join(f"\n      {k}: {_extra_value(k, v)}" for k, v in r.extra.items())
    return (
        f"{r.name:<28} hftagg {format_quantity(r.hftagg, r.unit):<14} | {r.baseline_name} "
        f"{format_quantity(r.baseline, r.unit)} | ratio {r.ratio:,.1f}x{target}{extra}"
    )


def to_json(results: list[Result]) -> str:
    return "\n".join(json.dumps(r.as_dict()) for r in results)
