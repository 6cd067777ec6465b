"""CME MDP 3.0 over SBE: packets in, hftagg ``book_update`` and ``trade`` records out.

A packet (one UDP datagram) is a 12-byte header (``MsgSeqNum`` uint32, ``SendingTime`` uint64
ns, little-endian) then messages, each after a 2-byte little-endian size that counts itself.
``MDIncrementalRefreshBook46`` (and the older ``...Book32``) entries become book updates,
``MDIncrementalRefreshTradeSummary48`` (and ``...TradeSummary42``; their PRICE has exponent -7,
scaled to 1e-9) entries trades; every other template is returned by :func:`unmapped_messages`
and dead-lettered by ``sbe_decode`` (``unmapped template``, counted): ``ts_event`` = the message's ``TransactTime``, trade ``seq`` = ``RptSeq``,
``instrument_id`` = ``SecurityID``, prices are PRICE9 mantissas (already 1e-9 fixed-point),
sizes (int32 contracts) become 1e-8 fixed-point quantities (``size * 10**8``: always exact).
Actions: New -> A, Change/Overlay -> M, Delete/DeleteThru/DeleteFrom -> D (the last two also set
flag bits); entry types Bid/ImpliedBid -> B, Offer/ImpliedOffer -> A (implied sets a flag),
BookReset -> action R. ``depth`` = ``MDPriceLevel - 1``. The last entry of a message whose
``MatchEventIndicator`` has ``EndOfEvent`` carries ``FLAG_LAST`` (DBN's F_LAST). All of it is
numpy over the decoded entry arrays; nothing runs per message in Python.

Sequencing (CME's documented MDP 3.0 semantics): ``RptSeq`` is one counter per instrument
(``SecurityID``) shared by *every* incremental entry of that instrument -- book, trade summary,
volume, statistics, limits -- so book entries alone show holes wherever a trade or volume entry
took a number. :class:`Mdp3Sequencer` follows ``RptSeq`` per SecurityID across all entry types
of all incremental templates and gives book updates their own per-instrument ``seq`` that is
contiguous while ``RptSeq`` is, and jumps by the number of missing ``RptSeq`` values when entries
really were lost (so the ``book`` stage still sees, and alerts on, a real gap). A pure book
stream keeps ``seq == RptSeq``. An ``RptSeq`` that does not advance (a duplicate or a replayed
entry, e.g. a packet that arrives after its successor) is counted in ``stale`` and, for book
entries, not applied (CME's rule; the gap it left was already reported) and counted in
``stale_book``; ``RptSeq == 1`` after a higher value is a restart (channel
reset), not a gap. The channel's own sequence is the packet ``MsgSeqNum``, judged by the
``multicast`` source (A/B arbitration, ``gap`` alerts), not here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hftagg.builtins.protocols.sbe.codec import Decoded, SbeCodec
from hftagg.records.catalog import BOOK_UPDATE, TRADE
from hftagg.records.fixed import QTY_UNITS

__all__ = ["BOOK", "MAPPED", "Mdp3Instruments", "Mdp3Sequencer", "unmapped_messages", "FLAG_DELETE_FROM", "FLAG_DELETE_THRU", "FLAG_IMPLIED", "FLAG_LAST",
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


# every incremental template whose ``NoMDEntries`` entries carry ``SecurityID`` and ``RptSeq``
SEQUENCED = ("MDIncrementalRefreshBook32", "MDIncrementalRefreshDailyStatistics33",
             "MDIncrementalRefreshLimitsBanding34", "MDIncrementalRefreshSessionStatistics35",
             "MDIncrementalRefreshVolume37", "MDIncrementalRefreshTradeSummary42",
             BOOK, TRADE_SUMMARY, "MDIncrementalRefreshDailyStatistics49",
             "MDIncrementalRefreshLimitsBanding50", "MDIncrementalRefreshSessionStatistics51")  # fmt: skip
BOOK_TEMPLATES = ("MDIncrementalRefreshBook32", BOOK)
TRADE_TEMPLATES = ("MDIncrementalRefreshTradeSummary42", TRADE_SUMMARY)
MAPPED = BOOK_TEMPLATES + TRADE_TEMPLATES
PRICE_NULL = 2**63 - 1


def unmapped_messages(
    decoded: Decoded, used: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """``(message index in the scan, template id)`` of every message no mapping turns into a
    record (statistics, volume, limits, definitions, status, snapshots, admin, ...): the stage
    dead-letters each with ``unmapped template`` and counts it, so nothing vanishes. Templates
    in ``used`` (definitions the instrument mapping read: :class:`Mdp3Instruments`) are not."""
    idx, ids = [], []
    for name, batch in decoded.templates.items():
        if name not in MAPPED and name not in used:
            idx.append(batch.index)
            ids.append(np.full(len(batch.index), batch.message.id, dtype=np.int64))
    if not idx:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    i, t = np.concatenate(idx), np.concatenate(ids)
    order = np.argsort(i, kind="stable")
    return i[order], t[order]


class Mdp3Sequencer:
    """Per-SecurityID ``RptSeq`` across all entry types; contiguous book ``seq`` unless lost.

    State: sorted ``ids`` with the last ``RptSeq`` seen and the next book ``seq`` of each. One
    call per decoded batch, numpy throughout (sorts and cumulative sums, no per-entry Python).
    """

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.last_rpt = np.zeros(0, dtype=np.int64)
        self.next_book = np.zeros(0, dtype=np.int64)
        self.gaps = 0  # RptSeq jumps seen
        self.missing = 0  # RptSeq values never seen (entries lost)
        self.stale = 0  # entries whose RptSeq did not advance
        self.stale_book = 0  # of which book entries, not applied (CME: ignore them)

    def book_seq(self, decoded: Decoded) -> dict[str, np.ndarray]:
        """``{book template: seq of each of its NoMDEntries entries}``; advances the state.

        A stale entry (its ``RptSeq`` did not advance: a late or repeated packet, already judged
        lost) gets ``-1``; CME's rule is to ignore it, and :func:`mdp3_records` counts it.
        """
        parts = []
        for name in SEQUENCED:
            batch = decoded.templates.get(name)
            gb = batch.groups.get(f"{name}.NoMDEntries") if batch else None
            if gb is not None and len(gb.entries):
                parts.append((name, batch.index[gb.parent], gb.entries))
        if not parts:
            return {}
        pos = np.concatenate([p[1] for p in parts])
        sid = np.concatenate([p[2]["SecurityID"].astype(np.int64) for p in parts])
        rpt = np.concatenate([p[2]["RptSeq"].astype(np.int64) for p in parts])
        is_book = np.concatenate([np.full(len(p[2]), p[0] in BOOK_TEMPLATES) for p in parts])
        order = np.argsort(pos, kind="stable")  # stream order; entries keep their order
        order = order[np.argsort(sid[order], kind="stable")]  # grouped by instrument
        s, r, b = sid[order], rpt[order], is_book[order]
        first = np.ones(len(s), dtype=bool)
        first[1:] = s[1:] != s[:-1]
        if len(self.ids):
            at = np.minimum(np.searchsorted(self.ids, s), len(self.ids) - 1)
            known = self.ids[at] == s
            state_last = np.where(known, self.last_rpt[at], r - 1)
            state_next = np.where(known, self.next_book[at], r)
        else:  # first sight of an instrument: no gap, book seq starts at its RptSeq
            state_last, state_next = r - 1, r
        # prev = the highest RptSeq seen before each entry of its instrument (a late entry does
        # not lower it); RptSeq == 1 starts over (channel reset): no gap, no stale
        seg_start = first | (r == 1)
        seg = np.cumsum(seg_start)
        shift = seg.astype(np.int64) << 33  # RptSeq < 2**32: per-segment running maximum
        high = np.maximum.accumulate(shift + r) - shift
        prev = np.empty_like(r)
        prev[1:] = high[:-1]
        prev[seg_start] = np.where(r[seg_start] == 1, 0, state_last[seg_start])
        step = r - prev
        stale_mask = step <= 0
        missing = np.maximum(step - 1, 0)
        self.gaps += int((missing > 0).sum())
        self.missing += int(missing.sum())
        self.stale += int(stale_mask.sum())
        # a stale entry is not applied: it takes no book seq (else every later seq of its
        # instrument shifts by one and the book sees a false gap)
        inc = np.where(stale_mask, 0, b.astype(np.int64)) + missing
        csum = np.cumsum(inc)
        starts = np.flatnonzero(first)
        before = np.repeat(csum[starts] - inc[starts], np.diff(np.r_[starts, len(s)]))
        run = csum - before  # cumulative increment within each instrument
        base = np.repeat(state_next[starts], np.diff(np.r_[starts, len(s)]))
        seq_sorted = base + run - 1
        # new state: last RptSeq and next book seq of each instrument in this batch
        ends = np.r_[starts[1:], len(s)] - 1
        ids = np.concatenate([self.ids, s[starts]])
        last = np.concatenate([self.last_rpt, high[ends]])
        nxt = np.concatenate([self.next_book, base[ends] + run[ends]])
        uniq, keep = np.unique(ids[::-1], return_index=True)  # the batch's values win
        keep = len(ids) - 1 - keep
        self.ids, self.last_rpt, self.next_book = uniq, last[keep], nxt[keep]
        seq = np.empty_like(seq_sorted)
        seq[order] = np.where(stale_mask, -1, seq_sorted)  # -1: stale, not applied
        out, k = {}, 0
        for name, _, entries in parts:
            if name in BOOK_TEMPLATES:
                out[name] = seq[k : k + len(entries)]
            k += len(entries)
        return out

    def snapshot(self) -> dict:
        return {"ids": self.ids.tolist(), "last_rpt": self.last_rpt.tolist(),
                "next_book": self.next_book.tolist(), "gaps": self.gaps,
                "missing": self.missing, "stale": self.stale,
                "stale_book": self.stale_book}  # fmt: skip

    def restore(self, state: dict) -> None:
        self.ids = np.array(state["ids"], dtype=np.int64)
        self.last_rpt = np.array(state["last_rpt"], dtype=np.int64)
        self.next_book = np.array(state["next_book"], dtype=np.int64)
        self.gaps, self.missing, self.stale = state["gaps"], state["missing"], state["stale"]
        self.stale_book = state.get("stale_book", 0)


class Mdp3Instruments:
    """SecurityID -> registry ``instrument_id``, in bulk per batch.

    A SecurityID's venue spelling in the registry is its decimal text (``"123456"`` on
    ``venue``, default ``cme``); its canonical symbol is the ``Symbol`` of its
    ``MDInstrumentDefinition*`` message when one has been decoded (``ESZ6``), else the text.
    A SecurityID met before its definition is defined as its text; when the definition
    arrives, the instrument is redefined under its Symbol and the earlier id is kept as an
    alias (records already emitted still show ``ESZ6``). An instrument the registry already
    defines (instruments.toml) keeps its definition and gains the SecurityID spelling.
    Python runs once per distinct SecurityID first seen, never per entry.
    """

    def __init__(self, registry, venue: str = "cme") -> None:
        self.registry = registry
        self.venue = venue
        self._ids: dict[int, int] = {}  # SecurityID -> instrument_id
        self.definitions = 0  # definition messages learnt from

    def learn(self, decoded: Decoded) -> tuple[str, ...]:
        """Symbols of the batch's ``MDInstrumentDefinition*`` messages (counted in
        ``definitions``); returns the names of the templates read."""
        used = []
        for name, batch in decoded.templates.items():
            if not name.startswith("MDInstrumentDefinition") or not len(batch.index):
                continue
            root = batch.root
            if "Symbol" not in (root.dtype.names or ()) or "SecurityID" not in root.dtype.names:
                continue
            used.append(name)
            for raw, sid in zip(root["Symbol"].tolist(), root["SecurityID"].tolist(), strict=True):
                symbol = (raw.decode("ascii", "replace") if isinstance(raw, bytes)
                          else str(raw)).strip("\x00 ")  # fmt: skip
                if symbol:
                    self._define(int(sid), symbol)
                self.definitions += 1
        return tuple(used)

    def _define(self, sid: int, symbol: str) -> None:
        reg, text = self.registry, str(sid)
        iid = reg.id_of(symbol, self.venue)
        if iid is not None and reg.get(iid).venue_symbol == text:
            self._ids[sid] = iid
            return
        earlier = reg.ids_for(self.venue, [text], define=False)[0]
        if earlier and reg.symbol(int(earlier)) == text:  # defined as its text before: replace
            reg.remove(int(earlier))
        else:
            earlier = 0
        existing = reg.get(iid) if iid is not None else None
        if existing is not None:
            inst = reg.add(dataclasses.replace(existing, venue_symbol=text))
        else:
            inst = reg.define(symbol, self.venue, venue_symbol=text)
        if earlier and int(earlier) != inst.instrument_id:
            reg.alias(int(earlier), inst.symbol, self.venue)
        self._ids[sid] = inst.instrument_id

    def map(self, security_ids: np.ndarray) -> np.ndarray:
        """uint32 registry ids for an array of SecurityIDs."""
        if not len(security_ids):
            return np.zeros(0, dtype=np.uint32)
        uniq, inverse = np.unique(security_ids.astype(np.int64), return_inverse=True)
        new = [s for s in uniq.tolist() if s not in self._ids]
        if new:
            ids = self.registry.ids_for(self.venue, [str(s) for s in new])
            self._ids.update(zip(new, ids.tolist(), strict=True))
        table = np.fromiter((self._ids[s] for s in uniq.tolist()), np.uint32, len(uniq))
        return table[inverse]


def _header(batch, gb, ts_recv_by_segment: np.ndarray, out: np.ndarray) -> None:
    parent = gb.parent
    e = gb.entries
    out["ts_event"] = batch.root["TransactTime"][parent].astype(np.int64)
    out["ts_recv"] = ts_recv_by_segment[batch.segment[parent]]
    out["seq"] = e["RptSeq"]
    out["instrument_id"] = e["SecurityID"].astype(np.uint32)
    px = e["MDEntryPx"]["mantissa"]
    if not batch.message.name.endswith(("46", "48")):  # PRICE / PRICENULL: exponent -7
        px = np.where(px == PRICE_NULL, 0, px * 100)
    out["price"] = px
    size = e["MDEntrySize"]
    out["size"] = np.where(size == INT32_NULL, 0, size).astype(np.int64) * QTY_UNITS
    last = np.ones(len(parent), dtype=bool)
    last[:-1] = parent[1:] != parent[:-1]
    eoe = (batch.root["MatchEventIndicator"][parent] & END_OF_EVENT) != 0
    out["flags"] = np.where(last & eoe, FLAG_LAST, 0).astype(np.uint8)


def mdp3_records(codec: SbeCodec, decoded: Decoded, ts_recv_by_segment: np.ndarray,
                 sequencer: Mdp3Sequencer | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """``{"book_update": ..., "trade": ...}`` from decoded MDP3 packets.

    ``sequencer`` carries the per-instrument ``RptSeq`` state from batch to batch (a fresh one
    when omitted: right for one self-contained capture).
    """
    sequencer = sequencer if sequencer is not None else Mdp3Sequencer()
    book_seq = sequencer.book_seq(decoded)
    books, trades = [], []
    for name in BOOK_TEMPLATES:
        book = decoded.templates.get(name)
        gb = book.groups.get(f"{name}.NoMDEntries") if book else None
        if gb is None or not len(gb.entries):
            continue
        e = gb.entries
        rec = BOOK_UPDATE.empty(len(e))
        _header(book, gb, ts_recv_by_segment, rec)
        seq = book_seq[name]
        rec["seq"] = np.maximum(seq, 0)
        action = e["MDUpdateAction"]
        kind = e["MDEntryType"]
        rec["action"] = np.where(kind == ord("J"), ord("R"), _ACTION[action])
        rec["side"] = _SIDE[kind]
        rec["depth"] = np.maximum(e["MDPriceLevel"].astype(np.int16) - 1, 0).astype(np.uint8)
        implied = (kind == ord("E")) | (kind == ord("F"))
        rec["flags"] |= _ACTION_FLAGS[action] | np.where(implied, FLAG_IMPLIED, 0).astype(np.uint8)
        stale = seq < 0
        if stale.any():  # counted in sequencer.stale_book; the gap before it was already alerted
            sequencer.stale_book += int(stale.sum())
            rec = rec[~stale]
        books.append((book.index[gb.parent][~stale], rec))
    for name in TRADE_TEMPLATES:
        trade = decoded.templates.get(name)
        gt = trade.groups.get(f"{name}.NoMDEntries") if trade else None
        if gt is None or not len(gt.entries):
            continue
        rec = TRADE.empty(len(gt.entries))
        _header(trade, gt, ts_recv_by_segment, rec)
        rec["side"] = _AGGRESSOR[gt.entries["AggressorSide"]]
        trades.append((trade.index[gt.parent], rec))
    return {
        "book_update": _in_stream_order(books, BOOK_UPDATE),
        "trade": _in_stream_order(trades, TRADE),
    }


def _in_stream_order(parts, schema) -> np.ndarray:
    if not parts:
        return schema.empty(0)
    if len(parts) == 1:
        return parts[0][1]
    pos = np.concatenate([p[0] for p in parts])
    return np.concatenate([p[1] for p in parts])[np.argsort(pos, kind="stable")]
