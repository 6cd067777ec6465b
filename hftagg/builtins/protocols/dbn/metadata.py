"""The DBN metadata header: the block before the first record.

Layout (little-endian; byte offsets from the start of the stream)::

    0   "DBN" + version (u8: 1, 2 or 3)
    4   u32  length of the rest of the metadata (records start at 8 + length)
    8   dataset        char[16]
    24  schema         u16  (0xFFFF: mixed schemas)
    26  start          u64  UNIX ns
    34  end            u64  (UNDEF_TIMESTAMP: open)
    42  limit          u64  (0: none)
    v1: 50 record_count u64, 58 stype_in u8, 59 stype_out u8, 60 ts_out u8, 47 reserved bytes
    v2+: 50 stype_in u8 (0xFF: mixed), 51 stype_out u8, 52 ts_out u8,
         53 symbol_cstr_len u16, 53 reserved bytes
    108 u32 schema_definition_length (0), then that many bytes
        symbols, partial, not_found: u32 count + count * char[symbol_cstr_len] each
        mappings: u32 count + count * (raw_symbol char[cstr_len], u32 interval count,
                  intervals of (start_date u32 YYYYMMDD, end_date u32, symbol char[cstr_len]))

In v1 ``symbol_cstr_len`` is 22; v2 and v3 write it (71). v3 pads the metadata to 8 bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hftagg.builtins.protocols.dbn.reasons import Reason
from hftagg.errors import DbnFormatError

__all__ = [
    "MAGIC",
    "SCHEMAS",
    "STYPES",
    "SUPPORTED_VERSIONS",
    "DbnFormatError",
    "DbnMetadata",
    "parse_metadata",
    "metadata_size",
]

MAGIC = b"DBN"
SUPPORTED_VERSIONS = (1, 2, 3)
MIXED_SCHEMA = 0xFFFF
_FIXED_END = 112  # through schema_definition_length
_V1_CSTR_LEN = 22

#: DBN schema ids (metadata ``schema``) and names.
SCHEMAS = (
    "mbo", "mbp-1", "mbp-10", "tbbo", "trades", "ohlcv-1s", "ohlcv-1m", "ohlcv-1h", "ohlcv-1d",
    "definition", "statistics", "status", "imbalance", "ohlcv-eod", "cmbp-1", "cbbo-1s",
    "cbbo-1m", "tcbbo", "bbo-1s", "bbo-1m",
)  # fmt: skip
#: DBN symbology types (``stype_in`` / ``stype_out``).
STYPES = (
    "instrument_id", "raw_symbol", "smart", "continuous", "parent", "nasdaq_symbol",
    "cms_symbol", "isin", "us_code", "bbg_comp_id", "bbg_comp_ticker", "figi", "figi_ticker",
)  # fmt: skip


@dataclass(frozen=True)
class DbnMetadata:
    """What a DBN file says about itself."""

    version: int
    dataset: str
    schema: str | None  # None: mixed schemas
    start: int
    end: int
    limit: int
    stype_in: str | None
    stype_out: str | None
    ts_out: bool
    symbol_cstr_len: int
    symbols: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    #: raw symbol -> [(start_date YYYYMMDD, end_date YYYYMMDD, mapped symbol)]
    mappings: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    record_count: int | None = None  # v1 only
    size: int = 0  # bytes from the start of the stream to the first record
    problems: list[str] = field(default_factory=list)  # what was wrong in the symbol section


def metadata_size(head: bytes) -> int | None:
    """Bytes the metadata occupies, from its first 8 bytes; ``None`` if fewer are given.

    Raises :class:`DbnFormatError` when the stream does not start with DBN's magic or the
    version is not 1, 2 or 3.
    """
    if len(head) < 8:
        if not MAGIC.startswith(bytes(head[:3])):
            raise DbnFormatError(Reason.BAD_MAGIC, f"not DBN: starts with {bytes(head[:4])!r}")
        return None
    if bytes(head[:3]) != MAGIC:
        raise DbnFormatError(
            Reason.BAD_MAGIC,
            f"not DBN: starts with {bytes(head[:4])!r}, expected b'DBN' "
            f"followed by the version (or a zstd frame)",
        )
    if head[3] not in SUPPORTED_VERSIONS:
        raise DbnFormatError(
            Reason.BAD_VERSION,
            f"DBN version {head[3]} is not supported; supported versions: 1, 2, 3",
        )
    (length,) = struct.unpack_from("<I", head, 4)
    return 8 + length


def _name(table: tuple[str, ...], code: int, none_code: int) -> str | None:
    if code == none_code:
        return None
    return table[code] if code < len(table) else f"unknown({code})"


class _Cursor:
    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, pos, end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise DbnFormatError(
                Reason.BAD_METADATA,
                f"metadata ends at byte {self.end} but a field needs bytes "
                f"{self.pos}..{self.pos + n}",
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def cstr(self, n: int) -> str:
        return self.take(n).split(b"\0", 1)[0].decode("utf-8", "replace")

    def strings(self, n: int) -> list[str]:
        count = self.u32()
        self.check_count(count, n)
        return [self.cstr(n) for _ in range(count)]

    def check_count(self, count: int, each: int) -> None:
        if count * max(each, 1) > self.end - self.pos:
            raise DbnFormatError(
                Reason.BAD_METADATA, f"metadata count {count} does not fit in its length"
            )


def parse_metadata(buf: bytes) -> DbnMetadata:
    """Parse the metadata at the start of ``buf`` (which holds at least ``metadata_size`` bytes).

    Raises :class:`DbnFormatError` (reason ``BAD_MAGIC``, ``BAD_VERSION`` or ``BAD_METADATA``).
    """
    size = metadata_size(buf[:8])
    if size is None or len(buf) < size:
        raise DbnFormatError(Reason.TRUNCATED, "the stream ends inside the DBN metadata")
    if size < _FIXED_END:
        raise DbnFormatError(
            Reason.BAD_METADATA, f"metadata length {size - 8} is shorter than DBN's fixed part"
        )
    version = buf[3]
    dataset = bytes(buf[8:24]).split(b"\0", 1)[0].decode("utf-8", "replace")
    schema, start, end, limit = struct.unpack_from("<HQQQ", buf, 24)
    record_count = None
    if version == 1:
        (record_count,) = struct.unpack_from("<Q", buf, 50)
        stype_in, stype_out, ts_out = buf[58], buf[59], buf[60]
        cstr_len = _V1_CSTR_LEN
    else:
        stype_in, stype_out, ts_out = buf[50], buf[51], buf[52]
        (cstr_len,) = struct.unpack_from("<H", buf, 53)
    symbols: dict[str, list] = {"symbols": [], "partial": [], "not_found": []}
    mappings: dict[str, list[tuple[int, int, str]]] = {}
    problems: list[str] = []
    try:
        _symbol_section(_Cursor(buf, 108, size), cstr_len, symbols, mappings)
    except DbnFormatError as exc:  # the records can still be read: report and go on
        problems.append(str(exc))
    return DbnMetadata(
        version=version,
        dataset=dataset,
        schema=None if schema == MIXED_SCHEMA else _name(SCHEMAS, schema, MIXED_SCHEMA),
        start=start,
        end=end,
        limit=limit,
        stype_in=_name(STYPES, stype_in, 0xFF),
        stype_out=_name(STYPES, stype_out, 0xFF),
        ts_out=bool(ts_out),
        symbol_cstr_len=cstr_len,
        symbols=symbols["symbols"],
        partial=symbols["partial"],
        not_found=symbols["not_found"],
        mappings=mappings,
        record_count=record_count,
        size=size,
        problems=problems,
    )


def _symbol_section(cur: _Cursor, cstr_len: int, symbols: dict, mappings: dict) -> None:
    cur.take(cur.u32())  # schema definition (unused by DBN so far)
    for key in ("symbols", "partial", "not_found"):
        symbols[key] = cur.strings(cstr_len)
    count = cur.u32()
    cur.check_count(count, cstr_len + 4)
    for _ in range(count):
        raw = cur.cstr(cstr_len)
        intervals = cur.u32()
        cur.check_count(intervals, 8 + cstr_len)
        mappings[raw] = [(cur.u32(), cur.u32(), cur.cstr(cstr_len)) for _ in range(intervals)]
