"""Reason codes of the Kraken adapter (owner ``kraken``, 0x1440..0x147F): alert codes."""

from __future__ import annotations

from hftagg.records.reasons import REASONS

__all__ = ["BOOK_SYNCED", "CHECKSUM_MISMATCH", "NOT_SYNCED"]

REASONS.claim("kraken", 0x1440, 0x147F)

CHECKSUM_MISMATCH = 0x1441
BOOK_SYNCED = 0x1442
NOT_SYNCED = 0x1443

REASONS.register_all("kraken", {
    CHECKSUM_MISMATCH: ("checksum_mismatch", "book CRC32 of the top 10 levels differs from "
                        "Kraken's (or the connection dropped): book cleared, resubscribed", 2),
    BOOK_SYNCED: ("book_synced", "book rebuilt from a Kraken snapshot, checksum verified", 0),
    NOT_SYNCED: ("not_synced", "a book update for a symbol with no snapshot yet; dropped", 1),
})  # fmt: skip
