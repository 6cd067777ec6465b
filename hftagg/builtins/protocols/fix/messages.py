"""FIX 4.4 message construction with simplefix: headers, admin and market-data messages.

Messages are built as a type plus body ``(tag, value)`` pairs; :func:`encode` adds the standard
header (8, 9, 35, 49, 56, 34, 52, and 43/122 on a possible duplicate) and the checksum.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import simplefix

__all__ = [
    "ADMIN_TYPES",
    "HEADER_TAGS",
    "MdEntry",
    "encode",
    "incremental_refresh",
    "market_data_request",
    "snapshot",
    "utc_timestamp",
]

Pairs = list[tuple[int, str | bytes | int]]

#: Session-level message types: Heartbeat, TestRequest, ResendRequest, Reject, SequenceReset,
#: Logout, Logon.
ADMIN_TYPES = frozenset({"0", "1", "2", "3", "4", "5", "A"})

#: Tags of the standard header (kept in front, in this order, when a message is rebuilt).
HEADER_TAGS = frozenset(
    {
        8,
        9,
        35,
        49,
        56,
        34,
        43,
        97,
        52,
        122,
        115,
        128,
        50,
        57,
        142,
        143,
        144,
        145,
        116,
        129,
        90,
        91,
        212,
        213,
        347,
        369,
        627,
        1128,
        1129,
    }
)


def utc_timestamp(when: dt.datetime | None = None) -> str:
    """``YYYYMMDD-HH:MM:SS.sss`` (UTCTimestamp, millisecond precision)."""
    when = when or dt.datetime.now(dt.UTC)
    return when.strftime("%Y%m%d-%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


def encode(
    begin_string: str,
    msg_type: str,
    sender: str,
    target: str,
    seq: int,
    body: Iterable[tuple[int, str | bytes | int]] = (),
    *,
    sending_time: str | None = None,
    orig_sending_time: str | bytes | None = None,
    header: Iterable[tuple[int, str | bytes | int]] = (),
) -> bytes:
    """The wire bytes of one message; ``orig_sending_time`` marks it PossDupFlag=Y; ``header``
    adds header fields (routing tags such as DeliverToCompID) before the body."""
    msg = simplefix.FixMessage()
    msg.append_pair(8, begin_string, header=True)
    msg.append_pair(35, msg_type, header=True)
    msg.append_pair(49, sender, header=True)
    msg.append_pair(56, target, header=True)
    msg.append_pair(34, seq, header=True)
    if orig_sending_time is not None:
        msg.append_pair(43, "Y", header=True)
    msg.append_pair(52, sending_time or utc_timestamp(), header=True)
    if orig_sending_time is not None:
        msg.append_pair(122, orig_sending_time, header=True)
    for tag, value in header:
        msg.append_pair(tag, value, header=True)
    for tag, value in body:
        msg.append_pair(tag, value)
    return msg.encode()


def market_data_request(
    req_id: str,
    symbols: Sequence[str],
    *,
    subscribe: bool = True,
    depth: int = 0,
    entry_types: Sequence[str] = ("0", "1", "2"),
    incremental: bool = True,
) -> tuple[str, Pairs]:
    """MarketDataRequest (V): 263=1 snapshot + updates (subscribe) or 263=2 unsubscribe."""
    body: Pairs = [(262, req_id), (263, "1" if subscribe else "2"), (264, depth)]
    if subscribe:
        body.append((265, "1" if incremental else "0"))
    body.append((267, len(entry_types)))
    body += [(269, t) for t in entry_types]
    body.append((146, len(symbols)))
    body += [(55, s) for s in symbols]
    return "V", body


class MdEntry:
    """One NoMDEntries entry: type 0 bid / 1 offer / 2 trade, price text, size; for an
    incremental refresh also the update action (0 new, 1 change, 2 delete) and symbol."""

    __slots__ = ("action", "entry_type", "level", "price", "rpt_seq", "size", "symbol")

    def __init__(self, entry_type: str, price: str, size: int | str, *, action: str = "0",
                 symbol: str | None = None, level: int | None = None,
                 rpt_seq: int | None = None) -> None:  # fmt: skip
        self.entry_type, self.price, self.size = entry_type, price, size
        self.action, self.symbol, self.level, self.rpt_seq = action, symbol, level, rpt_seq


def snapshot(
    symbol: str, entries: Sequence[MdEntry], req_id: str | None = None
) -> tuple[str, Pairs]:
    """MarketDataSnapshotFullRefresh (W) for one instrument."""
    body: Pairs = [] if req_id is None else [(262, req_id)]
    body += [(55, symbol), (268, len(entries))]
    for e in entries:
        body += [(269, e.entry_type), (270, e.price), (271, e.size)]
        if e.level is not None:
            body.append((1023, e.level))
    return "W", body


def incremental_refresh(entries: Sequence[MdEntry], req_id: str | None = None) -> tuple[str, Pairs]:
    """MarketDataIncrementalRefresh (X)."""
    body: Pairs = [] if req_id is None else [(262, req_id)]
    body.append((268, len(entries)))
    for e in entries:
        body += [(279, e.action), (269, e.entry_type)]
        if e.symbol is not None:
            body.append((55, e.symbol))
        if e.rpt_seq is not None:
            body.append((83, e.rpt_seq))
        body += [(270, e.price), (271, e.size)]
        if e.level is not None:
            body.append((1023, e.level))
    return "X", body
