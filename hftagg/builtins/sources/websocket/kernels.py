"""Compiled scan of depth levels: raw JSON arrays of ``[price, size, ...]`` -> fixed-point.

The JSON decoder hands the bids/asks arrays of a whole batch over as raw bytes (msgspec
``Raw``: validated JSON, not turned into Python lists and strings), joined into one buffer;
:func:`scan_levels` walks it once and parses each level's first two elements (quoted decimal
strings or bare numbers) with the exact decimal parser. A level whose shape is not
``[price, size, ...]`` gets status ``SHAPE`` (dead-lettered by the caller).
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.options import NJIT
from hftagg.records.fixed import parse_fixed

__all__ = ["SHAPE", "SIZE_FLAG", "scan_levels"]

SHAPE = 5  # a level that is not [price, size, ...] (status code after fixed's 0..4)
SIZE_FLAG = 0x10  # added to fixed's status when the size (not the price) was refused

_QUOTE, _BACKSLASH, _OPEN, _CLOSE, _COMMA = 34, 92, 91, 93, 44


@numba.njit(inline="always", **NJIT)
def _token_end(buf, i, end):
    """End of a bare JSON value (a number, true, null) starting at ``i``."""
    while i < end and buf[i] != _COMMA and buf[i] != _CLOSE and buf[i] > 32:
        i += 1
    return i


@numba.njit(**NJIT)
def scan_levels(buf, starts, ends, price_decimals, size_decimals, price, size, owner, status):  # noqa: C901 - one pass
    """Levels of segments ``buf[starts[k]:ends[k]]`` -> ``price``, ``size``, ``owner`` (the
    segment index) and ``status`` (0 ok, fixed's codes -- plus ``SIZE_FLAG`` when it is the
    size --, or ``SHAPE``); returns the level count."""
    n = 0
    for k in range(starts.shape[0]):
        i, end, depth, elem = starts[k], ends[k], 0, 0
        while i < end:
            c = buf[i]
            if c == _OPEN:
                depth += 1
                if depth == 2:
                    elem = 0
                    owner[n] = k
                    status[n] = 0
                    price[n] = 0
                    size[n] = 0
                elif depth > 2:
                    status[n] = SHAPE
                i += 1
            elif c == _CLOSE:
                if depth == 2:
                    if elem < 1 and status[n] == 0:
                        status[n] = SHAPE
                    n += 1
                depth -= 1
                i += 1
            elif c == _COMMA:
                if depth == 2:
                    elem += 1
                i += 1
            elif c <= 32:
                i += 1
            else:
                if c == _QUOTE:
                    a = i + 1
                    j = a
                    while j < end and buf[j] != _QUOTE:
                        j += 2 if buf[j] == _BACKSLASH else 1
                    b = j
                    i = j + 1
                else:
                    a = i
                    b = _token_end(buf, i, end)
                    i = b
                if depth == 2 and elem <= 1 and status[n] == 0:
                    s, v = parse_fixed(buf, a, b, price_decimals if elem == 0 else size_decimals)
                    if s != 0:
                        status[n] = s if elem == 0 else s | SIZE_FLAG
                    elif elem == 0:
                        price[n] = v
                    else:
                        size[n] = v
                elif depth == 1 and status.shape[0] > n:  # a level that is not an array
                    owner[n] = k
                    status[n] = SHAPE
                    n += 1
    return n


def warm() -> None:
    buf = np.frombuffer(b'[["1.5","2"]]', dtype=np.uint8)
    out = np.zeros(2, dtype=np.int64)
    scan_levels(buf, np.zeros(1, np.int64), np.array([len(buf)]), 9, 8, out, out.copy(),
                np.zeros(2, np.int64), np.zeros(2, np.uint8))  # fmt: skip
