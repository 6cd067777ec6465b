"""SBE messages <-> hftagg record batches, for schemas whose messages mirror record schemas.

A message maps onto the record schema named by its name in snake_case (``Trade`` -> ``trade``,
``BookUpdate`` -> ``book_update``, ``Mbp10`` -> ``mbp10``); fields map by name. So any schema in
``protocols/`` that follows this convention decodes with no code. Fields whose SBE and record
dtypes are byte-identical are copied by the compiled ``gather_records`` pass straight from the
buffer into the output batches; any other mapped field (a different width or byte order) goes
through the generic gather and a numpy conversion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hftagg.builtins.protocols.sbe import kernels as K
from hftagg.builtins.protocols.sbe.codec import SbeCodec, Scan
from hftagg.records.schema import Schema

__all__ = ["RecordDecoder", "RecordEncoder", "record_name"]


def record_name(message_name: str) -> str:
    """``BookUpdate`` -> ``book_update``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", message_name).lower()


@dataclass
class _Map:
    slot: int
    schema: Schema
    fields: list[str]  # record fields the message provides
    exact: bool  # every mapped field is a byte copy


def _ops(src: np.dtype, dst: np.dtype, names: list[str], since: dict[str, int]) -> list[list]:
    ops: list[list] = []
    for name in sorted(names, key=lambda n: dst.fields[n][1]):
        s_off, d_off, n = src.fields[name][1], dst.fields[name][1], dst.fields[name][0].itemsize
        v = since.get(name, 0)
        last = ops[-1] if ops else None
        if last and last[0] + last[2] == s_off and last[1] + last[2] == d_off and last[3] == v:
            last[2] += n
        else:
            ops.append([s_off, d_off, n, v])
    return ops


class RecordDecoder:
    """Decode framed SBE bytes into hftagg record batches, one batch per mapped record schema."""

    def __init__(self, codec: SbeCodec, schemas: dict[str, Schema]) -> None:
        self.codec = codec
        self.maps: list[_Map] = []
        n_slots = len(codec.messages)
        self.slot_out = np.full(n_slots, -1, dtype=np.int64)
        self.slot_block = np.zeros(n_slots, dtype=np.int64)
        self.slot_since = np.zeros(n_slots, dtype=np.int64)
        op_lo, op_hi, ops = np.zeros(n_slots, np.int64), np.zeros(n_slots, np.int64), []
        little = codec.endian == "<"
        for slot, msg in enumerate(codec.messages):
            schema = schemas.get(record_name(msg.name))
            if schema is None:
                continue
            src = codec.root_dtype(msg.id)
            names = [n for n in schema.dtype.names if n in (src.names or ())]
            exact = little and all(src.fields[n][0] == schema.dtype.fields[n][0] for n in names)
            m = _Map(slot, schema, names, exact)
            self.slot_out[slot] = len(self.maps)
            self.maps.append(m)
            if not exact:
                continue
            since = {f.name: f.since_version for f in msg.fields}
            self.slot_block[slot] = msg.block_length
            self.slot_since[slot] = max([since[n] for n in names], default=0)
            if len(names) < len(schema.dtype.names):
                self.slot_since[slot] = -1  # record fields the message lacks: start from null
            op_lo[slot] = len(ops)
            ops.extend(_ops(src, schema.dtype, names, since))
            op_hi[slot] = len(ops)
        self.op_lo, self.op_hi = op_lo, op_hi
        self.ops = np.array(ops or [[0, 0, 0, 0]], dtype=np.int64).reshape(-1, 4)
        width = max([m.schema.itemsize for m in self.maps], default=8)
        self.null_rows = np.zeros((max(len(self.maps), 1), width), dtype=np.uint8)
        for o, m in enumerate(self.maps):
            row = np.zeros(1, dtype=m.schema.dtype)
            msg_id = codec.messages[m.slot].id
            node_null = codec.nodes[codec.slot_root[m.slot]].null.view(codec.root_dtype(msg_id))
            for n in m.fields:
                row[n] = node_null[n]
            self.null_rows[o, : m.schema.itemsize] = row.view(np.uint8)
        self.out_size = np.array([m.schema.itemsize for m in self.maps] or [8], dtype=np.int64)
        self._map_slots = np.array([m.slot for m in self.maps], dtype=np.int64)
        self._empty = [np.empty(0, dtype=m.schema.dtype) for m in self.maps]
        self._pads = [_padding(m.schema.dtype) for m in self.maps]

    @property
    def record_schemas(self) -> list[Schema]:
        return [m.schema for m in self.maps]

    def records(self, sc: Scan) -> dict[str, np.ndarray]:
        """Record batches from one scan, in one new buffer the caller may keep (no copy needed:
        allocating it costs less than copying out of a reused one)."""
        n_out = len(self.maps)
        if n_out == 0:
            return {}
        per_slot = np.bincount(sc.msg_slot, minlength=len(self.slot_out))
        counts = per_slot[self._map_slots]
        sizes = (counts * self.out_size + 63) // 64 * 64
        base = np.zeros(n_out, dtype=np.int64)
        np.cumsum(sizes[:-1], out=base[1:])
        out_bytes = np.empty(int(base[-1] + sizes[-1]), dtype=np.uint8)
        filled = np.zeros(n_out, dtype=np.int64)
        K.gather_records(sc.buf, sc.msg_header, sc.msg_slot, sc.msg_block_length, sc.msg_version,
                         len(sc.msg_slot), self.codec.header_size, self.slot_out, self.slot_block,
                         self.slot_since, self.op_lo, self.op_hi, self.ops, self.null_rows,
                         out_bytes, base, self.out_size, filled)  # fmt: skip
        out = {}
        for o, m in enumerate(self.maps):
            b, n = int(base[o]), int(counts[o])
            if not n:  # most scans hold one or two of the mapped messages
                out[m.schema.name] = self._empty[o]
                continue
            rows = out_bytes[b : b + n * m.schema.itemsize]
            for start, stop in self._pads[o]:  # padding reads as zero, not as stale bytes
                rows.reshape(n, m.schema.itemsize)[:, start:stop] = 0
            batch = rows.view(m.schema.dtype)
            if not m.exact and n:
                self._convert(sc, m, batch)
            out[m.schema.name] = batch
        return out

    def _convert(self, sc: Scan, m: _Map, batch: np.ndarray) -> None:
        idx = np.flatnonzero(sc.msg_slot == m.slot)
        node = self.codec.nodes[self.codec.slot_root[m.slot]]
        root = self.codec._gather(sc.buf, node, sc.msg_header[idx] + self.codec.header_size,
                                  sc.msg_block_length[idx], sc.msg_version[idx])  # fmt: skip
        batch[...] = 0
        for name in m.fields:
            batch[name] = root[name]


def _padding(dtype: np.dtype) -> list[tuple[int, int]]:
    """Byte ranges of a record dtype that no field covers."""
    covered = np.zeros(dtype.itemsize, dtype=bool)
    for name in dtype.names:
        field, offset = dtype.fields[name][:2]
        covered[offset : offset + field.itemsize] = True
    steps = np.diff(np.concatenate(([0], ~covered, [0])).astype(np.int8))
    starts, stops = np.flatnonzero(steps == 1), np.flatnonzero(steps == -1)
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


class _Plan:
    """How one record dtype becomes one message's frames: a template frame (prefix, header and
    the null value of every body field) and the byte runs copied from each record over it."""

    def __init__(self, frames_dtype: np.dtype, template: np.ndarray, runs, convert) -> None:
        self.frames_dtype = frames_dtype
        self.template = template  # (frame size,) uint8
        self.runs = runs  # [(record offset, frame offset, bytes)], adjacent fields merged
        self.convert = convert  # body fields whose dtype differs from the record's: numpy casts


class RecordEncoder:
    """Encode hftagg record batches as framed SBE messages, vectorised.

    Per record schema and message, a plan is made once: a template frame with the prefix, the
    header and every body field's null value, and the byte runs where a record field has the
    body field's exact type (adjacent ones merged: a record laid out like the message body is
    one run). Encoding a batch is then one broadcast of the template and one strided byte copy
    per run -- no structured-dtype assignment, which numpy does field by field through Python.
    Fields whose types differ are cast by numpy after that.
    """

    def __init__(self, codec: SbeCodec, framing: str = "length2") -> None:
        if framing not in ("length2", "sofh"):
            raise ValueError(f"framing {framing!r}: the record encoder writes 'length2' or 'sofh'")
        self.codec = codec
        self.framing = framing
        self.messages = {record_name(m.name): m for m in codec.messages if m.fixed}
        self._plans: dict[tuple[str, np.dtype], _Plan] = {}
        self._last: dict[str, tuple[np.dtype, _Plan]] = {}

    def _plan(self, record: str, dtype: np.dtype) -> _Plan:
        last = self._last.get(record)
        if last is not None and last[0] is dtype:  # the common case: no structured dtype hash
            return last[1]
        plan = self._plans.get((record, dtype))
        if plan is not None:
            self._last[record] = (dtype, plan)
            return plan
        msg = self.messages.get(record)
        if msg is None:
            raise KeyError(
                f"SBE schema {self.codec.schema.path!r} has no group-less message for "
                f"record schema {record!r}; messages: {sorted(self.messages)}"
            )
        codec = self.codec
        one = codec.frame_array(msg, 1, self.framing)
        body_dtype = codec.root_dtype(msg.id)
        node = codec.nodes[codec.slot_root[codec.slot_of[msg.id]]]
        one["body"].view(body_dtype)[...] = node.null.view(body_dtype)[0]
        body_at = one.dtype.fields["body"][1]
        runs: list[list[int]] = []
        convert = []
        names = dtype.names or ()
        for name in body_dtype.names:
            if name not in names:
                continue
            field, at = body_dtype.fields[name][:2]
            src, src_at = dtype.fields[name][:2]
            if src != field or field.hasobject:
                convert.append(name)
                continue
            dst_at = body_at + at
            if runs and runs[-1][0] + runs[-1][2] == src_at and runs[-1][1] + runs[-1][2] == dst_at:
                runs[-1][2] += field.itemsize
            else:
                runs.append([src_at, dst_at, field.itemsize])
        plan = _Plan(one.dtype, one.view(np.uint8).copy(), [tuple(r) for r in runs], convert)
        self._plans[(record, dtype)] = plan
        return plan

    def encode(self, record: str, batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Framed messages for ``batch`` (records of schema ``record``) as uint8 bytes.

        ``out``: a uint8 buffer to write into (at least ``len(batch)`` frames long) instead of
        a new array; the result is then a view on it.
        """
        plan = self._plan(record, batch.dtype)
        n = len(batch)
        size = len(plan.template)
        if out is None:
            out = np.empty(n * size, dtype=np.uint8)
        rows = out[: n * size].reshape(n, size)
        rows[...] = plan.template
        if n:
            raw = np.ascontiguousarray(batch).view(np.uint8).reshape(n, batch.dtype.itemsize)
            for src, dst, length in plan.runs:
                rows[:, dst : dst + length] = raw[:, src : src + length]
            if plan.convert:
                body = rows.view(plan.frames_dtype)[:, 0]["body"]
                body = body.view(self.codec.root_dtype(self.messages[record].id))
                for name in plan.convert:
                    body[name] = batch[name]
        return rows.reshape(-1)
