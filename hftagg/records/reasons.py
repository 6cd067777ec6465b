"""The reason-code registry: one numbering for every ``dead_letter.reason`` and ``alert.code``.

Each owner numbers its reasons inside a range of its own, so a code alone says who produced it
and why, whatever topic it arrived on:

=========== ================== ==============================================================
owner       range              codes
=========== ================== ==============================================================
book        1 .. 99            ``hftagg.builtins.core.book.kernels`` ``ALERT_*`` (alerts)
validation  100 .. 199         ``hftagg.builtins.core.validation.kernels.ValidationReason``
risk        200 .. 255         ``hftagg.builtins.core.risk.kernels.RiskReason`` (also ``order.status``, u1)
runtime     0x0100 .. 0x01FF   the runtime's own dead letters (a failing isolated stage, ...)
records     0x0200 .. 0x02FF   ``hftagg.records.fixed.FixedReason`` (unrepresentable values)
sbe         0x0B00 .. 0x0BFF   ``hftagg.builtins.protocols.sbe.Reason``
dbn         0x0D00 .. 0x0DFF   ``hftagg.builtins.protocols.dbn.Reason``
fix         0x0F00 .. 0x0FFF   ``hftagg.builtins.protocols.fix.kernels.REASONS``
plugins     0x1000 ..          a range each, claimed with :meth:`ReasonRegistry.claim`
=========== ================== ==============================================================

Code 0 means "no reason" and is never registered. Owners register their codes when their
module is imported (``REASONS.register_all("sbe", {...})``); a code outside the owner's range,
a code registered twice with another meaning, and overlapping claims raise ``ValueError``
naming both sides. A plugin claims a range at import and registers its codes in it::

    from hftagg.records.reasons import REASONS

    REASONS.claim("my_venue", 0x1200, 0x12FF)
    BAD_TICK = REASONS.register("my_venue", 0x1201, "bad_tick", "price not on the tick grid")

:func:`reason_arrays` turns a table into arrays indexed by ``code - base`` so compiled stages
fill ``alert.severity``/``alert.text`` and ``dead_letter.detail`` for a whole batch at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = [
    "BUILTIN_RANGES",
    "PLUGIN_CODES",
    "REASONS",
    "Reason",
    "ReasonRegistry",
    "RuntimeReason",
    "reason_arrays",
    "register_reason_table",
]

#: owner -> (first, last) code, inclusive
BUILTIN_RANGES: dict[str, tuple[int, int]] = {
    "book": (1, 99),
    "validation": (100, 199),
    "risk": (200, 255),
    "runtime": (0x0100, 0x01FF),
    "records": (0x0200, 0x02FF),
    "sbe": (0x0B00, 0x0BFF),
    "dbn": (0x0D00, 0x0DFF),
    "fix": (0x0F00, 0x0FFF),
}
#: where plugins claim their ranges (``dead_letter.reason`` and ``alert.code`` are uint32)
PLUGIN_CODES = (0x1000, 0xFFFF_FFFF)


@dataclass(frozen=True)
class Reason:
    """One registered reason: its code, owner, short name (``bad_checksum``), a sentence, and
    the severity an alert with it carries (0 info, 1 warning, 2 error)."""

    code: int
    owner: str
    name: str
    text: str
    severity: int = 2

    @property
    def qualified_name(self) -> str:
        """``owner.name``: how logs and metrics label it (``fix.bad_checksum``)."""
        return f"{self.owner}.{self.name}"


class ReasonRegistry:
    """Ranges per owner and the codes registered in them."""

    def __init__(self, ranges: Mapping[str, tuple[int, int]] = BUILTIN_RANGES) -> None:
        self._ranges: dict[str, tuple[int, int]] = {}
        self._codes: dict[int, Reason] = {}
        for owner, (first, last) in ranges.items():
            self.claim(owner, first, last, builtin=True)

    # -- ranges ----------------------------------------------------------------------------

    def claim(self, owner: str, first: int, last: int, *, builtin: bool = False) -> None:
        """Reserve codes ``first..last`` for ``owner``; claiming the same range again is a no-op."""
        if not owner or not isinstance(owner, str):
            raise ValueError(f"reason range owner must be a non-empty name, got {owner!r}")
        if not 0 < first <= last <= PLUGIN_CODES[1]:
            raise ValueError(f"reason range {first}..{last} of {owner!r} is empty or out of "
                             f"1..{PLUGIN_CODES[1]}")  # fmt: skip
        if not builtin and first < PLUGIN_CODES[0]:
            raise ValueError(
                f"reason range {first:#x}..{last:#x} of {owner!r}: codes below "
                f"{PLUGIN_CODES[0]:#x} belong to hftagg's own owners; claim one from "
                f"{PLUGIN_CODES[0]:#x} up"
            )
        if self._ranges.get(owner) == (first, last):
            return
        if owner in self._ranges:
            a, b = self._ranges[owner]
            raise ValueError(f"{owner!r} already claimed reason codes {a:#x}..{b:#x}; "
                             f"cannot also claim {first:#x}..{last:#x}")  # fmt: skip
        for other, (a, b) in self._ranges.items():
            if first <= b and a <= last:
                raise ValueError(
                    f"reason range {first:#x}..{last:#x} of {owner!r} overlaps {other!r}'s "
                    f"{a:#x}..{b:#x}; pick a free range (see hftagg.records.reasons.BUILTIN_RANGES)"
                )
        self._ranges[owner] = (first, last)

    def range_of(self, owner: str) -> tuple[int, int]:
        try:
            return self._ranges[owner]
        except KeyError:
            raise KeyError(f"no reason range claimed by {owner!r}; owners: "
                           f"{', '.join(sorted(self._ranges))}") from None  # fmt: skip

    @property
    def ranges(self) -> dict[str, tuple[int, int]]:
        return dict(self._ranges)

    # -- codes -----------------------------------------------------------------------------

    def register(self, owner: str, code: int, name: str, text: str = "",
                 severity: int = 2) -> int:  # fmt: skip
        """Register one code in ``owner``'s range; returns the code. Registering the same
        meaning again (a module imported twice) is a no-op."""
        code = int(code)
        first, last = self.range_of(owner)
        if not first <= code <= last:
            raise ValueError(f"reason code {code:#x} ({name!r}) is outside {owner!r}'s range "
                             f"{first:#x}..{last:#x}")  # fmt: skip
        reason = Reason(code, owner, name, text, int(severity))
        old = self._codes.get(code)
        if old is not None and old != reason:
            raise ValueError(f"reason code {code:#x} registered twice: {old.qualified_name!r} "
                             f"and {reason.qualified_name!r}")  # fmt: skip
        self._codes[code] = reason
        return code

    def register_all(self, owner: str, table: Mapping[int, tuple]) -> None:
        """Register ``{code: (name, text[, severity])}``."""
        for code, entry in table.items():
            self.register(owner, code, *entry)

    def get(self, code: int) -> Reason | None:
        return self._codes.get(int(code))

    def __contains__(self, code: object) -> bool:
        return isinstance(code, (int, np.integer)) and int(code) in self._codes

    def name(self, code: int) -> str:
        """``owner.name`` of a code; ``owner.code_0x…`` for an unregistered code in a claimed
        range, ``unknown.code_0x…`` otherwise (never raises: used when labelling bad data)."""
        reason = self._codes.get(int(code))
        if reason is not None:
            return reason.qualified_name
        return f"{self.owner_of(code) or 'unknown'}.code_{int(code):#x}"

    def owner_of(self, code: int) -> str | None:
        """Whose range ``code`` falls in (``None``: nobody's)."""
        code = int(code)
        for owner, (first, last) in self._ranges.items():
            if first <= code <= last:
                return owner
        return None

    def codes(self, owner: str | None = None) -> list[Reason]:
        """Registered reasons in code order (one owner's, or all)."""
        return [r for c, r in sorted(self._codes.items()) if owner is None or r.owner == owner]


#: The process-wide registry every stage and plugin registers into.
REASONS = ReasonRegistry()


class RuntimeReason:
    """The runtime's own dead-letter reasons (range 0x0100..0x01FF)."""

    STAGE_FAILED = 0x0101  # a stage isolated from failures raised on this input


REASONS.register("runtime", RuntimeReason.STAGE_FAILED, "stage_failed",
                 "an isolated stage raised on this input; the rest ran on")  # fmt: skip


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


def register_reason_table(
    owner: str, table: Mapping[IntEnum, tuple[int, bytes]], base: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Register an owner's ``{code: (severity, text)}`` table (codes of an ``IntEnum``, named
    after its members) with :data:`REASONS`, and return its :func:`reason_arrays`."""
    severity, text = reason_arrays(table, base, size)
    REASONS.register_all(
        owner,
        {
            code: (code.name.lower(), words.decode(), level)
            for code, (level, words) in table.items()
        },
    )
    return severity, text
