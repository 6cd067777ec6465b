"""The benchmark result type, timing helpers and output formatting."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

__all__ = ["Result", "best_rate", "format_result", "to_json"]


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
        return out


def best_rate(work: Callable[[], int], repeat: int = 5) -> float:
    """Run ``work`` (which returns how many items it processed) ``repeat`` times; best items/s."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = work()
        dt = time.perf_counter() - t0
        best = max(best, n / dt)
    return best


def _human(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f} {suffix}"
    return f"{x:.2f} "


def format_result(r: Result) -> str:
    target = ""
    if r.target is not None:
        target = f"  (target {_human(r.target)}{r.unit}: {'met' if r.target_met else 'MISSED'})"
    extra = "".join(f"\n      {k}: {v}" for k, v in r.extra.items())
    return (
        f"{r.name:<28} hftagg {_human(r.hftagg)}{r.unit:<7} | {r.baseline_name} "
        f"{_human(r.baseline)}{r.unit} | ratio {r.ratio:,.1f}x{target}{extra}"
    )


def to_json(results: list[Result]) -> str:
    return "\n".join(json.dumps(r.as_dict()) for r in results)
