"""FIX market data: 35=X messages/s decoded by hftagg's compiled decoder against simplefix (and
QuickFIX's parser when installed), on the same bytes, in one run.

The stream is FIX 4.4 MarketDataIncrementalRefresh messages with 2 entries each (a book update
and, one message in four, a trade instead of the second update), 55 Symbol from 8 instruments,
83 RptSeq, decimal prices: about 190 bytes per message. hftagg frames and validates every
message (BodyLength, CheckSum) and produces ``book_update``/``trade`` records, fed in 64 KiB
pieces as a socket would deliver them. The baselines only parse: simplefix's ``FixParser``
into ``FixMessage`` objects, QuickFIX's ``Message(text, dictionary)`` with the FIX44 data
dictionary (repeating groups). A check asserts hftagg decoded every message and entry.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import simplefix

from benchmarks.harness import Result, best_rate
from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder

TARGET = 1e6
CHUNK = 1 << 16
SYMBOLS = {f"SYM{i}": i + 1 for i in range(8)}


def make_stream(n: int, seed: int = 7) -> bytes:
    """``n`` 35=X messages (text built directly: simplefix's encoder would dominate the setup)."""
    rng = np.random.default_rng(seed)
    names = list(SYMBOLS)
    rpt = dict.fromkeys(names, 0)
    pick = rng.integers(0, len(names), n)
    ticks = rng.integers(9_000, 11_000, n)
    kinds, actions = rng.integers(0, 2, (n, 2)), rng.integers(0, 3, (n, 2))
    sizes, levels = rng.integers(1, 5000, (n, 2)), rng.integers(1, 11, (n, 2))
    out = []
    for i in range(n):
        symbol = names[pick[i]]
        price = f"{ticks[i] / 100:.2f}"
        entries = []
        for k in range(2):
            rpt[symbol] += 1
            if k == 1 and i % 4 == 0:
                entries.append(f"279=0\x01269=2\x0155={symbol}\x0183={rpt[symbol]}\x01"
                               f"270={price}\x01271={sizes[i, k]}\x01")  # fmt: skip
            else:
                entries.append(f"279={actions[i, k]}\x01269={kinds[i, k]}\x0155={symbol}\x01"
                               f"83={rpt[symbol]}\x01270={price}\x01271={sizes[i, k]}\x01"
                               f"1023={levels[i, k]}\x01")  # fmt: skip
        body = (f"35=X\x0149=MD\x0156=HFTAGG\x0134={i + 1}\x0152=20260101-12:00:00.123456\x01"
                f"268=2\x01{''.join(entries)}").encode()  # fmt: skip
        head = b"8=FIX.4.4\x019=%d\x01" % len(body)
        out.append(head + body + b"10=%03d\x01" % (sum(head + body) % 256))
    return b"".join(out)


def _hftagg(data: bytes) -> int:
    decoder = MarketDataDecoder(SYMBOLS)
    view = memoryview(data)
    for at in range(0, len(data), CHUNK):
        decoder.feed(view[at : at + CHUNK])
    return decoder.counters["md_messages"]


def _simplefix(data: bytes) -> int:
    """simplefix fed the same 64 KiB pieces (one huge buffer makes its parser quadratic)."""
    parser = simplefix.FixParser()
    count = 0
    for at in range(0, len(data), CHUNK):
        parser.append_buffer(data[at : at + CHUNK])
        while parser.get_message() is not None:
            count += 1
    return count


def _quickfix_rate(messages: list[bytes], repeat: int) -> float | None:
    try:
        import quickfix
    except ImportError:
        return None
    dictionary = quickfix.DataDictionary(str(Path(sys.prefix) / "share/quickfix/FIX44.xml"))
    texts = [raw.decode() for raw in messages]

    def work() -> int:
        for text in texts:
            quickfix.Message(text, dictionary, False)
        return len(texts)

    return best_rate(work, repeat)


def run(quick: bool = False) -> list[Result]:
    n = 50_000 if quick else 400_000
    n_base = 5_000 if quick else 50_000
    repeat = 3 if quick else 5
    data = make_stream(n)
    _hftagg(data[: 1 << 16])  # compile / load the cached kernels
    decoded = _hftagg(data)
    check = MarketDataDecoder(SYMBOLS).feed(data)
    if decoded != n or len(check.book) + len(check.trades) != 2 * n or len(check.dead_letters):
        raise AssertionError(f"hftagg decoded {decoded} of {n} messages")
    ours = best_rate(lambda: _hftagg(data), repeat)
    one_shot = best_rate(lambda: MarketDataDecoder(SYMBOLS).feed(data).messages, repeat)
    base_bytes = data[: data.index(b"8=FIX", len(data) * n_base // n)]
    theirs = best_rate(lambda: _simplefix(base_bytes), repeat)
    messages = [b"8=FIX" + part for part in base_bytes.split(b"8=FIX")[1:]]
    qf = _quickfix_rate(messages, repeat)
    extra = {
        "messages": n,
        "bytes per message": round(len(data) / n, 1),
        "hftagg MB/s": round(ours * len(data) / n / 1e6, 1),
        "hftagg one 1-buffer feed msg/s": float(f"{one_shot:.4g}"),
        "quickfix Message() msg/s": "not installed" if qf is None else float(f"{qf:.4g}"),
        "hftagg / quickfix": None if qf is None else round(ours / qf, 1),
        "target >= 50x simplefix": "met" if ours >= 50 * theirs else "MISSED",
    }
    return [
        Result(
            name="fix-35X-decode",
            hftagg=ours,
            baseline=theirs,
            baseline_name="simplefix parse",
            unit="msg/s",
            target=TARGET,
            extra=extra,
        )
    ]
