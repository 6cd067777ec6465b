"""DBN framing kernels: find record boundaries in a byte buffer, gather records and fields.

A DBN record stream is a chain: each record's first byte is its length in 4-byte words, so the
next record starts ``length * 4`` bytes later. Walking that chain is inherently sequential; it
runs here in compiled code, once per record, and everything after it (grouping by rtype, field
copies) is vectorised numpy over the offsets found.

``warm()`` compiles (and caches on disk) every function with the types the decoder uses.
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.options import NJIT as _NJIT

__all__ = [
    "FRAME_BAD_LENGTH",
    "FRAME_NEED_MORE",
    "FRAME_OK",
    "frame_records",
    "gather_rows",
    "gather_u64",
    "warm",
]


FRAME_OK = 0  # stopped at max_records or exactly at the end of the data
FRAME_NEED_MORE = 1  # the record at the returned position is not complete yet
FRAME_BAD_LENGTH = 2  # the record at the returned position declares a length below 16 bytes

_HEADER = 16


@numba.njit(**_NJIT)
def frame_records(buf, pos, end, max_records, offsets):
    """Offsets of whole records in ``buf[pos:end]``, at most ``max_records`` of them.

    Writes the offsets into ``offsets`` and returns ``(count, position after the last record,
    status)``; the status says why it stopped (``FRAME_*``).
    """
    n = 0
    while n < max_records:
        if pos >= end:
            return n, pos, FRAME_OK
        length = np.int64(buf[pos]) * 4
        if length < _HEADER:
            return n, pos, FRAME_BAD_LENGTH
        if pos + length > end:
            return n, pos, FRAME_NEED_MORE
        offsets[n] = pos
        n += 1
        pos += length
    return n, pos, FRAME_OK


@numba.njit(**_NJIT)
def gather_u64(buf, offsets, field_offsets, out):
    """``out[i]`` = the little-endian u64 at ``offsets[i] + field_offsets[i]``."""
    for i in range(offsets.shape[0]):
        p = offsets[i] + field_offsets[i]
        v = np.uint64(0)
        for b in range(8):
            v |= np.uint64(buf[p + b]) << np.uint64(8 * b)
        out[i] = v
    return out


@numba.njit(**_NJIT)
def gather_rows(buf, offsets, length, out):
    """Copy the ``length``-byte records at ``offsets`` into consecutive rows of ``out`` (bytes)."""
    for i in range(offsets.shape[0]):
        src = offsets[i]
        dst = i * length
        for b in range(length):
            out[dst + b] = buf[src + b]
    return out


def warm() -> None:
    """Compile every kernel with the argument types the decoder passes."""
    buf = np.zeros(64, dtype=np.uint8)
    buf[0] = 4
    buf[16] = 4
    offsets = np.zeros(4, dtype=np.int64)
    frame_records(buf, 0, 64, 4, offsets)
    gather_u64(buf, offsets[:2], np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.uint64))
    gather_rows(buf, offsets[:2], 16, np.zeros(32, dtype=np.uint8))
