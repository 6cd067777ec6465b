"""Built-in plugin: the ``sbe`` codec family and the ``sbe_encode`` / ``sbe_decode`` stages.

Schemas are data: ``schema = "sbe/hftagg-md.xml"`` is resolved against the repository's
``protocols/`` folder (an absolute path is used as is), so a schema dropped there is usable from
config with no code. A schema whose messages are named after record schemas (``Trade`` ->
``trade``) with record field names decodes straight into those records; the CME MDP 3.0 schema
(package ``mktdata``) decodes through the MDP3 mapping.

``sbe_encode`` turns trades and book updates into framed SBE messages on a byte stream of
``raw_chunk`` records (messages may span chunks; each input batch ends its last chunk, so
nothing waits in the encoder). ``sbe_decode`` reassembles the stream (or takes each chunk with
flag bit 0 as one datagram: MDP3 packets), decodes it in compiled passes, and sends anything
unusable to its ``dead_letters`` port with a reason code from
:class:`hftagg.protocols.sbe.Reason`; good messages around bad input flow on.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from hftagg.hookspecs import hookimpl
from hftagg.protocols.sbe import Reason, SbeCodec, parse_schema
from hftagg.protocols.sbe.kernels import compact_chunks
from hftagg.protocols.sbe.mdp3 import mdp3_records
from hftagg.protocols.sbe.records import RecordDecoder, RecordEncoder
from hftagg.records.catalog import (
    BOOK_UPDATE,
    DEAD_LETTER,
    MBP10,
    RAW_CHUNK,
    RAW_CHUNK_BYTES,
    TRADE,
)
from hftagg.stages import Params, Port, Stage, StageContext, restart

__all__ = ["SbeDecode", "SbeDecodeParams", "SbeEncode", "SbeEncodeParams", "SbeFamily"]

PROTOCOLS_DIR = Path(__file__).resolve().parents[3] / "protocols"
DATAGRAM = 1  # raw_chunk flags bit 0: the chunk is one whole datagram / packet
_PORT_OF = {"trade": "trades", "book_update": "book", "mbp10": "mbp10"}


class SbeFamily:
    """The ``sbe`` codec family: SBE XML schemas in ``protocols/`` -> runtime codecs."""

    name = "sbe"
    description = "FIX Simple Binary Encoding 1.0: codecs generated from XML message schemas"

    def __init__(self, protocols_dir: Path = PROTOCOLS_DIR) -> None:
        self.protocols_dir = protocols_dir

    def resolve(self, schema: str) -> Path:
        path = Path(schema)
        return path if path.is_absolute() else self.protocols_dir / path

    def codec(self, schema: str, max_frame_bytes: int = 65535) -> SbeCodec:
        """A new codec (each stage owns its own work buffers) for the schema file."""
        return SbeCodec(parse_schema(self.resolve(schema)), max_frame_bytes)


FAMILY = SbeFamily()


def _family(ctx: StageContext) -> SbeFamily:
    return ctx.codecs.get("sbe") or FAMILY


# --------------------------------------------------------------------------- encode


# ``schema`` is the parameter's name in config; it shadows pydantic's deprecated
# ``BaseModel.schema()`` classmethod, which nothing here uses.
warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)


class SbeEncodeParams(Params):
    schema: str = restart("sbe/hftagg-md.xml", description="SBE XML schema, relative to protocols/")
    framing: Literal["length2", "sofh"] = restart(
        "length2", description="length2: 2-byte LE length prefix; sofh: Simple Open Framing Header"
    )
    stream_id: int = restart(0, ge=0, le=2**32 - 1, description="raw_chunk instrument_id")


class SbeEncode(Stage):
    kind = "protocol"
    type_name = "sbe_encode"
    Params = SbeEncodeParams
    inputs = {
        "trades": Port("trade", "md.trades", "trades to encode"),
        "book": Port("book_update", "md.book", "book updates to encode"),
    }
    outputs = {"output": Port("raw_chunk", "raw.sbe", "framed SBE byte stream")}

    def open(self, ctx: StageContext) -> None:
        codec = _family(ctx).codec(self.params.schema)
        self.encoder = RecordEncoder(codec, self.params.framing)
        self._seq = 0
        self._out = RAW_CHUNK.empty(0)

    def process(self, batch: np.ndarray, port: str) -> np.ndarray | None:
        if not len(batch):
            return None
        frames = self.encoder.encode("trade" if port == "trades" else "book_update", batch)
        frame_size = len(frames) // len(batch)
        n = -(-len(frames) // RAW_CHUNK_BYTES)
        if len(self._out) < n:
            self._out = RAW_CHUNK.empty(max(n, 2 * len(self._out)))
        out = self._out[:n]
        padded = np.zeros(n * RAW_CHUNK_BYTES, dtype=np.uint8)
        padded[: len(frames)] = frames
        out["data"] = padded.reshape(n, RAW_CHUNK_BYTES)
        out["length"] = RAW_CHUNK_BYTES
        out["length"][-1] = len(frames) - (n - 1) * RAW_CHUNK_BYTES
        out["flags"] = 0
        first = np.minimum(np.arange(n) * RAW_CHUNK_BYTES // frame_size, len(batch) - 1)
        out["ts_event"] = batch["ts_event"][first]
        out["ts_recv"] = batch["ts_recv"][first]
        out["seq"] = np.arange(self._seq, self._seq + n, dtype=np.uint64)
        out["instrument_id"] = self.params.stream_id
        self._seq += n
        return out

    def snapshot(self) -> dict:
        return {"seq": self._seq}

    def restore(self, state: dict) -> None:
        self._seq = int(state["seq"])


# --------------------------------------------------------------------------- decode


class SbeDecodeParams(Params):
    schema: str = restart("sbe/hftagg-md.xml", description="SBE XML schema, relative to protocols/")
    framing: Literal["length2", "sofh", "mdp3"] = restart(
        "length2", description="length2 / sofh on a byte stream; mdp3: one CME packet per chunk"
    )
    mapping: Literal["auto", "records", "cme_mdp3"] = restart(
        "auto", description="records: messages named after record schemas; auto: by schema"
    )
    max_frame_bytes: int = restart(65535, ge=16, le=1 << 24, description="larger frames are bad")


class SbeDecode(Stage):
    kind = "protocol"
    type_name = "sbe_decode"
    Params = SbeDecodeParams
    inputs = {"input": Port("raw_chunk", "raw.sbe", "SBE bytes (stream pieces or datagrams)")}
    outputs = {
        "trades": Port("trade", "md.trades", "decoded trades"),
        "book": Port("book_update", "md.book", "decoded book updates"),
        "mbp10": Port("mbp10", "md.mbp10", "decoded MBP-10 snapshots"),
        "dead_letters": Port("dead_letter", "dead_letters.sbe", "input that could not be decoded"),
    }

    def open(self, ctx: StageContext) -> None:
        p = self.params
        self.codec = _family(ctx).codec(p.schema, p.max_frame_bytes)
        mapping = p.mapping
        if mapping == "auto":
            mapping = "cme_mdp3" if self.codec.schema.package == "mktdata" else "records"
        self.mapping = mapping
        self.records = RecordDecoder(self.codec, {s.name: s for s in (TRADE, BOOK_UPDATE, MBP10)})
        self._pending: dict[int, bytes] = {}  # stream id -> bytes of an incomplete frame
        self._stream_pos: dict[int, int] = {}  # stream id -> stream offset of pending[0]
        self._buf = np.zeros(0, dtype=np.uint8)
        self.dead_letter_counts: dict[str, int] = {}
        self.messages = 0

    # -- byte assembly ---------------------------------------------------------------------

    def _bytes(self, chunks: np.ndarray, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """The stream's pending bytes + these chunks', and each chunk's start in that buffer."""
        pending = self._pending.get(stream, b"")
        lengths = np.minimum(chunks["length"].astype(np.int64), RAW_CHUNK_BYTES)
        total = len(pending) + int(lengths.sum())
        if len(self._buf) < total:
            self._buf = np.zeros(max(total, 2 * len(self._buf)), dtype=np.uint8)
        buf = self._buf[:total]
        buf[: len(pending)] = np.frombuffer(pending, dtype=np.uint8)
        compact_chunks(chunks["data"], lengths, buf[len(pending) :])
        starts = len(pending) + np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        return buf, starts

    def process(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {port: [] for port in self.outputs}
        streams = batch["instrument_id"]
        datagram = (batch["flags"] & DATAGRAM) != 0
        if self.params.framing == "mdp3":
            datagram[:] = True
        ids = [int(streams[0])] if (streams == streams[0]).all() else np.unique(streams).tolist()
        for stream in ids:
            sel = batch if len(ids) == 1 else batch[streams == stream]
            dg = datagram if len(ids) == 1 else datagram[streams == stream]
            if dg.all():
                self._decode(sel, stream, out, segments=True)
            elif not dg.any():
                self._decode(sel, stream, out, segments=False)
            else:  # mixed: keep order, one run at a time
                edges = np.flatnonzero(np.diff(dg.astype(np.int8))) + 1
                for run in np.split(np.arange(len(sel)), edges):
                    self._decode(sel[run], stream, out, segments=bool(dg[run[0]]))
        return {port: (parts[0] if len(parts) == 1 else np.concatenate(parts))
                for port, parts in out.items() if parts}  # fmt: skip

    def _decode(self, chunks: np.ndarray, stream: int, out: dict, segments: bool) -> None:
        buf, starts = self._bytes(chunks, stream)
        base = self._stream_pos.get(stream, 0) - len(self._pending.get(stream, b""))
        if segments:
            ends = starts + np.minimum(chunks["length"].astype(np.int64), RAW_CHUNK_BYTES)
            sc_args = (buf, self.params.framing, (starts, ends), True)
        else:
            sc_args = (buf, self.params.framing, None, False)
        ts_recv = chunks["ts_recv"]
        if self.mapping == "cme_mdp3":
            decoded = self.codec.decode(*sc_args)
            errors, consumed, count = decoded.errors, decoded.consumed, decoded.count
            seg_ts = ts_recv if segments else np.full(1, ts_recv[0])
            for name, records in mdp3_records(self.codec, decoded, seg_ts).items():
                out[_PORT_OF[name]].append(records)
        else:
            sc = self.codec.scan(*sc_args)
            errors, consumed, count = sc.errors, sc.consumed, len(sc.msg_slot)
            for name, records in self.records.records(sc).items():
                if len(records):
                    out[_PORT_OF[name]].append(records.copy())
        self.messages += count
        if segments:
            self._pending.pop(stream, None)
        else:
            self._pending[stream] = buf[consumed:].tobytes()
        self._stream_pos[stream] = base + len(buf)
        if len(errors):
            offsets = errors["offset"]
            chunk = np.clip(np.searchsorted(starts, offsets, side="right") - 1, 0, len(chunks) - 1)
            out["dead_letters"].append(self._dead(errors["reason"], base + offsets,
                                                  errors["length"], errors["detail"],
                                                  ts_recv[chunk], stream))  # fmt: skip

    def _dead(self, reason, offset, length, detail, ts_recv, stream) -> np.ndarray:
        dl = DEAD_LETTER.empty(len(reason))
        dl["ts_event"] = ts_recv
        dl["ts_recv"] = ts_recv
        dl["seq"] = offset
        dl["instrument_id"] = stream
        dl["reason"] = reason
        dl["raw_offset"] = offset
        dl["raw_length"] = np.minimum(length, 2**32 - 1)
        dl["source_id"] = stream
        dl["detail"] = [f"sbe: {Reason.NAMES[int(r)]} ({int(d)})".encode()[:64]
                        for r, d in zip(reason.tolist(), detail.tolist(), strict=True)]  # fmt: skip
        for r in reason.tolist():
            key = Reason.NAMES[r]
            self.dead_letter_counts[key] = self.dead_letter_counts.get(key, 0) + 1
        return dl

    def flush_pending(self) -> np.ndarray:
        """Dead letters for bytes still waiting for the rest of their frame (end of stream)."""
        parts = []
        for stream, pending in self._pending.items():
            if pending:
                pos = self._stream_pos.get(stream, 0) - len(pending)
                parts.append(self._dead(np.array([Reason.END_OF_STREAM]), np.array([pos]),
                                        np.array([len(pending)]), np.array([len(pending)]),
                                        np.zeros(1, np.int64), stream))  # fmt: skip
        self._pending.clear()
        return np.concatenate(parts) if parts else DEAD_LETTER.empty(0)

    def snapshot(self) -> dict:
        return {"pending": dict(self._pending), "stream_pos": dict(self._stream_pos)}

    def restore(self, state: dict) -> None:
        self._pending = dict(state["pending"])
        self._stream_pos = dict(state["stream_pos"])


@hookimpl
def hftagg_register_codecs(register):
    register(FAMILY)


@hookimpl
def hftagg_register_stage_types(register):
    register(SbeEncode)
    register(SbeDecode)
