"""How a record schema becomes a PostgreSQL table, and batches become binary COPY rows in bulk.

Type mapping (the table keeps every value exact; the ``<table>_v`` view adds readable forms):

=====================  ====================  =================================================
record field           table column          in the view ``<table>_v``
=====================  ====================  =================================================
int64 price (1e-9)     ``bigint`` (units)    ``numeric`` = units / 1e9, exact
int64 quantity (1e-8)  ``bigint`` (units)    ``numeric`` = units / 1e8, exact
``ts_event/ts_recv``   ``bigint`` (ns UTC)   ``timestamptz`` (``*_time``; PostgreSQL keeps µs)
other int64, int32     ``bigint``, ``int``   the same
uint32                 ``bigint``            the same
uint64 (``seq``, ids)  ``bigint``            ``numeric`` (the same 64 bits: values >= 2**63
                       (same 64 bits)        read negative as bigint, right in the view)
uint8/int8/int16       ``smallint``          the same
uint16                 ``integer``           the same
float64 / float32      ``double precision``  the same
                       / ``real``
bytes ``S<n>``         ``bytea`` (n bytes)   ``text`` (trailing NULs cut)
array ``(k,)`` of x    k columns             the same
                       ``name_00 .. name_<k-1>`` (mbp10's 10 levels per side)
``uint8 (k,)``         ``bytea`` (k bytes)   the same (raw_chunk's data)
=====================  ====================  =================================================

Why bigint plus a view and not ``numeric`` columns: measured here (400 k trades, PostgreSQL 18,
server side only: ``INSERT ... SELECT`` from a staged copy), rows with ``numeric(28,9)`` price
and ``numeric(28,8)`` size went in at 375-420 k rows/s against 480-510 k with bigint (15-25 %
slower), in about the same space (71 vs 77 MB: short numerics are compact). On top of that a
binary COPY of numeric needs the client to build PostgreSQL's base-10000 digit encoding per
value. Bigint units are exact, copy as fixed 8-byte fields, and read back bit for bit; the view
gives exact decimals to whoever queries by hand.

Every table starts with the key ``stream`` (``smallint``, an id from ``hftagg_streams``) and
``stream_offset`` (``bigint``): rows are keyed by (stream, offset), which is what makes replays
idempotent (see ``hftagg.builtins.storage._external``).

The binary COPY stream is built for a whole batch at once: a packed big-endian numpy
structured dtype mirrors PostgreSQL's row layout (``int16`` field count, then per field an
``int32`` length and the value), so filling it is one numpy assignment per column and the
buffer goes to ``COPY ... FROM STDIN (FORMAT BINARY)`` as is. Every column has a fixed width and
no NULLs, so reading back (``COPY ... TO STDOUT (FORMAT BINARY)``) is ``numpy.frombuffer`` with
the same dtype.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from hftagg.errors import SchemaError
from hftagg.records.fixed import PRICE_DECIMALS, QTY_DECIMALS, field_decimals
from hftagg.records.schema import Schema

__all__ = ["Column", "TableLayout", "COPY_HEADER", "COPY_TRAILER"]

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
TIME_FIELDS = ("ts_event", "ts_recv")

# numpy base type -> (PostgreSQL type, big-endian wire dtype)
_SCALARS: dict[str, tuple[str, str]] = {
    "i1": ("smallint", ">i2"),
    "u1": ("smallint", ">i2"),
    "i2": ("smallint", ">i2"),
    "u2": ("integer", ">i4"),
    "i4": ("integer", ">i4"),
    "u4": ("bigint", ">i8"),
    "i8": ("bigint", ">i8"),
    "u8": ("bigint", ">i8"),
    "f4": ("real", ">f4"),
    "f8": ("double precision", ">f8"),
}


@dataclass(frozen=True)
class Column:
    """One table column: its name, SQL type, wire dtype, and where its values come from."""

    name: str
    sql: str
    wire: str  # big-endian numpy dtype of the value on the COPY wire
    field: str | None  # the record field (None: the stream key columns)
    index: int | None = None  # element of an array field
    kind: str = ""  # "price", "qty", "time", "uint64", "bytes" (how the view shows it)

    @property
    def view_expr(self) -> str:
        q = f'"{self.name}"'
        if self.kind == "price":
            return f"({q}::numeric / 1e{PRICE_DECIMALS})::numeric(28, {PRICE_DECIMALS}) AS {q}"
        if self.kind == "qty":
            return f"({q}::numeric / 1e{QTY_DECIMALS})::numeric(28, {QTY_DECIMALS}) AS {q}"
        if self.kind == "uint64":
            return f"CASE WHEN {q} < 0 THEN {q}::numeric + 18446744073709551616 ELSE {q}::numeric END AS {q}"
        if self.kind == "bytes":
            return f"encode(rtrim({q}, '\\x00'::bytea), 'escape') AS {q}"
        if self.kind == "time":
            return f'{q}, to_timestamp({q} / 1e9) AS "{self.name}_time"'
        return q


def _field_column(name: str, dtype: np.dtype, index: int | None = None) -> Column:
    base = dtype.base if dtype.shape else dtype
    col = name if index is None else f"{name}_{index:02d}"
    if base.kind == "S":
        return Column(col, "bytea", f"S{base.itemsize}", name, index, "bytes")
    key = f"{base.kind}{base.itemsize}"
    if key not in _SCALARS:
        raise SchemaError(
            f"field {name!r} of type {base} has no PostgreSQL mapping; supported: "
            f"{', '.join(sorted(_SCALARS))}, S<n> bytes and arrays of them"
        )
    sql, wire = _SCALARS[key]
    kind = ""
    decimals = field_decimals(name, base)
    if name in TIME_FIELDS:
        kind = "time"
    elif decimals == PRICE_DECIMALS:
        kind = "price"
    elif decimals == QTY_DECIMALS:
        kind = "qty"
    elif key == "u8":
        kind = "uint64"
    return Column(col, sql, wire, name, index, kind)


def columns_for(schema: Schema) -> list[Column]:
    """The table's columns for ``schema``: the key, then every field (arrays flattened)."""
    cols = [
        Column("stream", "smallint", ">i2", None),
        Column("stream_offset", "bigint", ">i8", None),
    ]
    for name in schema.dtype.names:
        dtype = schema.dtype.fields[name][0]
        if dtype.shape and dtype.base == np.dtype("u1") and len(dtype.shape) == 1:
            cols.append(Column(name, "bytea", f"S{dtype.shape[0]}", name, None, ""))
        elif dtype.shape:
            if len(dtype.shape) != 1:
                raise SchemaError(f"field {name!r}: only one-dimensional arrays map to columns")
            cols += [_field_column(name, dtype, i) for i in range(dtype.shape[0])]
        else:
            cols.append(_field_column(name, dtype))
    return cols


class TableLayout:
    """The columns of one record schema's table and its binary COPY row dtype."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.columns = columns_for(schema)
        fields: list[tuple[str, str]] = [("nfields", ">i2")]
        for i, col in enumerate(self.columns):
            fields += [(f"l{i}", ">i4"), (f"v{i}", col.wire)]
        self.wire = np.dtype(fields)  # packed: no alignment padding, as on the wire
        self._lengths = np.array(
            [np.dtype(col.wire).itemsize for col in self.columns], dtype=np.int32
        )
        template = np.zeros(1, dtype=self.wire)
        template["nfields"] = len(self.columns)
        for i, n in enumerate(self._lengths):
            template[f"l{i}"] = n
        self._template = template.view(np.uint8)
        self._buffer = np.empty(0, dtype=self.wire)

    def _rows(self, n: int) -> np.ndarray:
        """``n`` rows with the field count and lengths filled in. The buffer is reused from
        batch to batch (those bytes never change), so only the values are written each time:
        callers must be done with the previous result (COPY sends it synchronously)."""
        if n > len(self._buffer):
            capacity = max(n, 2 * len(self._buffer), 1024)
            buffer = np.empty(capacity, dtype=self.wire)
            buffer.view(np.uint8).reshape(capacity, -1)[:] = self._template  # broadcast a row
            self._buffer = buffer
        return self._buffer[:n]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def encode(self, records: np.ndarray, stream: int, first_offset: int) -> np.ndarray:
        """The COPY rows for ``records`` (header and trailer not included): a view of a buffer
        the next call reuses."""
        n = len(records)
        out = self._rows(n)
        out["v0"] = stream
        out["v1"] = np.arange(first_offset, first_offset + n, dtype=np.int64)
        for i, col in enumerate(self.columns[2:], start=2):
            src = records[col.field]
            if col.index is not None:
                src = src[:, col.index]
            elif src.ndim == 2:  # a uint8 array stored as bytea
                src = np.ascontiguousarray(src).view(col.wire).reshape(n)
            out[f"v{i}"] = src
        return out

    def copy_buffer(self, records: np.ndarray, stream: int, first_offset: int) -> bytes:
        """A whole binary COPY stream for ``records``."""
        rows = self.encode(records, stream, first_offset)
        return COPY_HEADER + rows.tobytes() + COPY_TRAILER  # tobytes: a copy, safe to keep

    def decode(self, data: bytes | memoryview) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Parse a binary COPY stream of all this layout's columns back into
        ``(records, stream, stream_offset)``."""
        body = memoryview(data)[len(COPY_HEADER) : len(data) - len(COPY_TRAILER)]
        rows = np.frombuffer(body, dtype=self.wire)
        if len(rows) and (rows["nfields"] != len(self.columns)).any():
            raise SchemaError("a COPY row has an unexpected field count (a NULL or another table?)")
        records = np.zeros(len(rows), dtype=self.schema.dtype)
        for i, col in enumerate(self.columns[2:], start=2):
            values = rows[f"v{i}"]
            if col.index is not None:
                records[col.field][:, col.index] = values
            elif records[col.field].ndim == 2:
                records[col.field] = (
                    np.ascontiguousarray(values).view(np.uint8).reshape(len(rows), -1)
                )
            else:
                records[col.field] = values
        return records, rows["v0"].astype(np.int16), rows["v1"].astype(np.int64)
