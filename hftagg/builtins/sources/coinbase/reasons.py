"""Reason codes of the Coinbase adapter (owner ``coinbase``, 0x1480..0x14BF): alert codes."""

from __future__ import annotations

from hftagg.records.reasons import REASONS

__all__ = ["BOOK_INVALID", "BOOK_SYNCED", "SEQUENCE_GAP"]

REASONS.claim("coinbase", 0x1480, 0x14BF)

SEQUENCE_GAP = 0x1481
BOOK_INVALID = 0x1482
BOOK_SYNCED = 0x1483

REASONS.register_all("coinbase", {
    SEQUENCE_GAP: ("sequence_gap", "sequence_num skipped: messages of this connection were "
                   "lost (value: how many)", 2),
    BOOK_INVALID: ("book_invalid", "level2 book cleared after a sequence gap or a dropped "
                   "connection; resubscribed for a fresh snapshot", 2),
    BOOK_SYNCED: ("book_synced", "level2 book rebuilt from a Coinbase snapshot", 0),
})  # fmt: skip
