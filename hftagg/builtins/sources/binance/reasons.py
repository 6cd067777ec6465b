"""Reason codes of the Binance adapter (owner ``binance``, 0x1400..0x143F): alert codes."""

from __future__ import annotations

from hftagg.records.reasons import REASONS

__all__ = ["BOOK_GAP", "BOOK_SYNCED", "SNAPSHOT_FAILED"]

REASONS.claim("binance", 0x1400, 0x143F)

BOOK_GAP = 0x1401
BOOK_SYNCED = 0x1402
SNAPSHOT_FAILED = 0x1403

REASONS.register_all("binance", {
    BOOK_GAP: ("book_gap", "depth update ids not continuous (or the stream reconnected): book "
                           "cleared and rebuilt from a fresh REST snapshot", 2),
    BOOK_SYNCED: ("book_synced", "depth book built from a REST snapshot joined to the stream", 0),
    SNAPSHOT_FAILED: ("snapshot_failed", "REST depth snapshot request failed; retrying", 1),
})  # fmt: skip
