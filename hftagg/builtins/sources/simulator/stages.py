"""Built-in plugin: the market simulator source.

Several instruments, each with a random-walk book (best bid and spread in ticks); events arrive
as a Poisson process; each is a trade at the touch (probability ``trade_probability``) or a book
update (a level added, modified or deleted at some depth; with probability ``move_probability``
the touch moves one tick). Top-of-book changes also produce quote records. Sizes are 1..999
lots of ``lot_size`` units (1e-8 fixed-point quantities, so ``lot_size = 0.00001`` simulates a
crypto book).

Instruments: ids ``first_instrument_id`` .. ``+ instruments - 1``. The instrument registry's
built-in defaults name ids 1..8 (the default run) as BTCUSD, ETHUSD, SOLUSD, ESZ6, NQZ6, AAPL,
MSFT and EURUSD on venue ``sim`` (:mod:`hftagg.instruments.files`), so ``tail`` and
``store ls`` show symbols; other ids show as numbers unless ``instruments.toml`` names them.

Determinism: every random quantity has its own PCG64 stream derived from ``seed``, so the
content of the n-th event (instrument, kind, side, size, price path) is the same for a given
seed whatever the batch sizes were. With ``clock = "simulated"`` the timestamps are too
(arrivals at ``rate`` per second of simulated time from ``start_ns``); with ``clock = "wall"``
``ts_recv`` is the local clock when the event was generated and ``ts_event`` precedes it by a
random venue-to-local latency of mean ``latency_us``.

``rate = 0`` runs as fast as possible. ``pregenerate = N`` draws N batches up front and replays
them with sequence numbers and timestamps advanced, so benchmarks measure the pipeline rather
than the random number generator.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np
from pydantic import ValidationInfo, field_validator

from hftagg.builtins.sources.simulator.kernels import (
    SimState,
    geometric_levels,
    geometric_matches_numpy,
    simulate_batch,
)
from hftagg.hookspecs import hookimpl
from hftagg.records.catalog import BOOK_UPDATE, QUOTE, TRADE
from hftagg.records.fixed import QTY_DECIMALS, FixedPointError, to_fixed
from hftagg.stages import Params, Port, SourcePosition, SourceStage, StageContext, live, restart

__all__ = ["Simulator", "SimulatorParams"]

log = logging.getLogger("hftagg.simulator")

DEFAULT_START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MAX_START_PRICE = 1e9  # int64 prices at 1e-9 reach 9.2e9: room for the walk above this
_STREAMS = ("instrument", "kind", "move", "side", "depth", "size", "arrival", "latency")
#: book depth is geometric(DEPTH_P) - 1 capped at DEPTH_CAP levels below the touch
DEPTH_P, DEPTH_CAP = 0.45, 9
_FAST_DEPTH: bool | None = None  # geometric_levels reproduces numpy here (checked once)


def _depths(rng: np.random.Generator, n: int) -> np.ndarray:
    """Levels below the touch: numpy's geometric stream, drawn in compiled code when that
    gives the same values (checked once per process), else through numpy."""
    global _FAST_DEPTH
    if _FAST_DEPTH is None:
        _FAST_DEPTH = geometric_matches_numpy(DEPTH_P)
    if not _FAST_DEPTH:
        return np.minimum(rng.geometric(DEPTH_P, n) - 1, DEPTH_CAP).astype(np.int64)
    out = np.empty(n, dtype=np.int64)
    geometric_levels(rng.random(n), DEPTH_P, np.int64(DEPTH_CAP), out)
    return out


class SimulatorParams(Params):
    instruments: int = restart(8, ge=1, le=100_000, description="number of instruments")
    first_instrument_id: int = restart(1, ge=0, le=2**32 - 100_001)
    rate: float = live(
        100_000.0, ge=0, le=1e9, description="events per second; 0 = as fast as possible"
    )
    seed: int = restart(42, ge=0, description="random seed; same seed, same events")
    trade_probability: float = live(0.25, ge=0, le=1)
    move_probability: float = live(
        0.1, ge=0, le=1, description="chance a book event moves the touch"
    )
    start_price: float = restart(100.0, gt=0)
    tick_size: float = restart(0.01, gt=0, validate_default=True)
    lot_size: float = restart(
        1.0, gt=0, le=1e7, description="size step in units; sizes are 1..999 lots (<= 8 decimals)"
    )
    latency_us: float = live(50.0, ge=0, le=1e6, description="mean venue-to-local latency")
    clock: Literal["wall", "simulated"] = restart("wall")
    start_ns: int = restart(DEFAULT_START_NS, ge=0, description="simulated clock start")
    batch_records: int = live(4096, ge=1, le=1 << 20, description="largest batch per call")
    max_events: int = restart(0, ge=0, description="stop after this many events; 0 = never")
    pregenerate: int = restart(
        0, ge=0, le=100_000, description="batches drawn up front and replayed"
    )

    @field_validator("tick_size")
    @classmethod
    def _tick_on_the_price_scale(cls, value: float, info: ValidationInfo) -> float:
        if round(value * 1e9) < 1:
            raise ValueError(
                "a tick below 1e-9 (the price scale) rounds to 0 and every price would be 0; "
                "use at least 1e-9"
            )
        start = info.data.get("start_price")
        if start is not None and start < value:
            raise ValueError(
                f"start_price {start:g} is below one tick: prices would start at 0; raise "
                f"start_price or lower tick_size"
            )
        return value

    @field_validator("start_price")
    @classmethod
    def _start_price_fits(cls, value: float) -> float:
        if value > MAX_START_PRICE:
            raise ValueError(
                f"prices are int64 at a 1e-9 scale (at most about 9.2e9); use at most "
                f"{MAX_START_PRICE:g} so the random walk has room"
            )
        return value

    @field_validator("lot_size")
    @classmethod
    def _lot_is_a_quantity(cls, value: float) -> float:
        try:
            to_fixed(repr(value), QTY_DECIMALS, field="lot_size")
        except FixedPointError as exc:
            raise ValueError(str(exc)) from None
        return value


class Simulator(SourceStage):
    type_name = "simulator"
    Params = SimulatorParams
    outputs = {
        "trades": Port("trade", "md.trades", "trade prints"),
        "book": Port("book_update", "md.book", "market-by-price incremental updates"),
        "quotes": Port("quote", "md.quotes", "best bid/offer after each top-of-book change"),
    }

    def open(self, ctx: StageContext) -> None:
        p = self.params
        self._rngs = dict(
            zip(_STREAMS, (np.random.Generator(np.random.PCG64(s))
                           for s in np.random.SeedSequence(p.seed).spawn(len(_STREAMS))), strict=True)
        )  # fmt: skip
        self._tick = int(round(p.tick_size * 1e9))
        self._lot = to_fixed(repr(p.lot_size), QTY_DECIMALS, field="lot_size")
        self._state = SimState(
            p.instruments, int(round(p.start_price / p.tick_size)), 100 * self._lot
        )
        self._cap = max(p.batch_records, 1)
        self._buffers = {
            "trades": TRADE.empty(self._cap),
            "book": BOOK_UPDATE.empty(self._cap),
            "quotes": QUOTE.empty(self._cap),
        }
        self._clock_ns = p.start_ns if p.clock == "simulated" else time.time_ns()
        self._last_wall = time.monotonic()
        self._emitted = 0
        self._next_awake: float | None = None
        self._replay = self._pregenerate(p.pregenerate) if p.pregenerate else None

    # -- generation ----------------------------------------------------------------------------

    def _draw(self, n: int) -> tuple[dict[str, np.ndarray], int]:
        p, r = self.params, self._rngs
        if p.clock == "simulated" or p.rate == 0:
            mean_gap = 1e9 / (p.rate or 1e6)
            gaps = r["arrival"].exponential(mean_gap, n).astype(np.int64) + 1
            ts_recv = self._clock_ns + np.cumsum(gaps)  # integer sums: split-invariant
        else:
            now = time.time_ns()
            ts_recv = np.sort(
                r["arrival"].integers(self._clock_ns, max(now, self._clock_ns + 1), n)
            )
        latency = (p.latency_us * 1e3 * (0.5 + 0.5 * r["latency"].exponential(1.0, n))).astype(
            np.int64
        )
        self._clock_ns = int(ts_recv[-1]) if n else self._clock_ns
        counts = simulate_batch(
            (r["instrument"].random(n) * p.instruments).astype(np.int64),
            r["kind"].random(n), r["move"].random(n), r["side"].random(n),
            _depths(r["depth"], n),
            r["size"].integers(1, 1000, n) * self._lot,
            ts_recv - latency, ts_recv,
            p.trade_probability, p.move_probability, self._tick, p.first_instrument_id,
            self._state.bid, self._state.spread, self._state.bid_sz, self._state.ask_sz,
            self._state.seq, self._buffers["trades"], self._buffers["book"], self._buffers["quotes"],
        )  # fmt: skip
        out = {
            port: self._buffers[port][:c]
            for port, c in zip(("trades", "book", "quotes"), counts, strict=True)
        }
        return out, n

    def _pregenerate(self, batches: int) -> list[dict[str, np.ndarray]]:
        start_seq = self._state.seq.copy()
        start_ns = self._clock_ns
        replay = []
        for _ in range(batches):
            out, _ = self._draw(self._cap)
            replay.append({port: a.copy() for port, a in out.items()})
        self._cycle_seq = (self._state.seq - start_seq).astype(np.uint64)
        self._cycle_ns = self._clock_ns - start_ns
        self._cycle = 0
        self._replay_at = 0
        return replay

    def _from_replay(self) -> dict[str, np.ndarray]:
        template = self._replay[self._replay_at]
        cycle = self._cycle
        out = {}
        for stream, port in enumerate(("trades", "book", "quotes")):
            src = template[port]
            dst = self._buffers[port][: len(src)]
            dst.view(np.uint8)[:] = src.view(np.uint8)
            if cycle:
                k = dst["instrument_id"] - np.uint32(self.params.first_instrument_id)
                dst["seq"] += self._cycle_seq[stream][k] * np.uint64(cycle)
                dst["ts_event"] += self._cycle_ns * cycle
                dst["ts_recv"] += self._cycle_ns * cycle
            out[port] = dst
        self._replay_at += 1
        if self._replay_at == len(self._replay):
            self._replay_at = 0
            self._cycle += 1
        return out

    # -- SourceStage ---------------------------------------------------------------------------

    def _due(self) -> int:
        """How many events are due now at the configured rate (paced against the wall clock)."""
        p = self.params
        if p.rate == 0:
            return self._cap
        now = time.monotonic()
        due = int((now - self._last_wall) * p.rate)
        if due < 1:
            self._next_awake = self._last_wall + 1.0 / p.rate
            return 0
        self._last_wall += due / p.rate
        if now - self._last_wall > 1.0:  # more than a second behind: do not try to catch up
            self._last_wall = now
        self._next_awake = None
        return min(due, self._cap)

    def next_batch(self) -> dict[str, np.ndarray] | None:
        if self.exhausted:
            return None
        n = self._due()
        if self.params.max_events:
            n = min(n, self.params.max_events - self._emitted)
        if n <= 0:
            return None
        if self._replay is not None:
            out = self._from_replay()
            n = self._cap
        else:
            out, n = self._draw(n)
        self._emitted += n
        return {port: a for port, a in out.items() if port in self.output_topics}

    def next_awake(self) -> float | None:
        if self._next_awake is None:
            return None
        return max(self._next_awake, time.monotonic() + 0.0002)

    @property
    def exhausted(self) -> bool:
        return bool(self.params.max_events) and self._emitted >= self.params.max_events

    resumable = True

    def resume(self, position: SourcePosition) -> None:
        """Continue after what the write-ahead log holds: every event is a trade or a book
        update, so the log's trades and book offsets count the events emitted so far; the
        simulator fast-forwards that many events (drawn and discarded, in batches), so books,
        sequence numbers and, with ``clock = "simulated"``, timestamps continue exactly as if
        it had never stopped. Needs both the trades and book ports active (else a warning and
        a fresh start)."""
        offsets = position.offsets
        if "trades" not in offsets or "book" not in offsets:
            log.warning(
                "simulator %s cannot resume from the write-ahead log: it counts events by its "
                "trades and book records and only %s are logged; it starts afresh (seq from 0)",
                self.stage_id, sorted(offsets),
            )  # fmt: skip
            return
        events = offsets["trades"] + offsets["book"]
        if self._replay is not None:
            calls = events // self._cap
            self._cycle, self._replay_at = divmod(calls, len(self._replay))
        else:
            left = events
            while left:
                n = min(left, self._cap)
                self._draw(n)
                left -= n
        self._emitted = events
        if self.params.clock == "wall":
            last = [int(r["ts_recv"][0]) for r in position.last.values() if len(r)]
            self._clock_ns = max([time.time_ns(), *last])
            self._last_wall = time.monotonic()

    def reconfigure(self, params: SimulatorParams) -> None:
        self.params = params
        self._cap = min(params.batch_records, len(self._buffers["trades"]))

    def snapshot(self) -> dict:
        return {
            "state": self._state.snapshot(),
            "rngs": {k: g.bit_generator.state for k, g in self._rngs.items()},
            "seed": self.params.seed,
            "clock_ns": self._clock_ns,
            "emitted": self._emitted,
        }

    def restore(self, state: dict) -> None:
        """Carry books, sequence numbers and clock over; the random streams too unless the seed
        changed (a live seed change continues every instrument's ``seq`` with the new seed's
        events)."""
        self._state.restore(state["state"])
        if state.get("seed", self.params.seed) == self.params.seed:
            for key, bit_state in state["rngs"].items():
                self._rngs[key].bit_generator.state = bit_state
        self._clock_ns = state["clock_ns"]
        self._emitted = state["emitted"]


@hookimpl
def hftagg_register_stage_types(register):
    register(Simulator)
