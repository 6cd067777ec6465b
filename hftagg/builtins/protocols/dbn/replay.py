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

A glob (``path = "data/*.dbn.zst"``) is replayed *merged by* ``ts_event``, not file by file:
every file whose recording may hold the next records is open at once (a file is opened when the
merge reaches the ``start`` of its metadata, so a year of daily files does not open 365 files),
and each call takes, vectorised, the records that no file still to be read can precede, in
``ts_event`` order, ties in file (name) order. A file's own order is never changed (the key is
the running maximum of its ``ts_event``). Each port's batch is merged the same way. The
write-ahead log position is the number of records taken from each file.

Pacing (``speed``): 0 replays as fast as the pipeline takes it; 1.0 at the recorded pace of
``pace_by`` (``ts_recv`` or ``ts_event``; records without ``ts_recv``, i.e. bars, use
``ts_event``) over the merged records; N is N times faster. The clock is re-anchored after a
``loop`` and when ``speed`` changes. A recorded gap longer than ``max_gap_s`` (default 1 s of
recording; 0 = none) is shortened to ``max_gap_s``: one log line per gap (the first five, then
counted only) and the counters ``gaps_skipped`` / ``gap_seconds_skipped``, so a replay at
``speed = 1`` does not sit through a night or a weekend. ``progress()`` gives the percent of
the files' time range replayed and the replay clock (``ts_event`` of the last record out), as
``hftagg run`` shows for ``store_replay``. ``next_batch`` never blocks: it returns what is due
now (at most ``batch_records`` records) and ``next_awake`` says when the next record is due.
"""

from __future__ import annotations

import logging
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
_READS_PER_CALL = 8  # pieces of input read per file by one next_batch call at most
_GAPS_LOGGED = 5  # skipped gaps logged one line each; later ones are counted only
_UNDEF_END = (1 << 63) - 1  # metadata end at or above this: open-ended (DBN's UNDEF_TIMESTAMP)
log = logging.getLogger(__name__)
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
    max_gap_s: float = live(
        1.0,
        ge=0,
        le=1e9,
        description="at speed > 0, a recorded gap longer than this is shortened to this many "
        "recorded seconds (counted in gaps_skipped, logged); 0 = wait every gap out",
    )
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
        self.counters = {"records": 0, "dead_letters": 0, "files": 0, "loops": 0, "bytes": 0,
                         "gaps_skipped": 0, "gap_seconds_skipped": 0}  # fmt: skip
        self._symbols = RegistryFeed(ctx.instruments, self.counters)
        n = len(self._paths)
        self._starts = [_start_ns(p) for p in self._paths]
        self._taken = [0] * n  # records taken from each file in this pass
        self._finished = [False] * n  # file read to its end in this pass
        self._inputs: list[_Input] = []  # open files, in file order
        self._pending: list[int] = []  # files of this pass not opened yet, by (start, index)
        self._skips: dict[int, int] = {}  # records to drop on opening a file (resume/restore)
        self._done = False
        self._anchor: tuple[float, int] | None = None
        self._last_ts: int | None = None
        self._next_awake: float | None = None
        self._pass_start = 0  # records count when the current pass over the files began
        self._clock: int | None = None  # ts_event of the last record replayed
        self._start_pass()

    def close(self) -> None:
        for inp in getattr(self, "_inputs", ()):
            if inp.file is not None:
                inp.file.close()
                inp.file = None

    # -- reading ---------------------------------------------------------------------------------

    def _start_pass(self) -> None:
        todo = [i for i in range(len(self._paths)) if not self._finished[i]]
        self._pending = sorted(todo, key=lambda i: (self._starts[i], i))

    def _end_pass(self) -> None:
        """Every file read: start again when looping (and the pass gave records), or finish."""
        if not self.params.loop or self.counters["records"] == self._pass_start:
            self._done = True
            return
        self._pass_start = self.counters["records"]
        self.counters["loops"] += 1
        self._taken = [0] * len(self._paths)
        self._finished = [False] * len(self._paths)
        self._anchor = None  # the recording starts again: so does the pacing clock
        self._start_pass()

    def _open(self, index: int) -> None:
        path = self._paths[index]
        dec = DbnDecoder(
            source_id=index, name=path, counters=self._counters, on_symbols=self._symbols
        )
        inp = _Input(index, dec, None, self._skips.pop(index, 0))
        self.counters["files"] += 1
        try:
            inp.file = DbnFile(path, self.params.chunk_bytes)
        except (OSError, DbnFormatError) as exc:
            reason = exc.reason if isinstance(exc, DbnFormatError) else Reason.IO_ERROR
            dec.fail(reason, str(exc))
            dec.finish()
        self._inputs.append(inp)
        self._inputs.sort(key=lambda x: x.index)

    def _ready(self, inp: _Input) -> None:
        """Read ``inp`` until records or dead letters are ready (a bounded number of pieces)."""
        for _ in range(_READS_PER_CALL):
            dec = inp.dec
            if dec.available or dec.has_dead_letters or dec.done or inp.file is None:
                return
            self._read_piece(inp)

    def _admit(self) -> bool:
        """Open the next file when its recording may start before what the open ones hold."""
        if not self._pending:
            return False
        heads = [
            max(int(inp.dec.pace_times(1, "ts_event")[0]), inp.floor)
            for inp in self._inputs
            if inp.dec.available
        ]
        waiting = any(not i.dec.available and i.file is not None for i in self._inputs)
        if self._inputs and (waiting or (heads and self._starts[self._pending[0]] > min(heads))):
            return False
        if self._inputs and not heads and not waiting:
            pass  # only dead letters or finished files are open: admit the next file
        self._open(self._pending.pop(0))
        return True

    def _fill(self) -> None:
        for _ in range(2):  # a pass ending may start the next one (loop)
            for _ in range(len(self._paths) + 2):
                for inp in self._inputs:
                    self._ready(inp)
                for inp in [i for i in self._inputs if i.dec.done]:
                    self._finished[inp.index] = True
                    if inp.file is not None:
                        inp.file.close()
                    self._inputs.remove(inp)
                if not self._admit():
                    break
            if self._inputs or self._pending or self._done:
                return
            self._end_pass()

    def _read_piece(self, inp: _Input) -> None:
        dec = inp.dec
        try:
            piece = inp.file.read()
        except (OSError, DbnFormatError) as exc:
            reason = exc.reason if isinstance(exc, DbnFormatError) else Reason.IO_ERROR
            dec.fail(reason, str(exc))
            piece = None
        if piece is None:
            dec.finish(inp.file.truncated_frame)
            inp.file.close()
            inp.file = None
        else:
            self.counters["bytes"] += len(piece)
            dec.feed(piece)
        if inp.skip and dec.available:
            skipped = dec.skip(inp.skip)
            inp.skip -= skipped
            self._taken[inp.index] += skipped

    # -- merging ---------------------------------------------------------------------------------

    def _plan(self) -> tuple[list[int], np.ndarray | None, np.ndarray | None]:
        """How many records to take from each open file, merged by ``ts_event``.

        Each file's records keep their order (the merge key is the running maximum of
        ``ts_event`` within the file, so a file not sorted by ``ts_event`` is not reordered);
        across files the smallest key goes first, ties in file order. Only records no file
        still to be read can precede are planned: up to the smallest last key buffered by a
        file that has more to read, and before the start (metadata) of a file not opened yet.
        Returns the counts, and the merged order's source labels and keys (``None`` when
        one file is open: nothing to merge).
        """
        cap = self.params.batch_records
        keys = []
        limit = None
        for inp in self._inputs:
            n = min(cap, inp.dec.available)
            k = inp.dec.pace_times(n, "ts_event") if n else np.empty(0, np.int64)
            k = np.maximum(k, inp.floor)
            keys.append(k)
            more = inp.file is not None or inp.dec.available > n
            if more:
                bound = int(k[-1]) if n else None
                if bound is None:
                    return [0] * len(keys) + [0] * (len(self._inputs) - len(keys)), None, None
                limit = bound if limit is None else min(limit, bound)
        if self._pending:
            bound = self._starts[self._pending[0]] - 1
            limit = bound if limit is None else min(limit, bound)
        counts = [
            len(k) if limit is None else int(np.searchsorted(k, limit, side="right")) for k in keys
        ]
        if len(keys) == 1:
            return counts, None, keys[0][: counts[0]]
        labels = np.concatenate([np.full(c, j, np.int32) for j, c in enumerate(counts)])
        merged = np.concatenate([k[:c] for k, c in zip(keys, counts, strict=True)])
        order = np.argsort(merged, kind="stable")[:cap]  # stable: ties in file order
        labels, merged = labels[order], merged[order]
        counts = np.bincount(labels, minlength=len(keys)).tolist()
        return counts, labels, merged

    def _pace_merged(self, counts: list[int], labels) -> np.ndarray:
        """Pacing times of the planned records, in merged order (running maximum)."""
        p = self.params
        if labels is None:
            return self._inputs[0].dec.pace_times(counts[0], p.pace_by)
        times = np.empty(len(labels), np.int64)
        for j, inp in enumerate(self._inputs):
            if counts[j]:
                times[labels == j] = inp.dec.pace_times(counts[j], p.pace_by)
        return np.maximum.accumulate(times) if len(times) else times

    # -- pacing ----------------------------------------------------------------------------------

    def _due(self, ts: np.ndarray) -> int:
        """How many of the planned records (pacing times ``ts``) are due at the configured pace.

        A gap in the recording longer than ``max_gap_s`` is shortened to ``max_gap_s``: the
        pacing clock jumps forward, the gap is counted (``gaps_skipped``,
        ``gap_seconds_skipped``) and logged (the first few; then counted only).
        """
        p = self.params
        self._next_awake = None
        n = len(ts)
        if p.speed == 0 or n == 0:
            return n
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, int(ts[0]))
        wall0, ts0 = self._anchor
        cap_ns = int(p.max_gap_s * 1e9)
        if cap_ns and self._last_ts is not None and int(ts[0]) - self._last_ts > cap_ns:
            gap = int(ts[0]) - self._last_ts
            ts0 += gap - cap_ns  # the record is due max_gap_s (recorded) after the last one
            self._anchor = (wall0, ts0)
            self.counters["gaps_skipped"] += 1
            self.counters["gap_seconds_skipped"] += round((gap - cap_ns) / 1e9, 3)
            if self.counters["gaps_skipped"] <= _GAPS_LOGGED:
                more = " (further gaps are counted only)" if (
                    self.counters["gaps_skipped"] == _GAPS_LOGGED) else ""  # fmt: skip
                log.info(
                    "dbn_replay: skipping a %.1f s gap in the recording before %s "
                    "(max_gap_s = %s; set max_gap_s = 0 to wait it out)%s",
                    gap / 1e9, _format_ns(int(ts[0])), p.max_gap_s, more,
                )  # fmt: skip
            self._last_ts = int(ts[0]) - cap_ns
        limit = ts0 + (now - wall0) * p.speed * 1e9
        due = int(np.searchsorted(ts, limit, side="right"))
        if due == 0:
            self._next_awake = wall0 + (int(ts[0]) - ts0) / (p.speed * 1e9)
        else:
            self._last_ts = int(ts[due - 1])
        return due

    # -- SourceStage -----------------------------------------------------------------------------

    def next_batch(self) -> dict[str, np.ndarray] | None:
        self._next_awake = None
        self._fill()
        if not self._inputs:
            return None
        counts, labels, keys = self._plan()
        if sum(counts) == 0 and not any(i.dec.has_dead_letters for i in self._inputs):
            self._next_awake = time.monotonic()  # a file has more to read: call again at once
            return None
        ts = self._pace_merged(counts, labels) if self.params.speed else None
        due = self._due(ts) if ts is not None else sum(counts)
        if labels is not None and due < len(labels):
            counts = np.bincount(labels[:due], minlength=len(counts)).tolist()
        elif labels is None:
            counts = [due]
        if due and keys is not None:
            self._clock = int(keys[due - 1])
        return self._take(counts)

    def _take(self, counts: list[int]) -> dict[str, np.ndarray] | None:
        """Take ``counts`` records from the open files and merge each port's batches."""
        parts: dict[str, list[np.ndarray]] = {}
        for inp, n in zip(list(self._inputs), counts, strict=True):
            if not n and not inp.dec.has_dead_letters:
                continue
            if n:
                inp.floor = max(inp.floor, int(inp.dec.pace_times(n, "ts_event")[-1]))
            out = inp.dec.take(n)
            self._taken[inp.index] += n
            if "definitions" in out:
                self._symbols.definitions(inp.dec.metadata.dataset, out["definitions"])
            for port, batch in out.items():
                parts.setdefault(port, []).append(batch)
        if not parts:
            return None
        out = {port: _merge_port(batches) for port, batches in parts.items()}
        self.counters["records"] += sum(counts)
        if DEAD_LETTER_PORT in out:
            self.counters["dead_letters"] += len(out[DEAD_LETTER_PORT])
        return out

    def next_awake(self) -> float | None:
        if self._next_awake is None:
            return None
        return max(self._next_awake, time.monotonic() + 0.0002)

    @property
    def exhausted(self) -> bool:
        return self._done and not self._inputs

    def progress(self) -> dict:
        """``percent`` of the recording's time range replayed (from the files' metadata; by
        files when a file's range is open-ended), the replay ``clock`` (UTC, ``ts_event`` of the
        last record out) and ``records``."""
        ends = [_end_ns(p) for p in self._paths]
        first = min(self._starts)
        last = max(ends) if all(e is not None for e in ends) else None
        if self.exhausted:
            share = 100.0
        elif last is not None and last > first and self._clock is not None:
            share = 100.0 * (self._clock - first) / (last - first)
        else:
            share = 100.0 * sum(self._finished) / len(self._paths)
        return {
            "percent": round(min(max(share, 0.0), 100.0), 1),
            "clock": "-" if self._clock is None else _format_ns(self._clock),
            "records": self.counters["records"],
        }

    def reconfigure(self, params: DbnReplayParams) -> None:
        if params.speed != self.params.speed or params.pace_by != self.params.pace_by:
            self._anchor = None if self._last_ts is None else (time.monotonic(), self._last_ts)
            if params.pace_by != self.params.pace_by:
                self._anchor = None
        self.params = params

    def snapshot(self) -> dict:
        return {
            **self.position(),
            "counters": dict(self._counters.next),
            "stats": dict(self.counters),
        }

    # -- durability (the write-ahead log) -------------------------------------------------------

    resumable = True

    def position(self) -> dict:
        """Records taken from each file of the current pass (-1: read to its end), logged with
        each batch: files are merged, so every file has its own place. ``seq`` counters of the
        outputs whose DBN records have no sequence (bars, definitions, status...) go with it."""
        taken = [-1 if f else t for t, f in zip(self._taken, self._finished, strict=True)]
        return {"taken": taken, "seq": dict(self._counters.next)}

    def _seek(self, state: dict) -> None:
        if "taken" in state:
            taken = list(state["taken"])
        else:  # a position from before files were merged: one file index and its records
            index = int(state.get("index", -1))
            taken = [-1 if i < index else 0 for i in range(len(self._paths))]
            if 0 <= index < len(taken):
                taken[index] = int(state.get("records", 0))
        if len(taken) != len(self._paths):
            raise ValueError(
                f"dbn_replay: the saved position names {len(taken)} files but path "
                f"{self.params.path!r} matches {len(self._paths)} now; restore with the same "
                f"files or start afresh"
            )
        for inp in self._inputs:
            if inp.file is not None:
                inp.file.close()
        self._inputs = []
        self._finished = [t < 0 for t in taken]
        self._taken = [max(t, 0) for t in taken]
        self._skips = {i: t for i, t in enumerate(taken) if t > 0}
        self._counters.next.update(state.get("seq", {}))
        self._start_pass()

    def resume(self, position: SourcePosition) -> None:
        """Continue after the last batch the write-ahead log holds: each file at the record
        after the last one taken from it (files read to their end are not read again). The
        decoder's per-instrument sequence check starts afresh there, and dead letters found in
        the skipped part of a file are reported again."""
        state = position.state
        if not isinstance(state, dict) or not ("taken" in state or "index" in state):
            return  # nothing logged with a position: a fresh start
        self._seek(state)

    def restore(self, state: dict) -> None:
        """Resume each file at the same record (files read to their end are not read again)."""
        self._seek(state)
        self._counters.next.update(state["counters"])
        self.counters.update(state["stats"])
        self.counters["files"] -= sum(1 for t in state.get("taken", ()) if t > 0)  # reopened


class _Input:
    """One open file of the merge: its decoder, reader and merge floor (largest key out)."""

    __slots__ = ("dec", "file", "floor", "index", "skip")

    def __init__(self, index: int, dec: DbnDecoder, file: DbnFile | None, skip: int) -> None:
        self.index, self.dec, self.file, self.skip = index, dec, file, skip
        self.floor = -(1 << 62)


def _merge_port(batches: list[np.ndarray]) -> np.ndarray:
    """One port's batches from several files (in file order), merged by ``ts_event``: stable,
    ties in file order, each file's own order kept (running maximum as the key)."""
    if len(batches) == 1:
        return batches[0]
    out = np.concatenate(batches)
    if "ts_event" not in (out.dtype.names or ()):
        return out
    keys = np.concatenate(
        [np.maximum.accumulate(b["ts_event"].astype(np.int64)) if len(b) else
         np.empty(0, np.int64) for b in batches]
    )  # fmt: skip
    return out[np.argsort(keys, kind="stable")]


def _start_ns(path: str) -> int:
    try:
        return int(read_metadata(path).start)
    except (OSError, DbnFormatError):
        return 0  # opened first: its dead letter comes at once


def _end_ns(path: str) -> int | None:
    try:
        end = int(read_metadata(path).end)
    except (OSError, DbnFormatError):
        return None
    return None if end >= _UNDEF_END else end


def _format_ns(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns")) + "Z"


@hookimpl
def hftagg_register_stage_types(register):
    register(DbnReplay)
