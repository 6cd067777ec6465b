"""The market simulator's per-event kernel: a random-walk book per instrument, trades at the touch.

Random numbers are drawn per batch with numpy's PCG64 (deterministic for a seed); this kernel
walks the events in order, updates each instrument's state and writes trade, book-update and
quote records straight into preallocated output batches.
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.options import NJIT

__all__ = ["SimState", "geometric_levels", "geometric_matches_numpy", "simulate_batch"]

_ADD, _MODIFY, _DELETE = ord("A"), ord("M"), ord("D")
_ASK, _BID = ord("A"), ord("B")


class SimState:
    """Per-instrument state: best bid (in ticks), spread (ticks), top sizes (1e-8 fixed-point
    quantities), sequence numbers."""

    def __init__(self, instruments: int, start_ticks: int, start_size: int = 100 * 10**8) -> None:
        self.bid = np.full(instruments, start_ticks, dtype=np.int64)
        self.spread = np.ones(instruments, dtype=np.int64)
        self.bid_sz = np.full(instruments, start_size, dtype=np.int64)
        self.ask_sz = np.full(instruments, start_size, dtype=np.int64)
        self.seq = np.zeros((3, instruments), dtype=np.uint64)  # trades, book, quotes

    def snapshot(self) -> dict:
        return {k: v.copy() for k, v in vars(self).items()}

    def restore(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, np.array(value, copy=True))


@numba.njit(**NJIT)
def geometric_levels(u, p, cap, out):
    """``min(geometric(p) - 1, cap)`` per double of ``u``, as numpy's ``Generator.geometric``
    computes it for ``p >= 1/3`` (a search, one double per value): from the doubles of
    ``Generator.random`` it gives exactly numpy's values. The search adds ``p * q**k`` to a
    running total until it passes ``u``; the value is how many totals ``u`` exceeds, so with the
    first ``cap`` totals computed once, in the same order, it is a branch-free count (numpy's
    loop mispredicts its exit on random input: ~10 ns a value, against ~1 ns here).
    ``geometric_matches_numpy`` checks the equality at start."""
    q = 1.0 - p
    totals = np.empty(cap, dtype=np.float64)
    total = p
    prod = p
    for k in range(cap):
        totals[k] = total
        prod *= q
        total += prod
    for i in range(u.shape[0]):
        x = u[i]
        n = 0
        for k in range(cap):
            n += x > totals[k]
        out[i] = n


def geometric_matches_numpy(p: float, draws: int = 4096) -> bool:
    """Whether ``geometric_levels`` reproduces this numpy's ``Generator.geometric(p)``."""
    if p < 1 / 3:
        return False
    expected = np.random.Generator(np.random.PCG64(12345)).geometric(p, draws) - 1
    u = np.random.Generator(np.random.PCG64(12345)).random(draws)
    got = np.empty(draws, dtype=np.int64)
    cap = 64  # geometric(p >= 1/3) - 1 exceeds 64 with probability < 1e-11
    geometric_levels(u, p, np.int64(cap), got)
    return bool(np.array_equal(got, np.minimum(expected, cap)))


@numba.njit(**NJIT)
def simulate_batch(
    inst, u_kind, u_move, u_side, depth, size, ts_event, ts_recv,
    p_trade, p_move, tick, first_id,
    bid, spread, bid_sz, ask_sz, seq,
    trades, book, quotes,
):  # fmt: skip
    """Fill ``trades``, ``book``, ``quotes`` from the drawn numbers; return the three counts."""
    nt = 0
    nb = 0
    nq = 0
    for i in range(inst.shape[0]):
        k = inst[i]
        iid = first_id + k
        if u_kind[i] < p_trade:
            buy = u_side[i] < 0.5
            r = trades[nt]
            r["ts_event"] = ts_event[i]
            r["ts_recv"] = ts_recv[i]
            r["seq"] = seq[0, k]
            r["instrument_id"] = iid
            r["side"] = _BID if buy else _ASK
            r["price"] = (bid[k] + spread[k] if buy else bid[k]) * tick
            r["size"] = size[i]
            seq[0, k] += 1
            nt += 1
            continue
        ask_side = u_side[i] < 0.5
        d = depth[i]
        action = _MODIFY
        top = False
        if u_move[i] < p_move:
            step = 1 if u_move[i] < p_move * 0.5 else -1
            bid[k] += step
            if bid[k] < 1:
                bid[k] = 1
            spread[k] = 1 + (size[i] % 3 == 0)
            action = _ADD
            d = 0
            top = True
        elif d == 0:
            top = True
        elif u_move[i] < p_move + (1.0 - p_move) * 0.15:
            action = _DELETE
        elif u_move[i] < p_move + (1.0 - p_move) * 0.30:
            action = _ADD
        if ask_side:
            price = (bid[k] + spread[k] + d) * tick
            if d == 0:
                ask_sz[k] = size[i]
        else:
            price = (bid[k] - d) * tick
            if d == 0:
                bid_sz[k] = size[i]
        r = book[nb]
        r["ts_event"] = ts_event[i]
        r["ts_recv"] = ts_recv[i]
        r["seq"] = seq[1, k]
        r["instrument_id"] = iid
        r["action"] = action
        r["side"] = _ASK if ask_side else _BID
        r["depth"] = d
        r["price"] = price
        r["size"] = 0 if action == _DELETE else size[i]
        seq[1, k] += 1
        nb += 1
        if top:
            q = quotes[nq]
            q["ts_event"] = ts_event[i]
            q["ts_recv"] = ts_recv[i]
            q["seq"] = seq[2, k]
            q["instrument_id"] = iid
            q["bid_px"] = bid[k] * tick
            q["ask_px"] = (bid[k] + spread[k]) * tick
            q["bid_sz"] = bid_sz[k]
            q["ask_sz"] = ask_sz[k]
            seq[2, k] += 1
            nq += 1
    return nt, nb, nq


def warm() -> None:
    """Compile ``simulate_batch`` for the argument types the simulator passes."""
    from hftagg.records.catalog import BOOK_UPDATE, QUOTE, TRADE

    n = 4
    state = SimState(2, 10_000)
    floats = np.linspace(0.0, 0.9, n)
    ints = np.arange(n, dtype=np.int64)
    simulate_batch(
        ints % 2, floats, floats, floats, ints % 3, (ints + 1) * 10**8, ints, ints + 10,
        0.25, 0.1, 10_000_000, 1,
        state.bid, state.spread, state.bid_sz, state.ask_sz, state.seq,
        TRADE.empty(n), BOOK_UPDATE.empty(n), QUOTE.empty(n),
    )  # fmt: skip
    geometric_matches_numpy(0.45, 16)  # compiles geometric_levels
