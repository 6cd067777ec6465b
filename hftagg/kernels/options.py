"""The numba options every compiled kernel uses: one place, so they cannot drift apart.

- ``NJIT``: ``cache=True`` (compiled once by ``hftagg warm``, then loaded from disk), ``nogil=True``
  (the loops release the GIL), ``fastmath=False`` (results match the reference libraries to the
  last bit: no reassociation), ``error_model="numpy"`` (a division by zero gives inf/NaN as numpy
  does instead of raising, and no check is emitted in the loop). Bounds checks follow numba's own
  switch (off unless ``NUMBA_BOUNDSCHECK=1``, which turns them on for a debugging run).
- ``NJIT_NO_NRT``: ``NJIT`` plus ``_nrt=False`` where this numba has that per-function switch: a
  kernel that allocates nothing skips the runtime's reference counting of its array arguments.
  Without the switch it is ``NJIT`` (the same results, only slower).

Use them as ``@numba.njit(**NJIT)`` and ``@numba.njit(inline="always", **NJIT)`` for helpers.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["NJIT", "NJIT_NO_NRT"]

NJIT = MappingProxyType({"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"})


def _no_nrt() -> MappingProxyType:
    options = dict(NJIT)
    try:
        from numba.core.options import DefaultOptions
    except ImportError:  # pragma: no cover - a numba without the internal option table
        return MappingProxyType(options)
    if hasattr(DefaultOptions, "_nrt"):
        options["_nrt"] = False
    return MappingProxyType(options)


NJIT_NO_NRT = _no_nrt()
