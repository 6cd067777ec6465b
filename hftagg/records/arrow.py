"""Record arrays <-> Apache Arrow tables, exactly, in bulk.

:func:`to_arrow_table` turns a batch of any registered schema into a ``pyarrow.Table`` whose
columns carry the meaning of the fields (UTC times, exact decimals); :func:`from_arrow_table`
turns such a table (read back from Parquet, DuckDB, polars, ...) into the record array again.
The round trip is exact for every value a record can hold. Both directions are per column,
never per record: the decimal and timestamp columns are built over the int64 buffer itself.

Type mapping
------------
=============================== ================================== ==========================
record field                    Arrow type                         why
=============================== ================================== ==========================
``ts_*`` (int64 UNIX ns)        ``timestamp[ns, tz=UTC]``          venue/receive times
``*_ns`` other int64            ``duration[ns]``                   a length of time
                                                                   (``bar.timeframe_ns``)
price fields, int64 1e-9        ``decimal128(19, 9)``              exact: the int64 *is* the
                                                                   unscaled decimal value
quantity fields, int64 1e-8     ``decimal128(19, 8)``              exact, as above
other integers, floats          same-width native type             (``uint8`` side/action
                                                                   codes stay ASCII codes)
``S<n>`` bytes (alert text,     ``binary``, trailing NULs removed  what numpy shows for the
dead-letter detail)                                                value; NULs inside kept
``u1`` sub-array (raw chunk     ``fixed_size_binary(n)``           the raw bytes, zero-copy
data)
other sub-arrays (MBP-10        ``fixed_size_list<T>[n]`` of the   one column per field,
levels)                         mapped element type                levels in order
=============================== ================================== ==========================

Which fields are prices and quantities comes from :func:`hftagg.records.fixed.field_decimals`
(``PRICE_FIELDS``, ``QTY_FIELDS``), so a new schema that uses those names gets decimals too.
19 digits hold every int64 (``2**63 - 1`` has 19), so no value is ever out of range.

Nulls and sentinels: the record catalog defines no null value: every integer is a value
(``-2**63`` is unused by the fixed-point fields but still round-trips), floats keep NaN and the
infinities as such (never turned into nulls). Arrow columns produced here therefore never hold
nulls. Going back, a null in a float column reads as NaN; a null anywhere else cannot be
represented in a record and is refused with :class:`~hftagg.errors.SchemaError` naming the column
and how many nulls it holds, never replaced by a made-up value.

Going back, compatible but different types are cast exactly (pyarrow's safe cast): timestamps
of another unit or time zone, decimals of another precision or scale (refused when that would
round), narrower integers. The table's schema metadata names the record schema
(``hftagg.schema = b"trade@2"``) and every decimal field says its scale, so a Parquet file is
self-describing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from hftagg.errors import SchemaError
from hftagg.records.fixed import field_decimals
from hftagg.records.schema import Schema

__all__ = ["arrow_schema", "from_arrow_table", "to_arrow_table"]

#: digits of a decimal column: every int64 fits in 19
DECIMAL_PRECISION = 19

_NATIVE = {
    np.dtype("<i1"): pa.int8(),
    np.dtype("<i2"): pa.int16(),
    np.dtype("<i4"): pa.int32(),
    np.dtype("<i8"): pa.int64(),
    np.dtype("u1"): pa.uint8(),
    np.dtype("<u2"): pa.uint16(),
    np.dtype("<u4"): pa.uint32(),
    np.dtype("<u8"): pa.uint64(),
    np.dtype("<f4"): pa.float32(),
    np.dtype("<f8"): pa.float64(),
    np.dtype("?"): pa.bool_(),
}

_UTC_NS = pa.timestamp("ns", tz="UTC")
_DURATION_NS = pa.duration("ns")


def _scalar_type(name: str, base: np.dtype) -> pa.DataType:
    """The Arrow type of one element of field ``name`` (numpy ``base`` dtype, no shape)."""
    if base.kind == "S":
        return pa.binary()
    if base == np.dtype("<i8"):
        decimals = field_decimals(name, base)
        if decimals is not None:
            return pa.decimal128(DECIMAL_PRECISION, decimals)
        if name.startswith("ts_"):
            return _UTC_NS
        if name.endswith("_ns"):
            return _DURATION_NS
    try:
        return _NATIVE[base]
    except KeyError:
        raise SchemaError(
            f"field {name!r} has dtype {base}, which has no Arrow mapping; use one of "
            f"{sorted(str(d) for d in _NATIVE)} or S<n> bytes"
        ) from None


def _field_type(name: str, dtype: np.dtype) -> pa.DataType:
    if not dtype.shape:
        return _scalar_type(name, dtype)
    count = int(np.prod(dtype.shape))
    if dtype.base == np.dtype("u1"):
        return pa.binary(count)
    return pa.list_(_scalar_type(name, dtype.base), count)


def arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema :func:`to_arrow_table` produces for records of ``schema``."""
    fields = []
    for name in schema.dtype.names:
        dtype = schema.dtype.fields[name][0]
        arrow_type = _field_type(name, dtype)
        meta = None
        decimals = field_decimals(name, dtype)
        if decimals is not None:
            kind = "price" if decimals == 9 else "quantity"
            meta = {b"hftagg.fixed": f"{kind} int64 1e-{decimals}".encode()}
        fields.append(pa.field(name, arrow_type, nullable=False, metadata=meta))
    return pa.schema(fields, metadata={b"hftagg.schema": schema.key.encode()})


# --------------------------------------------------------------------------- records -> Arrow


def _decimal_from_int64(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """int64 unscaled values -> decimal128 array: each 16-byte little-endian slot is the int64
    and its sign extension (two's complement), so no value goes through float or Python."""
    pairs = np.empty((len(values), 2), dtype=np.int64)
    pairs[:, 0] = values
    np.right_shift(values, 63, out=pairs[:, 1])
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(pairs)])


def _binary_from_bytes(values: np.ndarray) -> pa.Array:
    """numpy ``S<n>`` -> Arrow binary, trailing NULs removed (numpy's reading of the value)."""
    width = values.dtype.itemsize
    n = len(values)
    mat = np.ascontiguousarray(values).view(np.uint8).reshape(n, width)
    nonzero = mat != 0
    # length = 1 + index of the last non-NUL byte (0 for an all-NUL value)
    lengths = np.where(nonzero.any(axis=1), width - np.argmax(nonzero[:, ::-1], axis=1), 0)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    keep = np.arange(width)[None, :] < lengths[:, None]
    data = mat[keep]
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _column(name: str, values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """One numpy column (1-D, or 2-D for a sub-array field) -> Arrow array of ``arrow_type``."""
    n = len(values)
    if pa.types.is_fixed_size_binary(arrow_type):
        flat = np.ascontiguousarray(values).reshape(-1)
        return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(flat)])
    if pa.types.is_fixed_size_list(arrow_type):
        flat = np.ascontiguousarray(values).reshape(-1)
        child = _column(name, flat, arrow_type.value_type)
        return pa.FixedSizeListArray.from_arrays(child, arrow_type.list_size)
    if pa.types.is_binary(arrow_type):
        return _binary_from_bytes(values)
    values = np.ascontiguousarray(values)
    if pa.types.is_decimal(arrow_type):
        return _decimal_from_int64(values, arrow_type)
    if pa.types.is_timestamp(arrow_type) or pa.types.is_duration(arrow_type):
        return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(values)])
    return pa.array(values, type=arrow_type)


def to_arrow_table(array: np.ndarray, schema: Schema) -> pa.Table:
    """A record array of ``schema`` as a ``pyarrow.Table`` (see the module's type mapping).

    Fixed-width columns share nothing with ``array`` once built (the decimal slots are twice
    as wide), but are built with numpy in one pass per column.
    """
    if array.dtype != schema.dtype:
        raise SchemaError(
            f"to_arrow_table: the array's dtype {array.dtype} is not schema {schema.key}'s "
            f"{schema.dtype}; pass the schema the records were written with"
        )
    target = arrow_schema(schema)
    columns = [_column(f.name, array[f.name], f.type) for f in target]
    return pa.Table.from_arrays(columns, schema=target)


# --------------------------------------------------------------------------- Arrow -> records


def _int64_from_decimal(chunk: pa.Array, name: str) -> np.ndarray:
    """decimal128 (already at the field's scale) -> the int64 unscaled values, refusing any
    value beyond int64 (the high word must be the low word's sign extension)."""
    buf = chunk.buffers()[1]
    pairs = np.frombuffer(buf, dtype=np.int64, count=2 * (chunk.offset + len(chunk)))
    pairs = pairs.reshape(-1, 2)[chunk.offset :]
    low = pairs[:, 0]
    bad = pairs[:, 1] != np.right_shift(low, 63)
    if bad.any():
        row = int(np.argmax(bad))
        raise SchemaError(
            f"column {name!r} row {row}: {chunk[row].as_py()} is beyond the field's int64 "
            f"fixed-point range ({int(bad.sum())} such values); it cannot be a record value"
        )
    return low


def _bytes_from_binary(chunk: pa.Array, name: str, width: int) -> np.ndarray:
    """Arrow binary -> numpy ``S<width>`` (NUL-padded), refusing values longer than ``width``."""
    n = len(chunk)
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32, count=chunk.offset + n + 1)
    offsets = offsets[chunk.offset :]
    lengths = np.diff(offsets)
    if n and lengths.max() > width:
        row = int(np.argmax(lengths > width))
        raise SchemaError(
            f"column {name!r} row {row}: {int(lengths[row])} bytes do not fit the field's "
            f"{width}; shorten the value"
        )
    data = chunk.buffers()[2]
    raw = (
        np.frombuffer(data, dtype=np.uint8, count=int(offsets[-1]))
        if data is not None
        else np.zeros(0, np.uint8)
    )
    out = np.zeros((n, width), dtype=np.uint8)
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(len(rows)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    out[rows, cols] = raw[offsets[0] : offsets[-1]]
    return out.view(f"S{width}").reshape(n)


def _cast(chunk: pa.Array, arrow_type: pa.DataType, name: str, schema: Schema) -> pa.Array:
    if chunk.type == arrow_type:
        return chunk
    try:
        return chunk.cast(arrow_type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(
            f"column {name!r} has type {chunk.type}; schema {schema.key} needs {arrow_type} "
            f"and the values do not convert exactly: {exc}"
        ) from exc


def _to_numpy(chunk: pa.Array, arrow_type: pa.DataType, name: str, dtype: np.dtype):
    """One Arrow chunk (type ``arrow_type``, no nulls but in floats) as numpy values of the
    field's ``dtype`` (shape ``(n,) + dtype.shape``)."""
    n = len(chunk)
    if pa.types.is_fixed_size_binary(arrow_type):
        size = arrow_type.byte_width
        flat = np.frombuffer(chunk.buffers()[1], dtype=np.uint8, count=(chunk.offset + n) * size)
        return flat[chunk.offset * size :].reshape((n,) + dtype.shape)
    if pa.types.is_fixed_size_list(arrow_type):
        child = _to_numpy(chunk.flatten(), arrow_type.value_type, name, dtype.base)
        return child.reshape((n,) + dtype.shape)
    if pa.types.is_binary(arrow_type):
        return _bytes_from_binary(chunk, name, dtype.itemsize)
    if pa.types.is_decimal(arrow_type):
        return _int64_from_decimal(chunk, name)
    if pa.types.is_timestamp(arrow_type) or pa.types.is_duration(arrow_type):
        raw = np.frombuffer(chunk.buffers()[1], dtype=np.int64, count=chunk.offset + n)
        return raw[chunk.offset :]
    if pa.types.is_floating(arrow_type) and chunk.null_count:
        chunk = chunk.fill_null(float("nan"))
    return chunk.to_numpy(zero_copy_only=False)


def _check_nulls(column: pa.ChunkedArray, arrow_type: pa.DataType, name: str) -> None:
    nulls = column.null_count
    if pa.types.is_fixed_size_list(arrow_type):
        nulls += sum(c.flatten().null_count for c in column.chunks)
        floating = pa.types.is_floating(arrow_type.value_type)
    else:
        floating = pa.types.is_floating(arrow_type)
    if nulls and not floating:
        raise SchemaError(
            f"column {name!r} holds {nulls} null(s); record fields have no null value "
            f"(only float fields read a null as NaN): fill or filter them before converting"
        )


def from_arrow_table(table: pa.Table, schema: Schema) -> np.ndarray:
    """A ``pyarrow.Table`` (as :func:`to_arrow_table` made it, or compatible: see the module
    docstring) back to a record array of ``schema``. Columns are matched by name; a missing
    or an extra column is an error naming it."""
    target = arrow_schema(schema)
    missing = [n for n in target.names if n not in table.column_names]
    extra = [n for n in table.column_names if n not in target.names]
    if missing or extra:
        raise SchemaError(
            f"table does not match schema {schema.key}: missing columns {missing}, "
            f"unexpected columns {extra}; expected exactly {target.names}"
        )
    out = np.zeros(table.num_rows, dtype=schema.dtype)
    for field in target:
        column = table.column(field.name)
        _check_nulls(column, field.type, field.name)
        start = 0
        for chunk in column.chunks:
            n = len(chunk)
            if n:
                chunk = _cast(chunk, field.type, field.name, schema)
                dtype = schema.dtype.fields[field.name][0]
                values = _to_numpy(chunk, field.type, field.name, dtype)
                out[field.name][start : start + n] = values
            start += n
    return out
