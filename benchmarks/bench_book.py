"""L2 order book: ``book_update`` records/s into hftagg's compiled books against a Python book.

The stream (5 M updates over 16 instruments, 500 k with --quick) is generated up front by a
small stateful market model, so it is consistent the way a venue feed is: adds land on empty
price levels behind or inside the touch, modifies and deletes hit existing levels, mostly near
the touch (geometric in ticks), the touch moves when its level is deleted or improved, the book
never crosses, ``seq`` is contiguous per instrument.

- hftagg: ``BookKernel.update`` in batches of 4096 records (what the ``book`` stage does once
  per batch), default parameters: a quote on every top-of-book change and an mbp10 on every
  change to the top 10 levels. Extras: without mbp10, and the whole stream in one call.
- baseline: a plain Python book (a dict of price -> size per side and instrument, best price by
  ``max``/``min``) producing the same quotes, on the first 500 k (50 k) updates. Both produce the
  same quote records there; the benchmark fails if they do not.
"""

from __future__ import annotations

import numba
import numpy as np

from benchmarks.harness import Result, best_rate
from hftagg.builtins.core.book.kernels import UNDEF_PRICE, BookKernel
from hftagg.records import BOOK_UPDATE

INSTRUMENTS = 16
BATCH = 4096
TARGET = 10e6
TICK = 10_000_000  # 0.01 at scale 1e-9
WINDOW = 1 << 14  # ticks of price range per instrument in the model

_A, _M, _D = ord("A"), ord("M"), ord("D")
_BID, _ASK = ord("B"), ord("A")


@numba.njit(cache=True)
def _generate(out, instruments, seed):
    np.random.seed(seed)
    sizes = np.zeros((instruments, 2, WINDOW), dtype=np.int64)
    best = np.zeros((instruments, 2), dtype=np.int64)
    seq = np.zeros(instruments, dtype=np.uint64)
    mid = WINDOW // 2
    for k in range(instruments):  # start with 20 levels a side, one tick apart
        for j in range(20):
            sizes[k, 0, mid - 1 - j] = 100
            sizes[k, 1, mid + j] = 100
        best[k, 0], best[k, 1] = mid - 1, mid
    ts = np.int64(1_767_225_600_000_000_000)
    for i in range(out.shape[0]):
        k = np.random.randint(instruments)
        side = np.random.randint(2)
        sign = -1 if side == 0 else 1  # away from the touch
        u = np.random.random()
        if u < 0.04:  # improve: a new level inside the spread
            px = best[k, side] - sign
        else:
            px = best[k, side] + sign * (np.random.geometric(0.3) - 1)
        px = min(max(px, 1), WINDOW - 2)
        if (best[k, 1] - px) * (px - best[k, 0]) > 0 or px == best[k, 1 - side]:
            px = best[k, side]  # strictly inside the spread only if room, never crossing
        size = np.random.randint(1, 1000)
        if sizes[k, side, px] == 0:
            action = _A
            sizes[k, side, px] = size
            if (px - best[k, side]) * sign < 0:
                best[k, side] = px
        elif np.random.random() < 0.3 and px != best[k, side] or u > 0.97:
            nxt = px + sign
            while sizes[k, side, nxt] == 0 and 0 < nxt < WINDOW - 1:
                nxt += sign
            if px == best[k, side] and sizes[k, side, nxt] == 0:
                action = _M  # keep at least one level a side
                sizes[k, side, px] = size
            else:
                action = _D
                size = 0
                sizes[k, side, px] = 0
                if px == best[k, side]:
                    best[k, side] = nxt
        else:
            action = _M
            sizes[k, side, px] = size
        ts += np.random.randint(1, 400)
        r = out[i]
        r["ts_event"] = ts
        r["ts_recv"] = ts + 20_000
        r["seq"] = seq[k]
        r["instrument_id"] = 1000 + k
        r["action"] = action
        r["side"] = _BID if side == 0 else _ASK
        r["price"] = (1_000_000 + px) * TICK
        r["size"] = size * 100_000_000  # whole units as 1e-8 fixed-point quantities
        seq[k] += 1


def updates(n: int, instruments: int = INSTRUMENTS, seed: int = 11) -> np.ndarray:
    """``n`` consistent ``book_update`` records over ``instruments`` (see the module docstring)."""
    out = BOOK_UPDATE.empty(n)
    _generate(out, instruments, seed)
    return out


def python_book(rows: list[tuple]) -> list[tuple]:
    """The baseline: dict-of-levels books; the quotes ``(iid, bid, ask, bid_sz, ask_sz)``."""
    books: dict[int, tuple[dict, dict, list]] = {}
    quotes = []
    for iid, action, side, price, size in rows:
        book = books.get(iid)
        if book is None:
            book = books[iid] = ({}, {}, [None])
        bids, asks, last = book
        levels = bids if side == _BID else asks
        if action == _D or size == 0:
            levels.pop(price, None)
        else:
            levels[price] = size
        bid = max(bids) if bids else UNDEF_PRICE
        ask = min(asks) if asks else UNDEF_PRICE
        top = (bid, ask, bids.get(bid, 0), asks.get(ask, 0))
        if top != last[0]:
            last[0] = top
            quotes.append((iid, *top))
    return quotes


def _kernel_rate(stream: np.ndarray, repeat: int, batch: int, **kw) -> tuple[float, int, int]:
    """Best updates/s of a fresh kernel over the stream in ``batch``-record batches (sliced up
    front, as a stage receives them); also the quotes and mbp10s it produced."""
    batches = [stream[start : start + batch] for start in range(0, len(stream), batch)]
    counts = [0, 0]

    def work() -> int:
        kernel = BookKernel(capacity=batch, **kw)  # ~40 us: noise next to the run
        quotes = mbp10 = 0
        for part in batches:
            q, m, _ = kernel.update(part)
            quotes += len(q)
            mbp10 += len(m)
        counts[:] = quotes, mbp10
        return len(stream)

    work()
    return best_rate(work, repeat), counts[0], counts[1]


def _check(stream: np.ndarray, baseline_quotes: list[tuple]) -> None:
    quotes = BookKernel(mbp10_on="off").update(stream)[0]
    ours = list(zip(*(quotes[f].tolist() for f in ("instrument_id", "bid_px", "ask_px", "bid_sz",
                                                    "ask_sz")), strict=True))  # fmt: skip
    if ours != baseline_quotes:
        raise AssertionError("book: hftagg and the Python book produced different quotes")


def run(quick: bool) -> list[Result]:
    n = 500_000 if quick else 5_000_000
    repeat = 3 if quick else 5
    stream = updates(n)
    ours, quotes, mbp10 = _kernel_rate(stream, repeat, BATCH)
    prefix = stream[: n // 10]
    rows = list(zip(*(prefix[f].tolist() for f in ("instrument_id", "action", "side", "price",
                                                    "size")), strict=True))  # fmt: skip
    baseline_quotes = python_book(rows)
    _check(prefix, baseline_quotes)
    theirs = best_rate(lambda: len(python_book(rows)) and len(rows), max(2, repeat // 2))
    no_mbp, _, _ = _kernel_rate(stream, repeat, BATCH, mbp10_on="off")
    whole, _, _ = _kernel_rate(stream, repeat, n, mbp10_on="off")
    kernel = BookKernel()
    kernel.update(stream)
    depth = [len(side) for iid in range(1000, 1000 + INSTRUMENTS) for side in kernel.levels(iid)]
    return [
        Result(
            name=f"book-l2-{INSTRUMENTS}-instruments",
            hftagg=ours,
            baseline=theirs,
            baseline_name="Python dict book",
            unit="upd/s",
            target=TARGET,
            extra={
                "updates": n,
                "batch": BATCH,
                "quotes out per update": round(quotes / n, 3),
                "mbp10 out per update": round(mbp10 / n, 3),
                "final levels per side (mean)": round(float(np.mean(depth)), 1),
                "hftagg without mbp10 upd/s": float(f"{no_mbp:.4g}"),
                "hftagg whole stream, one call, no mbp10 upd/s": float(f"{whole:.4g}"),
                "baseline updates": len(rows),
            },
        )
    ]
