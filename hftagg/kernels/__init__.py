"""Shared numba infrastructure: what several features' compiled kernels need, written once.

- :mod:`~hftagg.kernels.options`: the numba options every kernel compiles with;
- :mod:`~hftagg.kernels.slots`: the per-instrument slot table every stateful kernel keeps its
  state in.

Every kernel module (here, in ``hftagg.records``, and in the features' packages) has a ``warm()``
that compiles its kernels for every input kind the pipeline passes. :func:`warm_modules` finds
them by reading the sources, so a new kernel module only needs a ``warm()``; the built-in
``kernel_warmups`` plugin registers each with ``hftagg_register_kernel_warmups``, so ``hftagg
warm`` (run by the build) fills the on-disk cache once and a running pipeline never stops to
compile.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

__all__ = ["warm_all", "warm_modules"]

_WARM = re.compile(r"^def warm\(\)", re.MULTILINE)
_FIRST = (
    "hftagg.records.fixed",
    "hftagg.builtins.core.indicators.ema",
)  # the decimal parsers, then the EMA
_PACKAGES = ("records", "kernels", "protocols", "builtins", "instruments")


def warm_modules() -> list[str]:
    """Dotted names of every hftagg module with a top-level ``warm()``, in a stable order."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for package in _PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if path.stem != "__init__" and _WARM.search(path.read_text(encoding="utf-8")):
                found.append(".".join(("hftagg", *path.relative_to(root).with_suffix("").parts)))
    order = {name: i for i, name in enumerate(_FIRST)}
    return sorted(found, key=lambda name: (order.get(name, len(order)), name))


def warm_all() -> None:
    """Call every kernel module's ``warm()`` (see :func:`warm_modules`)."""
    for name in warm_modules():
        importlib.import_module(name).warm()
