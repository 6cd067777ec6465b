"""Codecs generated at runtime from an SBE schema: tables for the compiled scan, numpy layouts.

``SbeCodec(schema)`` turns each message's root block and each repeating group's entry into a
numpy structured dtype (fields at their schema offsets, ``itemsize`` = the block length), and the
message structure into small integer tables that :func:`hftagg.builtins.protocols.sbe.kernels.scan`
walks. Decoding a buffer is then: one compiled scan for boundaries, template ids, groups and
errors; per template one compiled gather of fixed blocks into rows. Nothing is done per message
in Python.

Version handling follows SBE's extension rules: a newer sender's larger block (root or group) is
skipped past using the blockLength it sends; an older sender's shorter block leaves the fields it
did not have at their null value, and fields or groups whose ``sinceVersion`` is newer than the
message header's version read as null / absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hftagg.builtins.protocols.sbe import kernels as K
from hftagg.builtins.protocols.sbe.schema import (
    Composite,
    Data,
    EnumType,
    Field,
    Group,
    Message,
    MessageSchema,
    Primitive,
    SetType,
    block_dtype,
    min_block_length,
    null_row,
    type_dtype,
)
from hftagg.errors import SchemaError

__all__ = ["FRAMINGS", "DataBatch", "Decoded", "GroupBatch", "SbeCodec", "Scan", "TemplateBatch"]

FRAMINGS = {"length2": K.LENGTH2, "sofh": K.SOFH, "mdp3": K.MDP3}

ERROR_DTYPE = np.dtype(
    [("offset", "<i8"), ("length", "<i8"), ("reason", "<i8"), ("detail", "<i8"), ("segment", "<i8")]
)
_NO_ERRORS = np.empty(0, dtype=ERROR_DTYPE)
_NO_ERRORS.flags.writeable = False  # shared by every scan without errors


@dataclass
class Node:
    """One message root, repeating group or var-data field, with its layout."""

    kind: int
    path: str
    slot: int
    element: Message | Group | Data
    fields: list[Field] = field(default_factory=list)
    dtype: np.dtype | None = None
    null: np.ndarray | None = None  # null row bytes (uint8)
    children: list[int] = field(default_factory=list)


@dataclass
class Scan:
    """Raw results of one compiled scan: arrays sliced to their counts."""

    buf: np.ndarray
    msg_frame: np.ndarray
    msg_header: np.ndarray
    msg_end: np.ndarray
    msg_slot: np.ndarray
    msg_version: np.ndarray
    msg_block_length: np.ndarray
    msg_segment: np.ndarray
    entry_node: np.ndarray
    entry_parent: np.ndarray
    entry_msg: np.ndarray
    entry_offset: np.ndarray
    entry_block_length: np.ndarray
    data_node: np.ndarray
    data_parent: np.ndarray
    data_msg: np.ndarray
    data_offset: np.ndarray
    data_length: np.ndarray
    errors: np.ndarray  # ERROR_DTYPE
    consumed: int
    run: np.ndarray  # a bad run left open (``run[0]`` reason, 0: none); see ``kernels._stream``


@dataclass
class GroupBatch:
    """All entries of one group: ``parent[i]`` is the index of the message (top-level group) in
    its template batch, or of the entry in the enclosing group's batch."""

    path: str
    entries: np.ndarray
    parent: np.ndarray


@dataclass
class DataBatch:
    """One var-data field: ``buffer[offset[i]:offset[i] + length[i]]`` belongs to ``parent[i]``."""

    path: str
    buffer: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    parent: np.ndarray

    def values(self) -> list[bytes]:
        b = self.buffer
        return [
            b[o : o + n].tobytes()
            for o, n in zip(self.offset.tolist(), self.length.tolist(), strict=True)
        ]


@dataclass
class TemplateBatch:
    message: Message
    root: np.ndarray
    index: np.ndarray  # position of each message in the stream (among decoded messages)
    version: np.ndarray
    block_length: np.ndarray
    frame_offset: np.ndarray
    segment: np.ndarray
    groups: dict[str, GroupBatch] = field(default_factory=dict)
    data: dict[str, DataBatch] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.root)


@dataclass
class Decoded:
    templates: dict[str, TemplateBatch]
    errors: np.ndarray
    consumed: int
    count: int

    def to_dicts(self, codec: SbeCodec) -> list[dict[str, Any]]:
        """Every decoded message as a plain dict, in stream order (for tests and tools only)."""
        out: list[Any] = [None] * self.count
        for batch in self.templates.values():
            for i, d in enumerate(codec.batch_dicts(batch)):
                out[int(batch.index[i])] = d
        return out


class SbeCodec:
    """Encoder and decoder for every message of one SBE schema."""

    def __init__(self, schema: MessageSchema, max_frame_bytes: int = 65535) -> None:
        self.schema = schema
        self.endian = schema.endian
        self.max_frame_bytes = max_frame_bytes
        header = schema.header
        self.header_dtype = type_dtype(header, self.endian)
        self.header_size = header.size
        self.messages = [schema.messages[k] for k in sorted(schema.messages)]
        self.slot_of = {m.id: i for i, m in enumerate(self.messages)}
        self.nodes: list[Node] = []
        self.slot_root = np.array(
            [self._add(K.K_ROOT, m, m.name, s) for s, m in enumerate(self.messages)], dtype=np.int64
        )
        self._tables()

    # ------------------------------------------------------------------ tables

    def _add(self, kind: int, element: Any, path: str, slot: int) -> int:
        idx = len(self.nodes)
        node = Node(kind, path, slot, element)
        self.nodes.append(node)
        if kind != K.K_DATA:
            node.fields = element.fields
            node.dtype = block_dtype(element.fields, element.block_length, self.endian)
            node.null = null_row(element.fields, node.dtype).view(np.uint8).copy()
            for g in element.groups:
                node.children.append(self._add(K.K_GROUP, g, f"{path}.{g.name}", slot))
            for d in element.datas:
                node.children.append(self._add(K.K_DATA, d, f"{path}.{d.name}", slot))
        return idx

    def _tables(self) -> None:
        s = self.schema
        hdr = np.zeros(K.HEADER_COLUMNS, dtype=np.int64)
        hdr[K.H_SIZE] = self.header_size
        for name, (off, size) in zip(
            ("blockLength", "templateId", "schemaId", "version"),
            ((K.H_BL_OFF, K.H_BL_SZ), (K.H_TID_OFF, K.H_TID_SZ), (K.H_SID_OFF, K.H_SID_SZ),
             (K.H_VER_OFF, K.H_VER_SZ)), strict=True,
        ):  # fmt: skip
            m = s.header.member(name)
            hdr[off], hdr[size] = m.offset, m.type.size
        hdr[K.H_SCHEMA_ID] = s.id
        hdr[K.H_BIG] = s.byte_order == "bigEndian"
        hdr[K.H_MAX_VERSION] = s.version
        hdr[K.H_MAX_FRAME] = self.max_frame_bytes
        self.hdr = hdr
        self.tid_slot = np.full(max(self.slot_of, default=0) + 1, -1, dtype=np.int64)
        for tid, slot in self.slot_of.items():
            self.tid_slot[tid] = slot
        nodes = np.zeros((len(self.nodes), K.NODE_COLUMNS), dtype=np.int64)
        children: list[int] = []
        self.min_bl = np.zeros((len(self.nodes), s.version + 1), dtype=np.int64)
        for i, node in enumerate(self.nodes):
            el = node.element
            row = nodes[i]
            row[K.N_KIND] = node.kind
            row[K.N_FIRST] = len(children)
            row[K.N_COUNT] = len(node.children)
            row[K.N_SINCE] = el.since_version
            children.extend(node.children)
            if node.kind == K.K_DATA:
                length = el.type.members[0]
                row[K.N_DIM] = el.prefix_size
                row[K.N_NUM_OFF], row[K.N_NUM_SZ] = length.offset, length.type.size
                continue
            row[K.N_FIXED] = not el.groups and not el.datas
            for v in range(s.version + 1):
                self.min_bl[i, v] = min_block_length(el.fields, v)
            if node.kind == K.K_GROUP:
                dim = el.dimension
                bl, num = dim.member("blockLength"), dim.member("numInGroup")
                row[K.N_DIM] = dim.size
                row[K.N_BL_OFF], row[K.N_BL_SZ] = bl.offset, bl.type.size
                row[K.N_NUM_OFF], row[K.N_NUM_SZ] = num.offset, num.type.size
        self.node_table = nodes
        self.children = np.array(children or [0], dtype=np.int64)
        self._work: dict[str, np.ndarray] = {}

    def root_dtype(self, message: int | str) -> np.dtype:
        return self.nodes[self.slot_root[self._slot(message)]].dtype

    def group_dtype(self, path: str) -> np.dtype:
        for n in self.nodes:
            if n.path == path and n.kind == K.K_GROUP:
                return n.dtype
        raise SchemaError(f"SBE schema {self.schema.path}: no group {path!r}")

    def _slot(self, message: int | str) -> int:
        return self.slot_of[self.schema.message(message).id]

    # ------------------------------------------------------------------ scanning

    def _arrays(self, name: str, count: int, n: int) -> np.ndarray:
        arr = self._work.get(name)
        if arr is None or arr.shape[1] < n:
            arr = np.empty((count, max(n, 16)), dtype=np.int64)
            self._work[name] = arr
        return arr

    def scan(self, buf: np.ndarray, framing: str = "length2", segments: Any = None,
             final: bool = True, cut_reason: int = K.Reason.TRUNCATED,
             run: np.ndarray | None = None) -> Scan:  # fmt: skip
        """Find and check every message; ``segments`` = (starts, ends) of packets or datagrams.

        Unless ``final``, scanning stops at a frame the buffer ends inside (``Scan.consumed``)
        and ``Scan.run`` holds a bad run still open there; pass the rest of the bytes and that
        run (its start shifted to the new buffer) to the next scan. ``cut_reason`` is the reason
        of data cut off by the end of the buffer or a segment.
        """
        code = FRAMINGS[framing]
        buf = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf
        if segments is None:
            starts = np.zeros(1, dtype=np.int64)
            ends = np.array([len(buf)], dtype=np.int64)
        else:
            starts, ends = (np.asarray(a, dtype=np.int64) for a in segments)
        caps = {"m": len(buf) // (2 + self.header_size) + 1, "e": 256, "d": 64, "r": 64}
        counts = np.zeros(8, dtype=np.int64)
        run_in = np.zeros(K.RUN_SIZE, dtype=np.int64) if run is None else np.asarray(run)
        while True:
            run_out = run_in.astype(np.int64)  # a copy: a scan that ran out of room starts over
            m = self._arrays("m", 7, caps["m"])
            e = self._arrays("e", 5, caps["e"])
            d = self._arrays("d", 5, caps["d"])
            r = self._arrays("r", 5, caps["r"])
            K.scan_2d(buf, starts, ends, code, final, cut_reason, run_out, self.hdr,
                      self.tid_slot, self.slot_root, self.node_table, self.children, self.min_bl,
                      m, e, d, r, counts)  # fmt: skip
            status = int(counts[K.C_STATUS])
            if status == 0:
                break
            key = {K.FULL_MSGS: "m", K.FULL_ENTRIES: "e", K.FULL_DATAS: "d",
                   K.FULL_ERRORS: "r"}[status]  # fmt: skip
            caps[key] = max(caps[key], self._work[key].shape[1]) * 4
        nm, ne, nd, nr = (int(counts[c]) for c in (K.C_MSGS, K.C_ENTRIES, K.C_DATAS, K.C_ERRORS))
        errors = _NO_ERRORS if not nr else np.empty(nr, dtype=ERROR_DTYPE)
        if nr:  # the common case has none: no five column copies of nothing
            for name, col in zip(ERROR_DTYPE.names, r, strict=True):
                errors[name] = col[:nr]
        return Scan(buf, *(a[:nm] for a in m), *(a[:ne] for a in e), *(a[:nd] for a in d),
                    errors, int(counts[K.C_CONSUMED]), run_out)  # fmt: skip

    # ------------------------------------------------------------------ decoding

    def _gather(self, buf: np.ndarray, node: Node, starts: np.ndarray, lengths: np.ndarray,
                versions: np.ndarray) -> np.ndarray:  # fmt: skip
        width = node.dtype.itemsize
        if width == 0:  # an empty block (e.g. MDP3 AdminHeartbeat12): nothing to gather
            return np.zeros(len(starts), dtype=node.dtype)
        rows = np.empty((len(starts), width), dtype=np.uint8)
        K.gather_rows(buf, starts, lengths, node.null, rows)
        out = rows.view(node.dtype).reshape(-1)
        null = node.null.view(node.dtype)
        for f in node.fields:
            if f.since_version and not f.is_constant:
                old = versions < f.since_version
                if old.any():
                    out[f.name][old] = null[f.name][0]
        return out

    def decode(self, buf: Any, framing: str = "length2", segments: Any = None,
               final: bool = True) -> Decoded:  # fmt: skip
        """Decode every message in ``buf`` into per-template structured arrays."""
        return self.decode_scan(self.scan(buf, framing, segments, final))

    def decode_scan(self, sc: Scan) -> Decoded:
        """Per-template structured arrays from one scan."""
        buf = sc.buf
        templates: dict[str, TemplateBatch] = {}
        local = np.empty(len(sc.msg_slot), dtype=np.int64)
        for slot in np.unique(sc.msg_slot).tolist():
            idx = np.flatnonzero(sc.msg_slot == slot)
            local[idx] = np.arange(len(idx))
            root_node = self.nodes[self.slot_root[slot]]
            ver = sc.msg_version[idx]
            root = self._gather(buf, root_node, sc.msg_header[idx] + self.header_size,
                                sc.msg_block_length[idx], ver)  # fmt: skip
            templates[root_node.path] = TemplateBatch(
                root_node.element, root, idx, ver, sc.msg_block_length[idx],
                sc.msg_frame[idx], sc.msg_segment[idx],
            )  # fmt: skip
        entry_pos = np.empty(len(sc.entry_node), dtype=np.int64)
        for node_id in np.unique(sc.entry_node).tolist():  # parents come before children
            node = self.nodes[node_id]
            sel = np.flatnonzero(sc.entry_node == node_id)
            entry_pos[sel] = np.arange(len(sel))
            entries = self._gather(buf, node, sc.entry_offset[sel], sc.entry_block_length[sel],
                                   sc.msg_version[sc.entry_msg[sel]])  # fmt: skip
            batch = templates[self.nodes[self.slot_root[node.slot]].path]
            batch.groups[node.path] = GroupBatch(node.path, entries,
                                                 self._parents(sc.entry_parent[sel],
                                                               sc.entry_msg[sel], local,
                                                               entry_pos))  # fmt: skip
        for node_id in np.unique(sc.data_node).tolist():
            node = self.nodes[node_id]
            sel = np.flatnonzero(sc.data_node == node_id)
            batch = templates[self.nodes[self.slot_root[node.slot]].path]
            batch.data[node.path] = DataBatch(
                node.path, buf, sc.data_offset[sel], sc.data_length[sel],
                self._parents(sc.data_parent[sel], sc.data_msg[sel], local, entry_pos),
            )  # fmt: skip
        return Decoded(templates, sc.errors, sc.consumed, len(sc.msg_slot))

    @staticmethod
    def _parents(parent: np.ndarray, msg: np.ndarray, local: np.ndarray,
                 entry_pos: np.ndarray) -> np.ndarray:  # fmt: skip
        return np.where(parent < 0, local[msg], entry_pos[np.maximum(parent, 0)])

    # ------------------------------------------------------------------ plain values (tools)

    def batch_dicts(self, batch: TemplateBatch) -> list[dict[str, Any]]:
        """A template batch as one dict per message (groups: lists of dicts; data: bytes)."""
        return self._rows(batch.message, batch.root, batch.message.name, batch,
                          np.arange(len(batch.root)))  # fmt: skip

    def _rows(self, element: Any, rows: np.ndarray, path: str, batch: TemplateBatch,
              ids: np.ndarray) -> list[dict[str, Any]]:  # fmt: skip
        out = []
        for i in range(len(rows)):
            d = {f.name: (f.constant if f.is_constant else _py(rows[i][f.name], f.type))
                 for f in element.fields}  # fmt: skip
            out.append(d)
        for g in element.groups:
            gb = batch.groups.get(f"{path}.{g.name}")
            for i, d in enumerate(out):
                if gb is None:
                    d[g.name] = []
                    continue
                sel = np.flatnonzero(gb.parent == ids[i])
                d[g.name] = self._rows(g, gb.entries[sel], f"{path}.{g.name}", batch, sel)
        for dd in element.datas:
            db = batch.data.get(f"{path}.{dd.name}")
            values = db.values() if db is not None else []
            for i, d in enumerate(out):
                hits = [values[j] for j in np.flatnonzero(db.parent == ids[i]).tolist()] if db \
                    else []  # fmt: skip
                d[dd.name] = hits[0] if hits else b""
        return out

    # ------------------------------------------------------------------ encoding

    def encode(self, message: int | str, values: dict[str, Any],
               block_length: int | None = None, version: int | None = None) -> bytes:  # fmt: skip
        """One SBE message (header + body, no framing) from plain values.

        Missing fields are written as null. Groups are lists of dicts, data fields bytes.
        ``block_length``/``version`` override the header (to emulate other senders).
        """
        msg = self.schema.message(message)
        node = self.nodes[self.slot_root[self._slot(message)]]
        bl = msg.block_length if block_length is None else block_length
        header = np.zeros(1, dtype=self.header_dtype)
        header["blockLength"] = bl
        header["templateId"] = msg.id
        header["schemaId"] = self.schema.id
        header["version"] = self.schema.version if version is None else version
        return header.tobytes() + self._encode_body(msg, node, values, bl)

    def _encode_body(self, element: Any, node: Node, values: dict[str, Any], bl: int) -> bytes:
        row = node.null.copy().view(node.dtype)
        for f in element.fields:
            if not f.is_constant and f.name in values:
                _set(row, f.name, f.type, values[f.name])
        body = row.tobytes()
        parts = [body[:bl] + bytes(max(0, bl - len(body)))]
        kids = iter(node.children)
        for g in element.groups:
            child = self.nodes[next(kids)]
            entries = values.get(g.name, [])
            dim = np.zeros(1, dtype=type_dtype(g.dimension, self.endian))
            dim["blockLength"] = g.block_length
            dim["numInGroup"] = len(entries)
            parts.append(dim.tobytes())
            for entry in entries:
                parts.append(self._encode_body(g, child, entry, g.block_length))
        for d in element.datas:
            next(kids)
            raw = values.get(d.name, b"")
            raw = raw.encode() if isinstance(raw, str) else bytes(raw)
            prefix = np.zeros(1, dtype=type_dtype(d.type, self.endian))
            prefix[d.type.members[0].name] = len(raw)
            parts.append(prefix.tobytes()[: d.prefix_size] + raw)
        return b"".join(parts)

    def encode_fixed(self, message: int | str, root: np.ndarray, framing: str = "length2") -> bytes:
        """Many messages of one group-less template from a root-dtype array, framed; vectorised."""
        msg = self.schema.message(message)
        if not msg.fixed:
            raise SchemaError(f"message {msg.name!r} has groups or data: use encode()")
        frames = self.frame_array(msg, len(root), framing)
        frames["body"] = np.ascontiguousarray(root).view(np.dtype((np.void, msg.block_length)))
        return frames.tobytes()

    def frame_array(self, msg: Message, n: int, framing: str) -> np.ndarray:
        """``n`` frames of a fixed message with prefix and header filled; ``body`` left empty."""
        prefix = [("length", ">u4"), ("encoding", ">u2")] if framing == "sofh" else \
            [("length", "<u2")]  # fmt: skip
        dt = np.dtype(prefix + [("header", self.header_dtype),
                                ("body", np.void, msg.block_length)])  # fmt: skip
        frames = np.empty(n, dtype=dt)
        frames["length"] = dt.itemsize
        if framing == "sofh":
            frames["encoding"] = K.SOFH_SBE_BE if self.endian == ">" else K.SOFH_SBE_LE
        h = frames["header"]
        h["blockLength"] = msg.block_length
        h["templateId"] = msg.id
        h["schemaId"] = self.schema.id
        h["version"] = self.schema.version
        return frames


def frame(payloads: list[bytes], framing: str = "length2", big_endian: bool = False) -> bytes:
    """Prefix each SBE message with its framing header (hftagg 2-byte length, SOFH or MDP3 size)."""
    out = []
    for p in payloads:
        if framing == "sofh":
            enc = K.SOFH_SBE_BE if big_endian else K.SOFH_SBE_LE
            out.append((len(p) + 6).to_bytes(4, "big") + enc.to_bytes(2, "big") + p)
        else:
            out.append((len(p) + 2).to_bytes(2, "little") + p)
    return b"".join(out)


def _py(value: Any, t: Any) -> Any:
    if isinstance(t, Composite):
        return {m.name: (m.type.constant if isinstance(m.type, Primitive)
                         and m.type.presence == "constant" else _py(value[m.name], m.type))
                for m in t.members}  # fmt: skip
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return bytes(value)
    return value.item() if hasattr(value, "item") else value


def _set(row: np.ndarray, name: str, t: Any, value: Any) -> None:
    if isinstance(t, Composite):
        sub = row[name]
        for m in t.members:
            if m.type.size and isinstance(value, dict) and m.name in value:
                _set(sub, m.name, m.type, value[m.name])
        row[name] = sub
        return
    if isinstance(t, EnumType) and isinstance(value, str):
        value = t.values[value] if value in t.values else ord(value)  # name or char value
    elif isinstance(t, SetType) and isinstance(value, (list, tuple, set)):
        value = sum(1 << t.choices[c] for c in value)
    elif isinstance(t, Primitive) and t.primitive == "char" and isinstance(value, str):
        value = value.encode()
    row[name] = value
