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
:class:`hftagg.builtins.protocols.sbe.Reason`; good messages around bad input flow on.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from hftagg.builtins.protocols import find_definition
from hftagg.builtins.protocols.sbe import Reason, SbeCodec, parse_schema
from hftagg.builtins.protocols.sbe import kernels as K
from hftagg.builtins.protocols.sbe.codec import Scan
from hftagg.builtins.protocols.sbe.kernels import compact_chunks
from hftagg.builtins.protocols.sbe.mdp3 import (
    Mdp3Instruments,
    Mdp3Sequencer,
    mdp3_records,
    unmapped_messages,
)
from hftagg.builtins.protocols.sbe.records import RecordDecoder, RecordEncoder
from hftagg.errors import SchemaError
from hftagg.hookspecs import hookimpl
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

log = logging.getLogger("hftagg.sbe")
DATAGRAM = 1  # raw_chunk flags bit 0: the chunk is one whole datagram / packet
_PORT_OF = {"trade": "trades", "book_update": "book", "mbp10": "mbp10"}


class SbeFamily:
    """The ``sbe`` codec family: SBE XML schemas (see :mod:`hftagg.builtins.protocols`) -> codecs."""

    name = "sbe"
    description = "FIX Simple Binary Encoding 1.0: codecs generated from XML message schemas"

    def resolve(self, schema: str) -> Path:
        """The schema file ``schema`` names: absolute, or found on the definition search path."""
        return find_definition(schema, "SBE schema")

    def codec(self, schema: str, max_frame_bytes: int = 65535) -> SbeCodec:
        """A new codec (each stage owns its own work buffers) for the schema file."""
        return SbeCodec(parse_schema(self.resolve(schema)), max_frame_bytes)


FAMILY = SbeFamily()


def _family(ctx: StageContext) -> SbeFamily:
    return ctx.codecs.get("sbe") or FAMILY


def _schema_problems(ctx: StageContext, schema: str) -> list[tuple[str, str]]:
    """The schema file must exist and parse as an SBE XML schema (as ``open`` will read it)."""
    family = _family(ctx)
    try:
        path = family.resolve(schema)
    except SchemaError as exc:  # found in no folder of the search path: it names them
        return [("schema", str(exc))]
    if not path.is_file():
        where = "a directory" if path.is_dir() else "no such file"
        return [("schema", f"{where}: {path}; put the SBE XML schema in protocols/ (names are "
                           f"relative to it) or give an absolute path")]  # fmt: skip
    try:
        family.codec(schema)
    except Exception as exc:
        return [("schema", f"{path} is not a usable SBE XML schema: {exc}")]
    return []


# --------------------------------------------------------------------------- encode


# ``schema`` is the parameter's name in config; it shadows pydantic's deprecated
# ``BaseModel.schema()`` classmethod, which nothing here uses.
warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)


class SbeEncodeParams(Params):
    schema: str = restart(
        "sbe/hftagg-md.xml",
        description="SBE XML schema: protocol_paths, config folder, or built-in",
    )
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

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        return _schema_problems(ctx, self.params.schema)

    def open(self, ctx: StageContext) -> None:
        codec = _family(ctx).codec(self.params.schema)
        self.encoder = RecordEncoder(codec, self.params.framing)
        self._seq = 0
        self._out = RAW_CHUNK.empty(0)
        self._frames = np.empty(0, dtype=np.uint8)
        self._record = {"trades": "trade", "book": "book_update"}
        self._data_at = RAW_CHUNK.dtype.fields["data"][1]

    def process(self, batch: np.ndarray, port: str) -> np.ndarray | None:
        """The batch's frames, cut into chunks (views on buffers this stage reuses: the runtime
        copies them into the ring before the next call). One copy of the bytes into the
        chunks' ``data``, the last chunk's tail zeroed."""
        if not len(batch):
            return None
        need = len(batch) * self._frame_size(port, batch)
        if len(self._frames) < need:
            self._frames = np.empty(max(need, 2 * len(self._frames)), dtype=np.uint8)
        frames = self.encoder.encode(self._record[port], batch, out=self._frames)
        frame_size = len(frames) // len(batch)
        n = -(-len(frames) // RAW_CHUNK_BYTES)
        if len(self._out) < n:
            self._out = RAW_CHUNK.empty(max(n, 2 * len(self._out)))
        out = self._out[:n]
        data = out.view(np.uint8).reshape(n, RAW_CHUNK.itemsize)[:, self._data_at :]
        data = data[:, :RAW_CHUNK_BYTES]
        full = (n - 1) * RAW_CHUNK_BYTES
        data[: n - 1] = frames[:full].reshape(n - 1, RAW_CHUNK_BYTES)
        tail = len(frames) - full
        data[n - 1, :tail] = frames[full:]
        data[n - 1, tail:] = 0
        out["length"] = RAW_CHUNK_BYTES
        out["length"][-1] = tail
        out["flags"] = 0
        first = np.arange(0, n * RAW_CHUNK_BYTES, RAW_CHUNK_BYTES) // frame_size
        np.minimum(first, len(batch) - 1, out=first)
        out["ts_event"] = batch["ts_event"][first]
        out["ts_recv"] = batch["ts_recv"][first]
        out["seq"] = np.arange(self._seq, self._seq + n, dtype=np.uint64)
        out["instrument_id"] = self.params.stream_id
        self._seq += n
        return out

    def _frame_size(self, port: str, batch: np.ndarray) -> int:
        return len(self.encoder._plan(self._record[port], batch.dtype).template)

    def snapshot(self) -> dict:
        return {"seq": self._seq}

    def restore(self, state: dict) -> None:
        self._seq = int(state["seq"])


# --------------------------------------------------------------------------- decode


class SbeDecodeParams(Params):
    schema: str = restart(
        "sbe/hftagg-md.xml",
        description="SBE XML schema: protocol_paths, config folder, or built-in",
    )
    framing: Literal["length2", "sofh", "mdp3"] = restart(
        "length2", description="length2 / sofh on a byte stream; mdp3: one CME packet per chunk"
    )
    mapping: Literal["auto", "records", "cme_mdp3"] = restart(
        "auto", description="records: messages named after record schemas; auto: by schema"
    )
    max_frame_bytes: int = restart(65535, ge=16, le=1 << 24, description="larger frames are bad")
    venue: str = restart(
        "cme", min_length=1, description="cme_mdp3: registry venue of the SecurityIDs"
    )


class SbeDecode(Stage):
    kind = "protocol"
    type_name = "sbe_decode"
    Params = SbeDecodeParams
    inputs = {"input": Port("raw_chunk", "raw.sbe", "SBE bytes (stream pieces or datagrams)")}
    outputs = {
        "trades": Port("trade", "md.trades", "decoded trades"),
        "book": Port("book_update", "md.book", "decoded book updates"),
        "mbp10": Port("mbp10", "md.mbp10", "decoded MBP-10 snapshots"),
        "dead_letters": Port(
            "dead_letter", "dead_letters.sbe_decode", "input that could not be decoded"
        ),
    }

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        return _schema_problems(ctx, self.params.schema)

    def open(self, ctx: StageContext) -> None:
        p = self.params
        self.codec = _family(ctx).codec(p.schema, p.max_frame_bytes)
        mapping = p.mapping
        if mapping == "auto":
            mapping = "cme_mdp3" if self.codec.schema.package == "mktdata" else "records"
        self.mapping = mapping
        self.records = RecordDecoder(self.codec, {s.name: s for s in (TRADE, BOOK_UPDATE, MBP10)})
        self._streams: dict[int, _StreamState] = {}
        self._buf = np.zeros(0, dtype=np.uint8)
        self.dead_letter_counts: dict[str, int] = {}
        self.messages = 0
        self.sequencer = Mdp3Sequencer()  # cme_mdp3: RptSeq per SecurityID across entry types
        # cme_mdp3: SecurityID -> registry instrument_id (the sequencer keeps SecurityIDs)
        self.instruments = Mdp3Instruments(ctx.instruments, p.venue)

    def process(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self._handed_over = False
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
                self._datagrams(sel, stream, out)
            elif not dg.any():
                self._stream(sel, stream, out)
            else:  # mixed: keep order, one run at a time
                edges = np.flatnonzero(np.diff(dg.astype(np.int8))) + 1
                for run in np.split(np.arange(len(sel)), edges):
                    if dg[run[0]]:
                        self._datagrams(sel[run], stream, out)
                    else:
                        self._stream(sel[run], stream, out)
        return _joined(out)

    def flush_pending(self) -> dict[str, np.ndarray]:
        """End every stream: decide on the bytes still waiting for the rest of a frame.

        What they hold is decoded as if no more bytes will come: good messages after a frame
        that can no longer complete still decode, a bad run still open ends at the end of the
        stream, and a frame the stream really ends inside is an ``end of stream`` dead letter.
        """
        out: dict[str, list[np.ndarray]] = {port: [] for port in self.outputs}
        for stream, st in self._streams.items():
            if st.waiting:
                self._end_stream(stream, st, out)
        return _joined(out)

    # -- a byte stream ---------------------------------------------------------------------

    def _state(self, stream: int) -> _StreamState:
        st = self._streams.get(stream)
        if st is None:
            st = self._streams[stream] = _StreamState()
        return st

    def _stream(self, chunks: np.ndarray, stream: int, out: dict) -> None:
        st = self._state(stream)
        buf, starts = self._bytes(chunks, st.pending)
        base = st.position - len(st.pending)  # stream offset of buf[0]
        marks = np.concatenate((st.mark_offsets, base + starts))
        mark_ts = np.concatenate((st.mark_ts, chunks["ts_recv"]))
        sc = self._scan(buf, None, False, st.run_at(base), Reason.TRUNCATED,
                        chunks["ts_recv"][:1], out)  # fmt: skip
        self._stream_dead_letters(sc.errors, base, marks, mark_ts, st, stream, out)
        st.keep(buf, sc.consumed, sc.run, base, marks, mark_ts)

    def _end_stream(self, stream: int, st: _StreamState, out: dict) -> None:
        buf = np.frombuffer(st.pending, dtype=np.uint8)
        base = st.position - len(buf)
        sc = self._scan(buf, None, True, st.run_at(base), Reason.END_OF_STREAM,
                        st.mark_ts[:1] if len(st.mark_ts) else np.zeros(1, np.int64),
                        out)  # fmt: skip
        self._stream_dead_letters(sc.errors, base, st.mark_offsets, st.mark_ts, st, stream, out)
        st.keep(buf, len(buf), sc.run, base, st.mark_offsets, st.mark_ts)

    def _stream_dead_letters(self, errors, base, marks, mark_ts, st, stream, out) -> None:
        if not len(errors):
            return
        offsets = base + errors["offset"]
        chunk = np.searchsorted(marks, offsets, side="right") - 1
        ts = np.where(chunk >= 0, mark_ts[np.maximum(chunk, 0)] if len(marks) else 0, st.run_ts)
        out["dead_letters"].append(self._dead(errors["reason"], offsets, errors["length"],
                                              errors["detail"], ts, stream))  # fmt: skip

    # -- datagrams -------------------------------------------------------------------------

    def _datagrams(self, chunks: np.ndarray, stream: int, out: dict) -> None:
        st = self._state(stream)
        if st.waiting:  # stream bytes, then datagrams: that stream ends here
            self._end_stream(stream, st, out)
        buf, starts = self._bytes(chunks, b"")
        ends = starts + np.minimum(chunks["length"].astype(np.int64), RAW_CHUNK_BYTES)
        ts_recv = chunks["ts_recv"]
        sc = self._scan(buf, (starts, ends), True, None, Reason.TRUNCATED, ts_recv, out)
        errors = sc.errors
        if len(errors):
            out["dead_letters"].append(self._dead(errors["reason"], st.position + errors["offset"],
                                                  errors["length"], errors["detail"],
                                                  ts_recv[errors["segment"]], stream))  # fmt: skip
        unmapped = getattr(self, "_unmapped", None)
        if unmapped is not None and len(unmapped[1]):  # cme_mdp3: templates without a record
            sc, idx, tid = unmapped
            out["dead_letters"].append(
                self._dead(
                    np.full(len(idx), Reason.UNMAPPED_TEMPLATE),
                    st.position + sc.msg_frame[idx],
                    sc.msg_end[idx] - sc.msg_frame[idx],
                    tid,
                    ts_recv[sc.msg_segment[idx]],
                    stream,
                )
            )
        self._unmapped = None
        st.position += len(buf)

    # -- shared ----------------------------------------------------------------------------

    def _bytes(self, chunks: np.ndarray, pending: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Pending bytes + these chunks', and each chunk's start in that buffer."""
        lengths = np.minimum(chunks["length"].astype(np.int64), RAW_CHUNK_BYTES)
        total = len(pending) + int(lengths.sum())
        if len(self._buf) < total:
            self._buf = np.zeros(max(total, 2 * len(self._buf)), dtype=np.uint8)
        buf = self._buf[:total]
        buf[: len(pending)] = np.frombuffer(pending, dtype=np.uint8)
        compact_chunks(chunks["data"], lengths, buf[len(pending) :])
        starts = len(pending) + np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        return buf, starts

    def _scan(self, buf, segments, final, run, cut_reason, seg_ts, out) -> Scan:
        """One compiled scan of ``buf``; its records go to ``out``."""
        sc = self.codec.scan(buf, self.params.framing, segments, final, cut_reason, run)
        if self.mapping == "cme_mdp3":
            decoded = self.codec.decode_scan(sc)
            used = self.instruments.learn(decoded)  # definitions: read, not dead letters
            for name, records in mdp3_records(self.codec, decoded, seg_ts, self.sequencer).items():
                if len(records):
                    records["instrument_id"] = self.instruments.map(records["instrument_id"])
                    out[_PORT_OF[name]].append(records)
            self._unmapped = (sc, *unmapped_messages(decoded, used))
        else:
            for name, records in self.records.records(sc).items():
                if len(records):
                    out[_PORT_OF[name]].append(records)  # a new buffer per scan: no copy
        self.messages += len(sc.msg_slot)
        return sc

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

    def close(self) -> None:
        """Say what is left undecided (a rebuild carries it over through ``snapshot`` instead)."""
        waiting = {k: st for k, st in getattr(self, "_streams", {}).items() if st.waiting}
        if waiting and not getattr(self, "_handed_over", False):
            held = sum(len(st.pending) for st in waiting.values())
            runs = sum(st.run is not None for st in waiting.values())
            log.warning(
                "sbe_decode %r closes with %d byte(s) of unfinished frames and %d open bad "
                "run(s) on stream(s) %s, never decoded nor dead-lettered; call flush_pending() "
                "at the end of a stream to decide on them", self.stage_id, held, runs,
                sorted(waiting),
            )  # fmt: skip

    def snapshot(self) -> dict:
        self._handed_over = True  # until the next batch: the successor carries the state on
        return {"streams": {k: st.snapshot() for k, st in self._streams.items()},
                "mdp3": self.sequencer.snapshot()}  # fmt: skip

    def restore(self, state: dict) -> None:
        self._streams = {k: _StreamState.restored(v) for k, v in state["streams"].items()}
        if "mdp3" in state:
            self.sequencer.restore(state["mdp3"])


class _StreamState:
    """What one byte stream leaves between batches.

    ``pending``: the bytes from the first one the decoder could not decide on yet (a frame the
    stream has not finished); ``run``: a bad run still open, as (reason, start, detail, end its
    first frame declared or -1) in stream offsets, with the ``ts_recv`` of the chunk it started
    in; ``mark_offsets``/``mark_ts``: where the chunks holding pending bytes start, and their
    ``ts_recv``, so a dead letter carries the receive time of the chunk its bytes came in.
    """

    def __init__(self) -> None:
        self.position = 0  # stream offset just past the last byte received
        self.pending = b""
        self.run: tuple[int, int, int, int] | None = None
        self.run_ts = 0
        self.mark_offsets = np.zeros(0, dtype=np.int64)
        self.mark_ts = np.zeros(0, dtype=np.int64)

    @property
    def waiting(self) -> bool:
        return bool(self.pending) or self.run is not None

    def run_at(self, base: int) -> np.ndarray | None:
        """The open run in the coordinates of a buffer that starts at stream offset ``base``."""
        if self.run is None:
            return None
        reason, start, detail, skip = self.run
        return np.array([reason, start - base, detail, skip - base if skip >= 0 else -1])

    def keep(self, buf, consumed, run, base, marks, mark_ts) -> None:
        """After a scan of ``buf`` (at stream offset ``base``) that used ``consumed`` bytes."""
        self.position = base + len(buf)
        self.pending = buf[consumed:].tobytes()
        first = max(int(np.searchsorted(marks, base + consumed, side="right")) - 1, 0)
        keep = slice(first, None) if self.pending else slice(0, 0)
        self.mark_offsets, self.mark_ts = marks[keep].copy(), mark_ts[keep].copy()
        if not run[K.R_REASON]:
            self.run = None
            return
        start = base + int(run[K.R_START])
        if self.run is None or self.run[1] != start:  # a run that started in this buffer
            chunk = int(np.searchsorted(marks, start, side="right")) - 1
            self.run_ts = int(mark_ts[chunk]) if chunk >= 0 else self.run_ts
        skip = int(run[K.R_SKIP])
        self.run = (int(run[K.R_REASON]), start, int(run[K.R_DETAIL]),
                    base + skip if skip >= 0 else -1)  # fmt: skip

    def snapshot(self) -> dict:
        return {"position": self.position, "pending": self.pending, "run": self.run,
                "run_ts": self.run_ts, "mark_offsets": self.mark_offsets.tolist(),
                "mark_ts": self.mark_ts.tolist()}  # fmt: skip

    @classmethod
    def restored(cls, state: dict) -> _StreamState:
        st = cls()
        st.position, st.pending, st.run_ts = state["position"], state["pending"], state["run_ts"]
        st.run = tuple(state["run"]) if state["run"] else None
        st.mark_offsets = np.array(state["mark_offsets"], dtype=np.int64)
        st.mark_ts = np.array(state["mark_ts"], dtype=np.int64)
        return st


def _joined(out: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {port: (parts[0] if len(parts) == 1 else np.concatenate(parts))
            for port, parts in out.items() if parts}  # fmt: skip


@hookimpl
def hftagg_register_codecs(register):
    register(FAMILY)


@hookimpl
def hftagg_register_stage_types(register):
    register(SbeEncode)
    register(SbeDecode)
