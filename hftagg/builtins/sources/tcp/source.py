"""Built-in plugin: the ``tcp`` source, a framed byte stream from a TCP peer.

``mode = "connect"`` (default) connects to ``host``:``port`` and reconnects after a drop with
capped exponential backoff and jitter; ``mode = "listen"`` binds ``host``:``port`` (loopback
by default) and serves one peer at a time. A reader thread hands the bytes over as they come;
``next_batch`` cuts them into frames with the shared framer
(:mod:`hftagg.builtins.sources.framing`: ``length``, ``delimited`` or ``fix``), keeping a
partial frame across reads, and emits one ``raw_chunk`` per frame (flags bit 0: a whole frame)
on ``frames`` -- what ``sbe_decode`` (``framing = "length2"`` with the default 2-byte
little-endian self-counting prefix) and ``fix_decode`` take.

Nothing is dropped silently: an oversized frame (longer than ``max_frame_bytes``, at most a
``raw_chunk``'s 4064 bytes) is skipped whole and dead-lettered with its declared size; a bad
length prefix, garbage between FIX messages and a frame cut by a disconnect are dead letters
too. Each connect and disconnect is an alert (and ``metrics()``: ``connection_state``).

Instruments: a ``raw_chunk`` is not an instrument. Its ``instrument_id`` is the ``stream_id``
param (which stream the bytes belong to: the decoders keep their per-stream state by it, and
dead letters name it); the decoders map what the bytes describe through the instrument registry
(``fix_decode``: Symbol (55); ``sbe_decode`` with ``cme_mdp3``: SecurityID), not the raw sources.
"""

from __future__ import annotations

import logging
import math
import random
import selectors
import socket
import threading
import time
from typing import Literal

import numpy as np

from hftagg.builtins.sources import framing as F
from hftagg.builtins.sources.multicast import packets as P
from hftagg.errors import ConfigError
from hftagg.hookspecs import hookimpl
from hftagg.records.catalog import ALERT, DEAD_LETTER, RAW_CHUNK_BYTES
from hftagg.stages import Params, Port, SourceStage, StageContext, restart

__all__ = ["Tcp", "TcpParams"]

log = logging.getLogger("hftagg.tcp")
_STATUS_REASON = {F.OVERSIZED: P.OVERSIZED, F.BAD_LENGTH: P.BAD_LENGTH, F.GARBAGE: P.GARBAGE,
                  F.BAD_FIX: P.BAD_FIX}  # fmt: skip


class TcpParams(Params):
    host: str = restart("127.0.0.1", description="peer (connect) or local address (listen)")
    port: int = restart(..., ge=1, le=65535)
    mode: Literal["connect", "listen"] = restart("connect")
    framing: Literal["length", "delimited", "fix"] = restart("length")
    length_bytes: Literal[1, 2, 4] = restart(2, description="length prefix width")
    length_byte_order: Literal["little", "big"] = restart("little")
    length_includes_prefix: bool = restart(True, description="the prefix counts itself (SBE)")
    delimiter: str = restart("\n", min_length=1, description="frame terminator (delimited)")
    max_frame_bytes: int = restart(
        RAW_CHUNK_BYTES, ge=2, le=RAW_CHUNK_BYTES, description="longer frames are dead letters"
    )
    reconnect_initial_s: float = restart(0.2, gt=0, le=3600)
    reconnect_max_s: float = restart(10.0, gt=0, le=3600)
    reconnect_jitter: float = restart(0.5, ge=0, le=1)
    stream_id: int = restart(0, ge=0, le=2**32 - 1, description="raw_chunk instrument_id")


class Tcp(SourceStage):
    """A framed TCP byte stream: frames out as ``raw_chunk`` records."""

    type_name = "tcp"
    Params = TcpParams
    outputs = {
        "frames": Port("raw_chunk", "raw.tcp", "one whole frame per raw_chunk"),
        "alerts": Port("alert", "alerts.tcp", "connected / disconnected"),
        "dead_letters": Port("dead_letter", "dead_letters.tcp",
                             "oversized, bad-length, garbage or cut frames"),
    }  # fmt: skip

    def open(self, ctx: StageContext) -> None:
        p = self.params
        self.framer = self._new_framer()
        self._lock = threading.Lock()
        self._items: list[tuple[str, object, int]] = []  # ("data", bytes | "event", code), ts
        self._stop = threading.Event()
        self._seq = 0
        self._alert_seq = 0
        self._offset = 0  # stream offset of the framer's buffer start
        self.connected = threading.Event()
        self.counts = {"frames": 0, "bytes": 0, "connects": 0, "disconnects": 0,
                       "dead_oversized": 0, "dead_bad_length": 0, "dead_garbage": 0,
                       "dead_bad_fix": 0, "dead_truncated": 0}  # fmt: skip
        self._listener = None
        if p.mode == "listen":
            try:
                self._listener = socket.create_server((p.host, p.port), reuse_port=False)
            except OSError as exc:
                raise ConfigError(f"stage {self.stage_id!r}: cannot listen on {p.host}:{p.port}: "
                                  f"{exc}; choose a free port or a local address") from exc  # fmt: skip
            self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, name=f"tcp:{self.stage_id}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _new_framer(self) -> F.StreamFramer:
        p = self.params
        return F.StreamFramer(p.framing, p.length_bytes, p.length_byte_order == "big",
                              p.length_includes_prefix, p.delimiter.encode(),
                              p.max_frame_bytes)  # fmt: skip

    # -- reader thread --------------------------------------------------------------------------

    def _push(self, kind: str, value: object) -> None:
        with self._lock:
            self._items.append((kind, value, time.time_ns()))
        self.wake()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            sock = self._accept() if self._listener else self._connect()
            if sock is None:
                if self._listener is None:
                    attempt += 1
                    self._stop.wait(self._backoff(attempt))
                continue
            attempt = 0
            self._push("event", P.CONNECTED)
            self.connected.set()
            try:
                self._pump(sock)
            finally:
                sock.close()
                self.connected.clear()
                self._push("event", P.DISCONNECTED)

    def _backoff(self, attempt: int) -> float:
        p = self.params
        delay = min(p.reconnect_max_s, p.reconnect_initial_s * 2 ** (attempt - 1))
        return delay * (1 - p.reconnect_jitter * random.random())

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection((self.params.host, self.params.port), timeout=2.0)
        except OSError as exc:
            log.info("tcp %s: connect to %s:%d failed: %s", self.stage_id, self.params.host,
                     self.params.port, exc)  # fmt: skip
            return None

    def _accept(self) -> socket.socket | None:
        try:
            sock, _ = self._listener.accept()
            return sock
        except (TimeoutError, OSError):
            return None

    def _pump(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                if not sel.select(timeout=0.2):
                    continue
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self._push("data", data)
        finally:
            sel.close()

    # -- SourceStage ----------------------------------------------------------------------------

    def next_awake(self) -> float | None:
        return math.inf  # the reader thread rings wake()

    def next_batch(self) -> dict[str, np.ndarray] | None:
        with self._lock:
            items, self._items = self._items, []
        if not items:
            return None
        frames, alerts, dead = [], [], []
        run: list[bytes] = []
        for kind, value, ts in items:
            if kind == "data":
                run.append(value)
                last_ts = ts
                continue
            if run:
                self._frame(b"".join(run), last_ts, frames, dead)
                run = []
            if value == P.DISCONNECTED:
                self._end_stream(ts, dead)
                self.counts["disconnects"] += 1
            else:
                self.counts["connects"] += 1
            alerts.append((value, ts))
        if run:
            self._frame(b"".join(run), last_ts, frames, dead)
        out = {}
        if frames:
            out["frames"] = np.concatenate(frames) if len(frames) > 1 else frames[0]
        if alerts:
            out["alerts"] = self._alerts(alerts)
        if dead:
            out["dead_letters"] = np.concatenate(dead)
        return out or None

    def _frame(self, data: bytes, ts: int, frames: list, dead: list) -> None:
        self.counts["bytes"] += len(data)
        base = self._offset - self.framer.pending_bytes
        buf, spans, _ = self.framer.feed(data)
        self._offset += len(data)
        good = spans[:, 2] == F.OK
        if good.any():
            chunk = F.frames_to_chunks(buf, spans[good], ts, self.params.stream_id, self._seq)
            self._seq += len(chunk)
            self.counts["frames"] += len(chunk)
            frames.append(chunk)
        bad = spans[~good]
        if len(bad):
            reasons = np.array([_STATUS_REASON[int(s)] for s in bad[:, 2]], dtype=np.uint32)
            lengths = bad[:, 1] - bad[:, 0]
            if bad[-1, 2] == F.OVERSIZED and bad[-1, 1] == len(buf):
                lengths[-1] += self.framer.skipping  # its tail, still to come, is skipped too
            dead.append(self._dead(reasons, base + bad[:, 0], lengths, ts))
            for r in reasons.tolist():
                key = "dead_" + _REASON_NAME[r]
                self.counts[key] += 1

    def _end_stream(self, ts: int, dead: list) -> None:
        """The connection closed: a partial frame is cut (a dead letter); a new stream starts."""
        held = self.framer.pending_bytes
        if held:
            offset = np.array([self._offset - held], dtype=np.int64)
            dead.append(self._dead(np.array([P.TRUNCATED_FRAME], dtype=np.uint32), offset,
                                   np.array([held]), ts))  # fmt: skip
            self.counts["dead_truncated"] += 1
        skipped = self.framer.oversized_bytes
        self.framer = self._new_framer()
        self.framer.oversized_bytes = skipped  # a running total over connections

    def _dead(self, reasons, offsets, lengths, ts) -> np.ndarray:
        dl = DEAD_LETTER.empty(len(reasons))
        dl["ts_recv"] = ts
        dl["ts_event"] = ts
        dl["instrument_id"] = self.params.stream_id
        dl["source_id"] = self.params.stream_id
        dl["reason"] = reasons
        dl["raw_offset"] = offsets
        dl["seq"] = offsets
        dl["raw_length"] = np.minimum(lengths, 2**32 - 1)
        dl["detail"] = [f"tcp {self.stage_id}: {_REASON_NAME[int(r)]}".encode()[:64]
                        for r in reasons.tolist()]  # fmt: skip
        return dl

    def _alerts(self, rows: list[tuple[int, int]]) -> np.ndarray:
        out = ALERT.empty(len(rows))
        out["code"] = [r[0] for r in rows]
        out["ts_recv"] = [r[1] for r in rows]
        out["ts_event"] = out["ts_recv"]
        out["seq"] = np.arange(self._alert_seq, self._alert_seq + len(rows), dtype=np.uint64)
        self._alert_seq += len(rows)
        out["instrument_id"] = self.params.stream_id
        out["severity"] = [0 if r[0] == P.CONNECTED else 1 for r in rows]
        where = f"{self.params.host}:{self.params.port}"
        out["text"] = [f"tcp {where} {_REASON_NAME[r[0]]}".encode()[:48] for r in rows]
        return out

    def metrics(self) -> dict[str, int]:
        """Frames, bytes, connects, disconnects, dead letters by reason, connection_state
        (1 connected, 0 not) and ``oversized_bytes`` skipped."""
        counts = dict(getattr(self, "counts", {}))
        if hasattr(self, "connected"):
            counts["connection_state"] = int(self.connected.is_set())
            counts["oversized_bytes"] = self.framer.oversized_bytes
        return counts

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is None:
            return
        stop.set()
        self._thread.join(timeout=5.0)
        if self._listener is not None:
            self._listener.close()


_REASON_NAME = {P.OVERSIZED: "oversized", P.BAD_LENGTH: "bad_length", P.GARBAGE: "garbage",
                P.BAD_FIX: "bad_fix", P.TRUNCATED_FRAME: "truncated", P.CONNECTED: "connected",
                P.DISCONNECTED: "disconnected"}  # fmt: skip


@hookimpl
def hftagg_register_stage_types(register):
    register(Tcp)
