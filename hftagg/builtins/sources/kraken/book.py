"""Kraken WebSocket v2 book: levels per symbol and the CRC32 checksum Kraken sends with every
snapshot and update (docs: "Spot Websockets (v2) Book Checksum").

Checksum: over the top 10 levels -- asks from the lowest price up, then bids from the highest
down -- concatenate, per level, the price and the quantity as sent on the wire with the decimal
point removed and the leading zeros stripped, and take the CRC32 (unsigned). Kraken sends prices
and quantities at the pair's full precision (``0.10000000``), so a level's text is the integer
``value * 10**decimals``: with exact fixed-point values and each symbol's decimals (learned from
the wire text, or configured) the string is rebuilt exactly, no float involved.

All updates of a message apply first, then the book is truncated to the subscribed depth
(Kraken sends no deletion for a level pushed out of scope), then the checksum is compared.

A book here is two dicts (price -> quantity, fixed point) of at most ``depth`` levels: Kraken
books are shallow (10 to 1000 levels) and messages carry a few levels each, so the work per
message is a handful of dict operations and one sort of at most 2 x depth keys, then one
``zlib.crc32`` over ~20 numbers.
"""

from __future__ import annotations

import zlib

__all__ = ["KrakenBook", "checksum_text"]

_PRICE_SCALE, _QTY_SCALE = 9, 8


def checksum_text(asks, bids, price_decimals: int, qty_decimals: int) -> bytes:
    """The string Kraken's CRC32 covers, from best-first ``(price, qty)`` fixed-point levels."""
    pdiv, qdiv = 10 ** (_PRICE_SCALE - price_decimals), 10 ** (_QTY_SCALE - qty_decimals)
    parts = []
    for levels in (asks[:10], bids[:10]):
        for price, qty in levels:
            parts.append(str(price // pdiv))
            parts.append(str(qty // qdiv))
    return "".join(parts).encode()


class KrakenBook:
    """One symbol's book: ``snapshot``/``update`` return the ``(side, price, qty)`` level changes
    to publish (qty 0: removed, truncated levels included); ``checksum()`` the CRC32."""

    def __init__(self, depth: int, price_decimals: int, qty_decimals: int) -> None:
        self.depth = depth
        self.price_decimals, self.qty_decimals = price_decimals, qty_decimals
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}

    def snapshot(self, bids, asks) -> None:
        self.bids = {p: q for p, q in bids if q}
        self.asks = {p: q for p, q in asks if q}
        self._truncate()

    def update(self, bids, asks) -> list[tuple[int, int, int]]:
        """Apply a message's levels (``B``/``A`` = 66/65); changes incl. truncations."""
        changes = []
        for side, book, levels in ((66, self.bids, bids), (65, self.asks, asks)):
            for price, qty in levels:
                if qty:
                    book[price] = qty
                else:
                    book.pop(price, None)
                changes.append((side, price, qty))
        changes += self._truncate()
        return changes

    def _truncate(self) -> list[tuple[int, int, int]]:
        out = []
        for side, book, best_first in ((66, self.bids, True), (65, self.asks, False)):
            if len(book) > self.depth:
                for price in sorted(book, reverse=best_first)[self.depth :]:
                    del book[price]
                    out.append((side, price, 0))
        return out

    def top(self) -> tuple[list, list]:
        asks = sorted(self.asks.items())[:10]
        bids = sorted(self.bids.items(), reverse=True)[:10]
        return asks, bids

    def checksum(self) -> int:
        asks, bids = self.top()
        return zlib.crc32(checksum_text(asks, bids, self.price_decimals, self.qty_decimals))
