"""Records <-> MongoDB documents, in bulk: a whole batch becomes BSON bytes through numpy.

Every record of one schema maps to a BSON document of the same layout, so the encoder builds
that layout once per (schema, stream) as a packed numpy structured dtype over a byte template --
the int32 document length, then per element its type byte, its C-string name and its value
slot, then the trailing 0 -- copies the template into ``n`` rows, assigns each value column at
once and cuts the bytes into :class:`bson.RawBSONDocument` s for ``insert_many``. No dict is built
per record; the one Python step per record left is wrapping its bytes slice (pymongo's API takes
one object per document).

Document layout (the record schema's field names, except the two header fields noted)::

    stream       string      the topic ("md.trades"); with offset, the document's key
    offset       int64       the record's stream offset
    ts_event     date        venue time, milliseconds (the time-series timeField)
    ts_event_ns  int64       venue time, exact UNIX nanoseconds (what reads use)
    ts_recv      int64       UNIX nanoseconds
    seq          int64       uint64 stored as its two's-complement int64 (exact both ways)
    instrument   int64       instrument_id (the time-series metaField)
    <int64>      int64       prices (1e-9) and quantities (1e-8) as their exact raw integers
    <name>_dec   decimal128  the same price or quantity as an exact decimal ("101.250000000"),
                             for queries and aggregations in MongoDB (``decimals = true``)
    <uint64>     int64       two's complement, as seq; uint32 -> int64; small ints -> int32
    <float>      double
    <bytes Sn>   string      trailing NULs trimmed; binary (subtype 0) for a value that is not
                             plain ASCII (BSON strings must be UTF-8)
    <u1 array>   binary      the whole fixed-size array (raw_chunk data)
    <array>      array       of the element type (mbp10 levels), decimals alike

Decimal128 is cheap here: an int64 with a fixed number of decimals is a BID-encoded decimal128
whose low 64 bits are the magnitude and whose high 64 bits are a constant (sign, biased exponent),
two vectorised stores per field. The raw integer stays the field's own name because it is what
round trips (and what ``hftagg.read`` returns); the decimal is for people querying MongoDB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from bson.raw_bson import DEFAULT_RAW_BSON_OPTIONS, RawBSONDocument

from hftagg.records.fixed import field_decimals
from hftagg.records.schema import Schema

__all__ = ["DocumentLayout", "documents_as_dicts", "records_from_documents"]


class _BuiltDocument(RawBSONDocument):
    """A ``RawBSONDocument`` over bytes this module built, so known to be one whole document:
    ``RawBSONDocument.__init__`` parses each one's length again (about half its cost, measured),
    this sets the same three slots without it. Used only if it behaves exactly like the parent
    (checked once, below); otherwise ``RawBSONDocument`` itself."""

    __slots__ = ()

    def __init__(self, raw: bytes) -> None:  # noqa: D107 - see the class docstring
        self._RawBSONDocument__raw = raw
        self._RawBSONDocument__inflated_doc = None
        self._RawBSONDocument__codec_options = DEFAULT_RAW_BSON_OPTIONS


def _document_class() -> type[RawBSONDocument]:
    import bson

    sample = bson.encode({"stream": "s", "offset": 1})
    try:
        built = _BuiltDocument(sample)
        if built.raw == sample and dict(built) == {"stream": "s", "offset": 1}:
            if bson.encode(built) == sample:
                return _BuiltDocument
    except Exception:  # a pymongo whose RawBSONDocument keeps other slots: the public class
        pass
    return RawBSONDocument


_RAW_DOCUMENT = _document_class()

# BSON element types
_DOUBLE, _STRING, _DOCUMENT, _ARRAY, _BINARY = 0x01, 0x02, 0x03, 0x04, 0x05
_DATE, _INT32, _INT64, _DECIMAL128 = 0x09, 0x10, 0x12, 0x13

_DECIMAL_EXPONENT_BIAS = 6176
_NS_PER_MS = 1_000_000

#: record field -> document field, where they differ
RENAMED = {"instrument_id": "instrument", "ts_event": "ts_event_ns"}


def _cstring(name: str) -> bytes:
    raw = name.encode()
    if b"\x00" in raw:
        raise ValueError(f"BSON element name {name!r} contains a NUL byte")
    return raw + b"\x00"


@dataclass
class _Slot:
    name: str  # field name in the packed dtype
    fmt: Any  # numpy format of the value
    offset: int
    fill: Callable[[np.ndarray, int], Any]  # (batch, first offset) -> values for the column


@dataclass
class _Text:
    """A variable-length string (or binary) element: ``width`` bytes of ``source`` at most."""

    type_offset: int
    length_offset: int
    data_offset: int  # the width + 1 bytes after the int32 length
    width: int
    source: str


class _Builder:
    def __init__(self) -> None:
        self.template = bytearray(4)  # int32 document length, filled per record
        self.slots: list[_Slot] = []
        self.texts: list[_Text] = []

    def const(self, raw: bytes) -> None:
        self.template += raw

    def element(self, type_byte: int, name: str) -> None:
        self.const(bytes([type_byte]) + _cstring(name))

    def slot(self, fmt: Any, fill: Callable[[np.ndarray, int], Any]) -> None:
        offset = len(self.template)
        self.template += bytes(np.dtype(fmt).itemsize)
        self.slots.append(_Slot(f"v{len(self.slots)}", fmt, offset, fill))


def _scalar_type(dtype: np.dtype) -> tuple[int, str]:
    """The BSON type and the numpy format that stores a scalar of ``dtype``."""
    if dtype.kind == "f":
        return _DOUBLE, "<f8"
    if dtype.kind in "iu":
        if dtype.itemsize <= 2 or (dtype.kind == "i" and dtype.itemsize == 4):
            return _INT32, "<i4"
        return _INT64, "<i8"
    if dtype.kind == "b":
        return _INT32, "<i4"
    raise TypeError(f"no BSON mapping for numpy type {dtype}")


def _offsets(batch: np.ndarray, first: int | np.ndarray) -> np.ndarray:
    """Each record's stream offset: consecutive from ``first``, or given one per record."""
    if isinstance(first, np.ndarray):
        return first
    return np.arange(first, first + len(batch), dtype=np.int64)


def _as_int64(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint64:
        return values.view(np.int64)
    return values


def _decimal_words(values: np.ndarray, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """Low and high uint64 words of the BID decimal128 ``values * 10**-decimals`` (exact)."""
    low = np.abs(values).view(np.uint64)  # abs(INT64_MIN) wraps to itself: 2**63 as uint64
    high = np.where(values < 0, np.uint64(1 << 63), np.uint64(0))
    high |= np.uint64((_DECIMAL_EXPONENT_BIAS - decimals) << 49)
    return low, high


class DocumentLayout:
    """The BSON layout of one schema's records on one stream; :meth:`encode` a batch."""

    def __init__(self, schema: Schema, stream: str, *, decimals: bool = True) -> None:
        self.schema, self.stream, self.decimals = schema, stream, decimals
        b = _Builder()
        raw_stream = stream.encode()
        b.element(_STRING, "stream")
        b.const(len(raw_stream + b"\0").to_bytes(4, "little") + raw_stream + b"\0")
        b.element(_INT64, "offset")
        b.slot("<i8", _offsets)
        for name in schema.dtype.names:
            self._field(b, name, schema.dtype.fields[name][0])
        b.const(b"\x00")
        self.size = len(b.template)  # the largest document (texts at full width)
        self._template = np.frombuffer(bytes(b.template), dtype=np.uint8)
        self._slots, self._texts = b.slots, b.texts
        self._packed = np.dtype(
            {
                "names": [s.name for s in b.slots],
                "formats": [s.fmt for s in b.slots],
                "offsets": [s.offset for s in b.slots],
                "itemsize": self.size,
            }
        )

    def _field(self, b: _Builder, name: str, dtype: np.dtype) -> None:
        if name == "ts_event":
            b.element(_DATE, "ts_event")
            b.slot("<i8", lambda batch, first: np.floor_divide(batch["ts_event"], _NS_PER_MS))
            b.element(_INT64, "ts_event_ns")
            b.slot("<i8", lambda batch, first: batch["ts_event"])
            return
        doc_name = RENAMED.get(name, name)
        base = dtype.base
        if base.kind == "S":
            self._text(b, doc_name, name, base.itemsize)
        elif dtype.shape and base == np.dtype("u1"):
            b.element(_BINARY, doc_name)
            size = int(np.prod(dtype.shape))
            b.const(size.to_bytes(4, "little") + b"\x00")
            b.slot(("u1", (size,)), lambda batch, first, n=name: batch[n].reshape(len(batch), -1))
        elif dtype.shape:
            self._array(b, doc_name, name, dtype)
        else:
            type_byte, fmt = _scalar_type(base)
            b.element(type_byte, doc_name)
            b.slot(fmt, lambda batch, first, n=name: _as_int64(batch[n]))
        decimals = field_decimals(name, dtype) if self.decimals else None
        if decimals is not None:
            self._decimal(b, f"{doc_name}_dec", name, dtype, decimals)

    def _array(self, b: _Builder, doc_name: str, name: str, dtype: np.dtype) -> None:
        type_byte, fmt = _scalar_type(dtype.base)
        count = int(np.prod(dtype.shape))
        body = sum(1 + len(str(i)) + 1 + np.dtype(fmt).itemsize for i in range(count)) + 5
        b.element(_ARRAY, doc_name)
        b.const(body.to_bytes(4, "little"))
        for i in range(count):
            b.element(type_byte, str(i))
            b.slot(
                fmt,
                lambda batch, first, n=name, i=i: _as_int64(batch[n].reshape(len(batch), -1)[:, i]),
            )
        b.const(b"\x00")

    def _decimal(self, b: _Builder, doc_name: str, name: str, dtype: np.dtype, decimals: int):
        def words(batch: np.ndarray, part: int, i: int | None = None) -> np.ndarray:
            values = batch[name] if i is None else batch[name].reshape(len(batch), -1)[:, i]
            return _decimal_words(values, decimals)[part]

        if not dtype.shape:
            b.element(_DECIMAL128, doc_name)
            b.slot("<u8", lambda batch, first: words(batch, 0))
            b.slot("<u8", lambda batch, first: words(batch, 1))
            return
        count = int(np.prod(dtype.shape))
        body = sum(1 + len(str(i)) + 1 + 16 for i in range(count)) + 5
        b.element(_ARRAY, doc_name)
        b.const(body.to_bytes(4, "little"))
        for i in range(count):
            b.element(_DECIMAL128, str(i))
            b.slot("<u8", lambda batch, first, i=i: words(batch, 0, i))
            b.slot("<u8", lambda batch, first, i=i: words(batch, 1, i))
        b.const(b"\x00")

    @staticmethod
    def _text(b: _Builder, doc_name: str, name: str, width: int) -> None:
        type_offset = len(b.template)
        b.element(_STRING, doc_name)
        length_offset = len(b.template)
        b.const(bytes(4 + width + 1))
        b.texts.append(_Text(type_offset, length_offset, length_offset + 4, width, name))

    # -- encoding ----------------------------------------------------------------------------------

    def encode(self, batch: np.ndarray, first_offset: int | np.ndarray) -> tuple[bytes, np.ndarray]:
        """The BSON bytes of every record of ``batch`` back to back, and the ``n + 1``
        document boundaries (record ``i`` is ``data[bounds[i]:bounds[i + 1]]``).
        ``first_offset``: the first record's stream offset, or an array of every record's."""
        n = len(batch)
        rows = np.empty((n, self.size), dtype=np.uint8)
        rows[:] = self._template
        packed = rows.reshape(-1).view(self._packed)
        for slot in self._slots:
            packed[slot.name] = slot.fill(batch, first_offset)
        sizes = np.full(n, self.size, dtype=np.int64)
        if not self._texts:
            rows[:, :4] = np.frombuffer(np.int32(self.size).tobytes(), dtype=np.uint8)
            return rows.tobytes(), np.arange(0, (n + 1) * self.size, self.size, dtype=np.int64)
        keep = np.ones((n, self.size), dtype=bool)
        for text in self._texts:
            sizes -= self._put_text(rows, keep, batch[text.source], text)
        rows[:, :4] = sizes.astype("<i4").view(np.uint8).reshape(n, 4)
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(sizes, out=bounds[1:])
        return rows[keep].tobytes(), bounds

    @staticmethod
    def _put_text(rows: np.ndarray, keep: np.ndarray, values: np.ndarray, text: _Text):
        """Write a text element per record; returns the bytes each record saves on its width."""
        n, w = len(values), text.width
        data = np.frombuffer(values.tobytes(), dtype=np.uint8).reshape(n, w)
        nonzero = data != 0
        lengths = np.where(nonzero.any(axis=1), w - np.argmax(nonzero[:, ::-1], axis=1), 0)
        binary = (data >= 0x80).any(axis=1)  # not plain ASCII: binary subtype 0, not a string
        start = text.data_offset
        rows[:, start : start + w] = data  # string: data, then NUL (row byte start + w is 0)
        if binary.any():
            rows[binary, text.type_offset] = _BINARY
            rows[binary, start] = 0  # subtype
            rows[binary, start + 1 : start + 1 + w] = data[binary]
        length_field = np.where(binary, lengths, lengths + 1).astype("<i4")
        rows[:, text.length_offset : text.length_offset + 4] = length_field.view(np.uint8).reshape(
            n, 4
        )
        keep[:, start : start + w + 1] = np.arange(w + 1) < (lengths + 1)[:, None]
        return w - lengths

    def raw_documents(
        self, batch: np.ndarray, first_offset: int | np.ndarray
    ) -> list[RawBSONDocument]:
        """``batch`` as ``RawBSONDocument`` s ready for ``insert_many``."""
        data, bounds = self.encode(batch, first_offset)
        if not self._texts:
            size = self.size
            return [_RAW_DOCUMENT(data[i : i + size]) for i in range(0, len(data), size)]
        edges = bounds.tolist()
        return [_RAW_DOCUMENT(data[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def dict_documents(self, batch: np.ndarray, first_offset: int) -> list[dict[str, Any]]:
        """The same documents built as one dict per record (the slow path the raw one is
        measured against; also what the tests compare the raw bytes with)."""
        return documents_as_dicts(self, batch, first_offset)


def documents_as_dicts(
    layout: DocumentLayout, batch: np.ndarray, first_offset: int
) -> list[dict[str, Any]]:
    """One dict per record with the layout's fields and types (bson encodes it to the same
    bytes as :meth:`DocumentLayout.encode`)."""
    import datetime

    from bson.binary import Binary
    from bson.decimal128 import Decimal128
    from bson.int64 import Int64

    from hftagg.records.fixed import from_fixed

    unix_epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    names = layout.schema.dtype.names
    out = []
    for i, record in enumerate(batch.tolist()):
        doc: dict[str, Any] = {
            "stream": layout.stream,
            "offset": Int64(first_offset + i),
        }
        for name, value in zip(names, record, strict=True):
            dtype = layout.schema.dtype.fields[name][0]
            if name == "ts_event":
                ms = value // _NS_PER_MS
                doc["ts_event"] = unix_epoch + datetime.timedelta(milliseconds=ms)
                doc["ts_event_ns"] = Int64(value)
                continue
            key = RENAMED.get(name, name)
            doc[key] = _python_value(value, dtype, Int64, Binary)
            decimals = field_decimals(name, dtype) if layout.decimals else None
            if decimals is not None:
                if dtype.shape:
                    doc[f"{key}_dec"] = [Decimal128(from_fixed(v, decimals)) for v in value]
                else:
                    doc[f"{key}_dec"] = Decimal128(from_fixed(value, decimals))
        out.append(doc)
    return out


def _python_value(value: Any, dtype: np.dtype, Int64: Any, Binary: Any) -> Any:  # noqa: N803
    base = dtype.base
    if base.kind == "S":
        raw = bytes(value)
        return raw.decode() if raw.isascii() else Binary(raw)
    if dtype.shape and base == np.dtype("u1"):
        return Binary(np.asarray(value, dtype=np.uint8).tobytes())
    if dtype.shape:
        return [_python_value(v, base, Int64, Binary) for v in np.asarray(value).ravel().tolist()]
    type_byte, _ = _scalar_type(base)
    if type_byte == _INT64:
        return Int64(np.array(value, dtype=base).astype(np.int64) if base == np.uint64 else value)
    return value


# -- reading back ----------------------------------------------------------------------------------


def records_from_documents(documents: Iterable[Any], schema: Schema) -> np.ndarray:
    """Records of ``schema`` from documents of the layout above (any field order; the
    ``_id`` and decimal fields are ignored), in the order given."""
    docs = list(documents)
    out = schema.empty(len(docs))
    for name in schema.dtype.names:
        dtype = schema.dtype.fields[name][0]
        key = RENAMED.get(name, name)
        column = [d[key] for d in docs]
        base = dtype.base
        if base.kind == "S":
            out[name] = [v.encode() if isinstance(v, str) else bytes(v) for v in column]
        elif dtype.shape and base == np.dtype("u1"):
            out[name] = np.frombuffer(b"".join(bytes(v) for v in column), dtype=np.uint8).reshape(
                (len(docs), *dtype.shape)
            )
        elif base == np.uint64:
            out[name] = np.array(column, dtype=np.int64).view(np.uint64).reshape(out[name].shape)
        else:
            out[name] = np.array(column, dtype=base).reshape(out[name].shape)
    return out
