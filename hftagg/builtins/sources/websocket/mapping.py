"""Config-mapped JSON -> records, in bulk: one msgspec parse per batch, fields taken column-wise.

A mapping names, for each record field, the path of the value in a message (``price = "p"``,
``price = "data.p"`` inside a combined-stream envelope; object keys only, no list indices).
The decoder builds one msgspec ``Struct`` type per mapping (only the mapped paths; all other keys
are skipped by the parser without building Python objects) and decodes a whole batch as one JSON
array (the messages joined with commas): one parse call per batch. Columns are then pulled with
C-level ``map(attrgetter)`` and converted by numpy and the compiled decimal parser
(:func:`hftagg.records.fixed.parse_decimals`): prices and sizes from decimal strings (or JSON
numbers, read as their shortest decimal text) to fixed-point exactly; a value that does not fit
is dead-lettered, never rounded.

Depth levels (``bids``/``asks``) are not turned into Python lists at all: they stay raw JSON
(msgspec ``Raw``) and one compiled pass per batch scans and parses them
(:mod:`.kernels`). Options measured on Binance messages (``python -m benchmarks websocket``, a
loaded 2-core machine, so figures moved by 2x between runs): ``orjson.loads`` per message
alone 0.3-0.9 M msg/s for trades, before any field is looked up; one typed msgspec array parse
per batch 0.7-1.6 M msg/s (untyped: 0.4-0.6 M/s, GC-tracked Structs several times slower, hence
``gc=False``); the whole decode into records 0.23-0.38 M trades/s and about 0.1 M depth
diffs/s (with their 11 levels each), against cryptofeed's Binance handler at 0.12 M trades/s
and 0.024 M depth diffs/s.

When the batch does not parse as a whole (a malformed message), each message is parsed on its own
so the bad ones are dead-lettered with a reason and the good ones around them still decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, eq
from typing import Any

import msgspec
import numpy as np

from hftagg.builtins.sources.websocket.kernels import SHAPE, SIZE_FLAG, scan_levels
from hftagg.builtins.sources.websocket.reasons import BAD_LEVEL as _BAD_LEVEL
from hftagg.builtins.sources.websocket.reasons import BAD_SIDE as _BAD_SIDE
from hftagg.builtins.sources.websocket.reasons import MALFORMED as _MALFORMED
from hftagg.builtins.sources.websocket.reasons import MISSING_FIELD as _MISSING_FIELD
from hftagg.records.fixed import STATUS_TEXT, FixedReason, detail, parse_decimals, parse_spans

__all__ = ["FIELDS", "F_LAST", "LEVELS", "Columns", "JsonMapping", "TS_UNIT_DECIMALS"]

#: record type -> the fields a mapping may name (and which of them must be mapped)
FIELDS = {
    "trade": {"optional": ("symbol", "side", "ts_event"), "required": ("price", "size")},
    "quote": {
        "optional": ("symbol", "ts_event", "bid_sz", "ask_sz"),
        "required": ("bid_px", "ask_px"),
    },
    # depth diffs: lists of [price, size, ...] levels per side; size 0 deletes the level
    "book_update": {"optional": ("symbol", "ts_event", "bids", "asks"), "required": ()},
}
LEVELS = ("bids", "asks")
F_LAST = 0x80  # DBN's flag: the last record of one venue message (the book publishes there)
PRICE = frozenset({"price", "bid_px", "ask_px"})
SIZE = frozenset({"size", "bid_sz", "ask_sz"})
#: venue time unit -> decimals to parse it with into ns (a seconds value "1534614057.321597"
#: becomes ns exactly, digit by digit)
TS_UNIT_DECIMALS = {"ns": 0, "us": 3, "ms": 6, "s": 9}
_LEAF = str | int | float | bool | None
_LEVELS = msgspec.Raw  # level arrays stay raw JSON, scanned in compiled code
_NO_SIDE = ord("?")


@dataclass
class Columns:
    """A decoded batch: ``rows`` (index of the message each record came from), one array per
    mapped field (already converted: int64 fixed-point, ns, uint8 side, S symbols), and the
    rejected messages ``(message index, reason code, detail)``; ``ignored`` counts messages
    ``match`` left out (subscription answers, other event types)."""

    rows: np.ndarray
    values: dict[str, np.ndarray]
    rejected: list[tuple[int, int, bytes]]
    ignored: int


def _split(path: str) -> list[str]:
    parts = path.split(".")
    if not path or any(p == "" for p in parts):
        raise ValueError(f"path {path!r}: expected keys separated by dots, e.g. 'data.p'")
    return parts


class _Node:
    """A tree of mapped paths -> a msgspec Struct type (field k renamed to its JSON key)."""

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.leaf = False
        self.type: Any = _LEAF

    def add(self, parts: list[str], typ: Any = _LEAF) -> None:
        node = self
        for part in parts:
            node = node.children.setdefault(part, _Node())
        node.leaf = True
        node.type = typ

    def struct(self, name: str) -> Any:
        fields, rename = [], {}
        for k, (key, child) in enumerate(self.children.items()):
            if child.children and child.leaf:
                raise ValueError(f"path {key!r} is both a value and a container")
            attr = f"f{k}"
            rename[attr] = key
            typ = child.struct(f"{name}_{k}") if child.children else child.type
            if typ is _LEVELS:
                fields.append((attr, typ, msgspec.Raw(b"[]")))
            else:
                fields.append((attr, typ | None, None))
        # gc=False: a batch makes thousands of these; untracked by the cyclic GC (they hold no
        # cycles), decoding a batch is several times faster (msgspec docs, "Struct" GC notes)
        return msgspec.defstruct(name, fields, rename=rename, gc=False)

    def getter(self, parts: list[str]) -> str:
        node, attrs = self, []
        for part in parts:
            attrs.append(f"f{list(node.children).index(part)}")
            node = node.children[part]
        return ".".join(attrs)


class JsonMapping:
    """The decoder of one config mapping (see the module docstring)."""

    def __init__(
        self,
        record: str,
        paths: dict[str, str],
        *,
        match: dict[str, Any] | None = None,
        ts_unit: str = "ms",
        side_values: dict[str, str] | None = None,
    ) -> None:
        spec = FIELDS[record]
        unknown = sorted(set(paths) - set(spec["optional"]) - set(spec["required"]))
        if unknown:
            raise ValueError(
                f"unknown field(s) {unknown} for record = {record!r}; it maps: "
                f"{', '.join(spec['required'] + spec['optional'])}"
            )
        missing = [f for f in spec["required"] if f not in paths]
        if missing:
            raise ValueError(f"record = {record!r} needs a path for {missing}, e.g. price = 'p'")
        self.record, self.paths, self.match = record, dict(paths), dict(match or {})
        self.ts_decimals = TS_UNIT_DECIMALS[ts_unit]
        self.sides = {str(k).lower(): v for k, v in (side_values or {}).items()}
        # message value -> code, looked up per value in C (map over dict.get): the lower-case
        # spellings, their upper/title case, and JSON true/false for "true"/"false"
        self._side_codes: dict[Any, int] = {}
        for key, code in self.sides.items():
            for spelling in {key, key.upper(), key.title()}:
                self._side_codes[spelling] = ord(code)
            if key in ("true", "false"):
                self._side_codes[key == "true"] = ord(code)
        root = _Node()
        if record == "book_update" and not set(LEVELS) & set(paths):
            raise ValueError("record = 'book_update' needs bids and/or asks, e.g. bids = 'b'")
        for name, path in self.paths.items():
            root.add(_split(path), _LEVELS if name in LEVELS else _LEAF)
        for path in self.match:
            root.add(_split(path))
        self.struct = root.struct("Message")
        self._array = msgspec.json.Decoder(list[self.struct])
        self._one = msgspec.json.Decoder(self.struct)
        self._get = {f: attrgetter(root.getter(_split(p))) for f, p in self.paths.items()}
        self._match = [(attrgetter(root.getter(_split(p))), v) for p, v in self.match.items()]

    # -- parsing -----------------------------------------------------------------------------

    def _parse(self, messages: list[bytes]) -> tuple[list, np.ndarray, list]:
        """Structs for the messages that parse, their indices, and the rejected ones."""
        try:
            objs = self._array.decode(b"[" + b",".join(messages) + b"]")
            return objs, np.arange(len(objs)), []
        except msgspec.DecodeError:
            pass
        objs, rows, rejected = [], [], []
        for i, raw in enumerate(messages):
            try:
                objs.append(self._one.decode(raw))
                rows.append(i)
            except msgspec.DecodeError as exc:
                rejected.append((i, _MALFORMED, _text(f"{exc}: {raw[:24]!r}")))
        return objs, np.asarray(rows, dtype=np.int64), rejected

    def _column(self, objs: list, getter: attrgetter) -> list:
        try:
            return list(map(getter, objs))
        except AttributeError:  # a missing container on the path: None for that message
            return [_safe(getter, o) for o in objs]

    def decode(self, messages: list[bytes]) -> Columns:
        objs, rows, rejected = self._parse(messages)
        ignored = 0
        if self._match and objs:
            keep = np.ones(len(objs), dtype=bool)
            for getter, want in self._match:
                col = self._column(objs, getter)
                if col.count(want) != len(col):  # all match (one stream per socket): skip
                    keep &= np.fromiter(map(eq, col, repeat(want)), dtype=bool, count=len(col))
            ignored = int(len(objs) - keep.sum())
            if ignored:
                objs = [o for o, k in zip(objs, keep.tolist(), strict=True) if k]
                rows = rows[keep]
        values: dict[str, np.ndarray] = {}
        bad = np.zeros(len(objs), dtype=np.uint32)
        details: dict[int, bytes] = {}
        for name, getter in self._get.items():
            if name not in LEVELS:
                values[name] = self._convert(name, self._column(objs, getter), bad, details)
        if self.record == "book_update":
            return self._levels(objs, rows, values, bad, details, rejected, ignored)
        for k in np.flatnonzero(bad).tolist():
            rejected.append((int(rows[k]), int(bad[k]), details.get(k, b"")))
        ok = bad == 0
        return Columns(rows[ok], {n: v[ok] for n, v in values.items()}, rejected, ignored)

    def _levels(self, objs, rows, values, bad, details, rejected, ignored) -> Columns:
        """Depth diffs: one record per level, in message order (bids, then asks), ``F_LAST``
        on each message's last; a message with any bad level is dead-lettered whole (a book
        must not take half a message)."""
        parts = []
        for name, side in (("bids", ord("B")), ("asks", ord("A"))):
            if name not in self._get:
                continue
            col = self._column(objs, self._get[name])
            if None in col:  # a missing envelope on the path
                col = [b"[]" if c is None else c for c in col]
            owner, price, size, status = _scan(col)
            for k in np.flatnonzero(status).tolist():
                m = int(owner[k])
                if not bad[m]:
                    st = int(status[k])
                    which = "size" if st & SIZE_FLAG else "price"
                    st &= ~SIZE_FLAG
                    bad[m] = _BAD_LEVEL if st == SHAPE else FixedReason.of_status(st)
                    what = "not [price, size, ...]" if st == SHAPE else STATUS_TEXT.get(st, "?")
                    details[m] = _text(f"{name}.{which} of level {k}: {what}")
            parts.append((owner, price, size, np.full(len(owner), side, dtype=np.uint8)))
        for k in np.flatnonzero(bad).tolist():
            rejected.append((int(rows[k]), int(bad[k]), details.get(k, b"")))
        owner = np.concatenate([p[0] for p in parts])
        order = np.argsort(owner, kind="stable")
        owner = owner[order]
        keep = bad[owner] == 0
        order, owner = order[keep], owner[keep]
        out = {n: v[owner] for n, v in values.items()}
        out["price"] = np.concatenate([p[1] for p in parts])[order]
        out["size"] = np.concatenate([p[2] for p in parts])[order]
        out["side"] = np.concatenate([p[3] for p in parts])[order]
        last = np.ones(len(owner), dtype=bool)
        last[:-1] = owner[1:] != owner[:-1]
        out["flags"] = np.where(last, F_LAST, 0).astype(np.uint8)
        return Columns(rows[owner], out, rejected, ignored)

    # -- conversions -------------------------------------------------------------------------

    def _convert(self, name: str, col: list, bad: np.ndarray, details: dict) -> np.ndarray:
        n = len(col)
        if n == 0:
            return np.zeros(0, dtype=np.uint8 if name == "side" else np.int64)
        if name == "symbol":
            arr = np.array(["" if v is None else str(v) for v in col] if None in col else col,
                           dtype="S")  # fmt: skip
            self._flag(arr == b"", bad, details, name, arr, _MISSING_FIELD)
            return arr
        if name == "side":
            return self._sides(col, bad, details)
        decimals = 9 if name in PRICE else 8 if name in SIZE else self.ts_decimals
        parsed = _parse_strings(col, decimals)
        if parsed is not None:  # all strings: parsed in place in one joined buffer
            values, status = parsed
            for k in np.flatnonzero(status).tolist():
                if not bad[k]:
                    bad[k] = FixedReason.of_status(int(status[k]))
                    details[k] = detail(name, col[k], int(status[k]))
            return values
        text = np.array(col, dtype="S")  # numbers (their shortest decimal text), None
        missing = text == b"None"
        values, status = parse_decimals(text, decimals)
        self._flag(missing, bad, details, name, text, _MISSING_FIELD)
        for k in np.flatnonzero((status != 0) & ~missing).tolist():
            if not bad[k]:
                bad[k] = FixedReason.of_status(int(status[k]))
                details[k] = detail(name, text[k], int(status[k]))
        return values

    def _sides(self, col: list, bad: np.ndarray, details: dict) -> np.ndarray:
        side = np.fromiter(map(self._side_codes.get, col, repeat(_NO_SIDE, len(col))),
                           dtype=np.uint8, count=len(col))  # fmt: skip
        unknown = side == _NO_SIDE
        if unknown.any():
            text = np.array([str(v) for v in col], dtype=object)
            self._flag(unknown, bad, details, "side", text, _BAD_SIDE)
        return side

    @staticmethod
    def _flag(mask, bad, details, name, text, reason) -> None:
        for k in np.flatnonzero(mask).tolist():
            if not bad[k]:
                bad[k] = reason
                value = text[k]
                if isinstance(value, bytes):
                    value = value.decode("latin-1")
                what = "missing" if value in ("None", "none", "") else "not a known side"
                details[k] = _text(f"{name}={value!r}: {what}")


def _scan(col: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw level arrays (one per message) -> per level: message index, price, size, status."""
    buf = b"".join(col)
    lengths = np.fromiter(map(len, col), dtype=np.int64, count=len(col))
    ends = np.cumsum(lengths)
    cap = buf.count(b"[") + buf.count(b",") + 1
    price = np.zeros(cap, dtype=np.int64)
    size = np.zeros(cap, dtype=np.int64)
    owner = np.zeros(cap, dtype=np.int64)
    status = np.zeros(cap, dtype=np.uint8)
    n = scan_levels(np.frombuffer(buf, dtype=np.uint8), ends - lengths, ends, 9, 8, price, size,
                    owner, status)  # fmt: skip
    return owner[:n], price[:n], size[:n], status[:n]


def _parse_strings(col: list, decimals: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Decimal strings -> (values, status) through one joined buffer and span offsets (no
    per-string numpy conversion); ``None`` when ``col`` holds anything but ASCII strings."""
    try:
        joined = "".join(col).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return None
    lengths = np.fromiter(map(len, col), dtype=np.int64, count=len(col))
    ends = np.cumsum(lengths)
    values = np.zeros(len(col), dtype=np.int64)
    status = np.zeros(len(col), dtype=np.uint8)
    parse_spans(np.frombuffer(joined, dtype=np.uint8), ends - lengths, ends, decimals, values,
                status)  # fmt: skip
    return values, status


def _safe(getter: attrgetter, obj: Any) -> Any:
    try:
        return getter(obj)
    except AttributeError:
        return None


def _text(s: str) -> bytes:
    return s.encode("utf-8", "replace")[:64]
