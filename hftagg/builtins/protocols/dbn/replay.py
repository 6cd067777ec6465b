"""Built-in plugin: ``dbn_replay``, a source that replays Databento DBN files.

Reads DBN version 1, 2 and 3 files, plain or zstd-compressed (``path``: one file or a glob,
files in name order), decodes them with :mod:`hftagg.builtins.protocols.dbn` (vectorised: numpy views
over the decoded bytes, one compiled pass to find record boundaries) and publishes hftagg
records on these ports (topics ``md.<port>`` under ``[data_sources.<name>]``):

=============  ======================  ========================================================
port           schema                  from DBN schema
=============  ======================  ========================================================
trades         trade                   trades; mbp-1/mbp-10/cmbp-1 action T; tbbo, tcbbo
quotes         quote                   mbp-1 (BBO after), tbbo (before), bbo/cbbo-1s/1m, cmbp-1
book           book_update             mbp-1, mbp-10 (level updates, see the mapping module)
mbo            mbo                     mbo
depth          mbp10                   mbp-10
ohlcv          bar                     ohlcv-1s/1m/1h/1d/eod (ts_event = bar close)
definitions    instrument_definition   definition
statistics     statistics              statistics
imbalance      imbalance               imbalance
status         status                  status
dead_letters   dead_letter             bad input, with a reason code (always present)
=============  ======================  ========================================================

Symbol mappings -- the files' metadata and live ``SymbolMappingMsg`` records -- and
instrument definition records (tick, lot, multiplier, expiry, currency) are defined
in the instrument registry (``ctx.instruments``; venue = the dataset lower-cased, the vendor's
id pinned: :mod:`hftagg.builtins.protocols.dbn.symbols`), so ``tail`` and ``store ls`` show
symbols; ``counters`` says how many (``symbol_mappings``) and how many were refused because
another instrument holds the id (``symbol_conflicts``, each id warned once).

Only the ports the files' schemas feed exist (read from the files' metadata when the graph is
built; a file with mixed schemas gets them all), so a trades file offers ``trades`` and
``dead_letters``. The exact field mapping is in :mod:`hftagg.builtins.protocols.dbn.mapping`.

Pacing (``speed``): 0 replays as fast as the pipeline takes it; 1.0 at the recorded pace of
``pace_by`` (``ts_recv`` or ``ts_event``; records without ``ts_recv``, i.e. bars, use
``ts_event``); N is N times faster. The clock is re-anchored at the start of each file, after a
``loop`` and when ``speed`` changes, so a gap between files is not waited for; a gap inside a
file is. ``next_batch`` never blocks: it returns what is due now (at most ``batch_records``
records) and ``next_awake`` says when the next record is due.
"""

from __future__ import annotations

import os
import time
from typing import Literal

import numpy as np

from hftagg.builtins.protocols.dbn import (
    DEAD_LETTER_PORT,
    PORTS,
    SCHEMA_PORTS,
    Counters,
    DbnDecoder,
    DbnFile,
    DbnFormatError,
    Reason,
    expand_paths,
    read_metadata,
)
from hftagg.builtins.protocols.dbn.symbols import RegistryFeed
from hftagg.config.paths import config_relative
from hftagg.hookspecs import hookimpl
from hftagg.stages import Params, Port, SourcePosition, SourceStage, StageContext, live, restart

__all__ = ["DbnReplay", "DbnReplayParams"]

_DOCS = {
    "trades": "trade prints",
    "quotes": "best bid and offer",
    "book": "market-by-price level updates",
    "mbo": "market-by-order events",
    "depth": "ten levels per side, as recorded",
    "ohlcv": "OHLCV bars (ts_event = bar close)",
    "definitions": "instrument definitions",
    "statistics": "venue statistics",
    "imbalance": "auction imbalances",
    "status": "trading-status changes (halt, pause, open...)",
}
_READS_PER_CALL = 8  # pieces of input read by one next_batch call at most
_PORT_CACHE: dict[tuple, tuple[str, ...]] = {}


class DbnReplayParams(Params):
    path: str = restart(
        description="a DBN file (.dbn or .dbn.zst) or a glob of them, relative to the config file"
    )
    speed: float = live(
        0.0,
        ge=0,
        le=1e9,
        description="0 = as fast as possible, 1.0 = recorded pace, N = N x faster",
    )
    pace_by: Literal["ts_recv", "ts_event"] = live("ts_recv", description="timestamp paced by")
    batch_records: int = live(4096, ge=1, le=1 << 20, description="largest batch per call")
    loop: bool = live(False, description="start again from the first file after the last")
    chunk_bytes: int = restart(
        1 << 20, ge=4096, le=1 << 30, description="bytes read from the file per piece"
    )


def _file_ports(paths: list[str]) -> tuple[str, ...]:
    """The ports these files' schemas feed (every port when one file has mixed schemas)."""
    key = tuple((p, os.stat(p).st_mtime_ns if os.path.exists(p) else 0) for p in paths)
    cached = _PORT_CACHE.get(key)
    if cached is not None:
        return cached
    ports: set[str] = set()
    for p in paths:
        try:
            schema = read_metadata(p).schema
        except (OSError, DbnFormatError):
            continue  # reported as a dead letter when replayed
        ports.update(PORTS if schema is None else SCHEMA_PORTS.get(schema, ()))
    result = tuple(p for p in PORTS if p in ports)
    _PORT_CACHE[key] = result
    return result


class DbnReplay(SourceStage):
    type_name = "dbn_replay"
    Params = DbnReplayParams
    outputs = {port: Port(schema, f"md.{port}", _DOCS[port]) for port, schema in PORTS.items()}
    outputs[DEAD_LETTER_PORT] = Port(
        "dead_letter", "dead_letters.dbn_replay", "undecodable input, with a reason code"
    )

    def __init__(self, params: DbnReplayParams | None = None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._paths = expand_paths(config_relative(self.params.path))
        if not self._paths:
            raise ValueError(
                f"path {self.params.path!r} matches no file; give a .dbn or "
                f".dbn.zst file or a glob such as 'data/*.dbn.zst'"
            )

    @classmethod
    def ports(cls, params: DbnReplayParams) -> tuple[dict[str, Port], dict[str, Port]]:
        fed = _file_ports(expand_paths(config_relative(params.path)))
        outputs = {p: port for p, port in cls.outputs.items() if p in fed}
        outputs[DEAD_LETTER_PORT] = cls.outputs[DEAD_LETTER_PORT]
        return {}, outputs

    # -- lifecycle -------------------------------------------------------------------------------

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        """Every file ``path`` names must open and read (``hftagg config validate`` says which
        one cannot, and why), without decoding anything."""
        problems = []
        for name in self._paths:
            try:
                with open(name, "rb") as file:
                    file.read(4)
            except OSError as exc:
                problems.append(("path", f"cannot read {name}: {exc.strerror or exc}"))
        return problems

    def open(self, ctx: StageContext) -> None:
        self._counters = Counters()
        self.counters = {"records": 0, "dead_letters": 0, "files": 0, "loops": 0, "bytes": 0}
        self._symbols = RegistryFeed(ctx.instruments, self.counters)
        self._index = -1  # file being read
        self._file: DbnFile | None = None
        self._decoder: DbnDecoder | None = None
        self._done = False
        self._anchor: tuple[float, int] | None = None
        self._last_ts: int | None = None
        self._next_awake: float | None = None
        self._skip = 0  # records to drop on (re)opening a file, from restore()
        self._pass_start = 0  # records count when the current pass over the files began

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    # -- reading ---------------------------------------------------------------------------------

    def _open_next(self) -> None:
        """Move to the next file (or back to the first when looping; or finish)."""
        self.close()
        self._index += 1
        if self._index >= len(self._paths):
            if not self.params.loop or self.counters["records"] == self._pass_start:
                self._done = True  # not looping, or a whole pass gave no record: stop
                return
            self._pass_start = self.counters["records"]
            self._index = 0
            self.counters["loops"] += 1
        path = self._paths[self._index]
        self._decoder = DbnDecoder(
            source_id=self._index, name=path, counters=self._counters, on_symbols=self._symbols
        )
        self._anchor = None
        self.counters["files"] += 1
        try:
            self._file = DbnFile(path, self.params.chunk_bytes)
        except (OSError, DbnFormatError) as exc:
            reason = exc.reason if isinstance(exc, DbnFormatError) else Reason.IO_ERROR
            self._decoder.fail(reason, str(exc))
            self._decoder.finish()

    def _fill(self) -> None:
        """Read input until records or dead letters are ready (a bounded number of pieces)."""
        for _ in range(_READS_PER_CALL):
            dec = self._decoder
            if dec is not None and (dec.available or dec.has_dead_letters):
                return
            if dec is None or dec.done:
                if self._done:
                    return
                self._open_next()
                continue
            self._read_piece(dec)

    def _read_piece(self, dec: DbnDecoder) -> None:
        try:
            piece = self._file.read()
        except (OSError, DbnFormatError) as exc:
            reason = exc.reason if isinstance(exc, DbnFormatError) else Reason.IO_ERROR
            dec.fail(reason, str(exc))
            piece = None
        if piece is None:
            dec.finish(self._file.truncated_frame)
            self.close()
        else:
            self.counters["bytes"] += len(piece)
            dec.feed(piece)
        if self._skip and dec.available:
            self._skip -= dec.skip(self._skip)

    # -- pacing ----------------------------------------------------------------------------------

    def _due(self, n: int) -> int:
        """How many of the next ``n`` records are due at the configured pace."""
        p = self.params
        self._next_awake = None
        if p.speed == 0 or n == 0:
            return n
        ts = self._decoder.pace_times(n, p.pace_by)
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, int(ts[0]))
        wall0, ts0 = self._anchor
        limit = ts0 + (now - wall0) * p.speed * 1e9
        due = int(np.searchsorted(ts, limit, side="right"))
        if due == 0:
            self._next_awake = wall0 + (int(ts[0]) - ts0) / (p.speed * 1e9)
        else:
            self._last_ts = int(ts[due - 1])
        return due

    # -- SourceStage -----------------------------------------------------------------------------

    def next_batch(self) -> dict[str, np.ndarray] | None:
        self._fill()
        dec = self._decoder
        if dec is None:
            return None
        n = self._due(min(self.params.batch_records, dec.available))
        out = dec.take(n)
        if not out:
            return None
        self.counters["records"] += n
        if "definitions" in out:
            self._symbols.definitions(dec.metadata.dataset, out["definitions"])
        if DEAD_LETTER_PORT in out:
            self.counters["dead_letters"] += len(out[DEAD_LETTER_PORT])
        return out

    def next_awake(self) -> float | None:
        if self._next_awake is None:
            return None
        return max(self._next_awake, time.monotonic() + 0.0002)

    @property
    def exhausted(self) -> bool:
        return self._done and (self._decoder is None or self._decoder.done)

    def reconfigure(self, params: DbnReplayParams) -> None:
        if params.speed != self.params.speed or params.pace_by != self.params.pace_by:
            self._anchor = None if self._last_ts is None else (time.monotonic(), self._last_ts)
            if params.pace_by != self.params.pace_by:
                self._anchor = None
        self.params = params

    def snapshot(self) -> dict:
        dec = self._decoder
        return {
            "index": self._index,
            "records": dec.stats["records"] if dec is not None else 0,
            "counters": dict(self._counters.next),
            "stats": dict(self.counters),
        }

    # -- durability (the write-ahead log) -------------------------------------------------------

    resumable = True

    def position(self) -> dict:
        """File index and framed records read from it (logged with each batch)."""
        dec = self._decoder
        return {"index": self._index, "records": dec.stats["records"] if dec is not None else 0}

    def resume(self, position: SourcePosition) -> None:
        """Continue after the last batch the write-ahead log holds: at the same record of the
        same file (earlier files are not read again). The decoder's per-instrument sequence
        check starts afresh there, and dead letters found in the skipped part of that file
        are reported again."""
        state = position.state
        if not isinstance(state, dict) or "index" not in state:
            return  # nothing logged with a position: a fresh start
        self._index = int(state["index"]) - 1
        self._skip = int(state["records"])
        if state["index"] >= 0:
            self._open_next()

    def restore(self, state: dict) -> None:
        """Resume at the same record of the same file (earlier files are not read again)."""
        self._index = state["index"] - 1
        self._skip = state["records"]
        self._counters.next.update(state["counters"])
        self.counters.update(state["stats"])
        self.counters["files"] -= 1 if state["index"] >= 0 else 0
        if state["index"] >= 0:
            self._open_next()


@hookimpl
def hftagg_register_stage_types(register):
    register(DbnReplay)
