"""Reason-code tables: from ``{code: (severity, text)}`` to arrays indexed by ``code - base``.

Stages that reject records (validation, risk, decoders) number their reasons in a range of
their own and fill ``alert.severity``/``alert.text`` and ``dead_letter.detail`` for a whole
batch at once by indexing these arrays with ``codes - base``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["reason_arrays"]


def reason_arrays(
    table: Mapping[int, tuple[int, bytes]], base: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(severity uint8, text S48)`` arrays of ``size`` entries; unused codes stay zero/empty."""
    severity = np.zeros(size, dtype=np.uint8)
    text = np.zeros(size, dtype="S48")  # the width of alert.text; fits dead_letter.detail too
    for code, (level, words) in table.items():
        if not base <= code < base + size:
            raise ValueError(f"reason code {code} is outside {base}..{base + size - 1}")
        if len(words) > 48:
            raise ValueError(f"reason {code} text is {len(words)} bytes; at most 48 fit an alert")
        severity[code - base] = level
        text[code - base] = words
    return severity, text
