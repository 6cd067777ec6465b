"""Compiled per-record kernels; Python calls them once per batch.

Shared infrastructure: :mod:`~hftagg.kernels.options` (the numba options every kernel compiles
with) and :mod:`~hftagg.kernels.slots` (the per-instrument slot table every stateful kernel keeps
its state in). Each kernel module does its per-record work in ``numba.njit(**NJIT)`` functions
and has a ``warm()`` that compiles them for every input kind the pipeline passes, so the build
(``hftagg warm``, which calls ``warm_all()``) fills the on-disk cache once and a running pipeline
never stops to compile.
"""

import importlib
import pkgutil

from hftagg.kernels import ema
from hftagg.kernels.ema import EmaKernel, ema_series

__all__ = ["EmaKernel", "ema_series", "warm_all"]


def warm_all() -> None:
    """Call ``warm()`` of every kernel module in this package (``ema`` first).

    Modules are found by listing the package, so a new kernel module only needs a ``warm()``.
    """
    from hftagg.records import fixed

    ema.warm()
    fixed.warm()  # the decimal parsers other kernels call
    for module in pkgutil.iter_modules(__path__):
        if module.name != "ema":
            warm = getattr(importlib.import_module(f"{__name__}.{module.name}"), "warm", None)
            if callable(warm):
                warm()
