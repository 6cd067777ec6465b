"""CME MDP 3.0 over SBE: packets in, hftagg ``book_update`` and ``trade`` records out.

A packet (one UDP datagram) is a 12-byte header (``MsgSeqNum`` uint32, ``SendingTime`` uint64
ns, little-endian) then messages, each after a 2-byte little-endian size that counts itself.
``MDIncrementalRefreshBook46`` entries become book updates, ``MDIncrementalRefreshTradeSummary48``
entries trades: ``ts_event`` = the message's ``TransactTime``, ``seq`` = ``RptSeq``,
``instrument_id`` = ``SecurityID``, prices are PRICE9 mantissas (already 1e-9 fixed-point),
sizes (int32 contracts) become 1e-8 fixed-point quantities (``size * 10**8``: always exact).
Actions: New -> A, Change/Overlay -> M, Delete/DeleteThru/DeleteFrom -> D (the last two also set
flag bits); entry types Bid/ImpliedBid -> B, Offer/ImpliedOffer -> A (implied sets a flag),
BookReset -> action R. ``depth`` = ``MDPriceLevel - 1``. The last entry of a message whose
``MatchEventIndicator`` has ``EndOfEvent`` carries ``FLAG_LAST`` (DBN's F_LAST). All of it is
numpy over the decoded entry arrays; nothing runs per message in Python.
"""

from __future__ import annotations

import numpy as np

from hftagg.builtins.protocols.sbe.codec import Decoded, SbeCodec
from hftagg.records.catalog import BOOK_UPDATE, TRADE
from hftagg.records.fixed import QTY_UNITS

__all__ = ["BOOK", "FLAG_DELETE_FROM", "FLAG_DELETE_THRU", "FLAG_IMPLIED", "FLAG_LAST",
           "TRADE_SUMMARY", "mdp3_packet", "mdp3_records"]  # fmt: skip

BOOK = "MDIncrementalRefreshBook46"
TRADE_SUMMARY = "MDIncrementalRefreshTradeSummary48"
FLAG_IMPLIED, FLAG_DELETE_THRU, FLAG_DELETE_FROM, FLAG_LAST = 1, 2, 4, 128
END_OF_EVENT = 1 << 7

_ACTION = np.full(256, ord("M"), dtype=np.uint8)
_ACTION[[0, 1, 2, 3, 4, 5]] = [ord(c) for c in "AMDDDM"]
_ACTION_FLAGS = np.zeros(256, dtype=np.uint8)
_ACTION_FLAGS[3], _ACTION_FLAGS[4] = FLAG_DELETE_THRU, FLAG_DELETE_FROM
_SIDE = np.full(256, ord("N"), dtype=np.uint8)
_SIDE[[ord("0"), ord("1"), ord("E"), ord("F")]] = [ord(c) for c in "BABA"]
_AGGRESSOR = np.full(256, ord("N"), dtype=np.uint8)
_AGGRESSOR[1], _AGGRESSOR[2] = ord("B"), ord("A")
INT32_NULL = 2**31 - 1


def mdp3_packet(seq: int, sending_time: int, messages: list[bytes]) -> bytes:
    """One MDP3 packet: header, then each SBE message after its 2-byte size."""
    head = int(seq).to_bytes(4, "little") + int(sending_time).to_bytes(8, "little")
    return head + b"".join((len(m) + 2).to_bytes(2, "little") + m for m in messages)


def _header(batch, gb, ts_recv_by_segment: np.ndarray, out: np.ndarray) -> None:
    parent = gb.parent
    e = gb.entries
    out["ts_event"] = batch.root["TransactTime"][parent].astype(np.int64)
    out["ts_recv"] = ts_recv_by_segment[batch.segment[parent]]
    out["seq"] = e["RptSeq"]
    out["instrument_id"] = e["SecurityID"].astype(np.uint32)
    out["price"] = e["MDEntryPx"]["mantissa"]
    size = e["MDEntrySize"]
    out["size"] = np.where(size == INT32_NULL, 0, size).astype(np.int64) * QTY_UNITS
    last = np.ones(len(parent), dtype=bool)
    last[:-1] = parent[1:] != parent[:-1]
    eoe = (batch.root["MatchEventIndicator"][parent] & END_OF_EVENT) != 0
    out["flags"] = np.where(last & eoe, FLAG_LAST, 0).astype(np.uint8)


def mdp3_records(codec: SbeCodec, decoded: Decoded,
                 ts_recv_by_segment: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
    """``{"book_update": ..., "trade": ...}`` from decoded MDP3 packets."""
    out = {"book_update": BOOK_UPDATE.empty(0), "trade": TRADE.empty(0)}
    book = decoded.templates.get(BOOK)
    gb = book.groups.get(f"{BOOK}.NoMDEntries") if book else None
    if gb is not None and len(gb.entries):
        e = gb.entries
        rec = BOOK_UPDATE.empty(len(e))
        _header(book, gb, ts_recv_by_segment, rec)
        action = e["MDUpdateAction"]
        kind = e["MDEntryType"]
        rec["action"] = np.where(kind == ord("J"), ord("R"), _ACTION[action])
        rec["side"] = _SIDE[kind]
        rec["depth"] = np.maximum(e["MDPriceLevel"].astype(np.int16) - 1, 0).astype(np.uint8)
        implied = (kind == ord("E")) | (kind == ord("F"))
        rec["flags"] |= _ACTION_FLAGS[action] | np.where(implied, FLAG_IMPLIED, 0).astype(np.uint8)
        out["book_update"] = rec
    trades = decoded.templates.get(TRADE_SUMMARY)
    gt = trades.groups.get(f"{TRADE_SUMMARY}.NoMDEntries") if trades else None
    if gt is not None and len(gt.entries):
        rec = TRADE.empty(len(gt.entries))
        _header(trades, gt, ts_recv_by_segment, rec)
        rec["side"] = _AGGRESSOR[gt.entries["AggressorSide"]]
        out["trade"] = rec
    return out
