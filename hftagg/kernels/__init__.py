"""Compiled per-record kernels; Python calls them once per batch.

Each kernel module does its per-record work in ``numba.njit(cache=True, nogil=True)`` functions
and has a ``warm()`` that compiles them for every input kind the pipeline passes, so the build
script can fill the on-disk cache once (``warm_all()``) and a pipeline never compiles mid-stream.
"""

from hftagg.kernels import ema
from hftagg.kernels.ema import EmaKernel, ema_series

__all__ = ["EmaKernel", "ema_series", "warm_all"]


def warm_all() -> None:
    """Compile and cache every kernel (run once at build time; later imports load the cache)."""
    ema.warm()
