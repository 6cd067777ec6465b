"""Storage: hftagg's store against the tools a quant team would otherwise use, in one run.

Results, in this order (``python -m benchmarks storage``, ``--quick`` for a smoke run):

``store-append``
    Trades (48-byte records, 16 instruments, increasing ``ts_event``) appended through the
    ``store`` sink's ``write`` in the pipeline's batch size (``max_batch`` 4,096), then flushed
    and closed, against a raw sequential ``file.write`` of the same bytes in the same batches
    (unbuffered, then closed): the physical limit of this disk and page cache. Both leave the
    bytes in the page cache (the store with ``fsync = "none"``); the store's default, an fsync
    of each sealed 64 MiB segment, is in the details. Records/s; GB/s and the 65,536-record
    figures in the details. Target >= 0.7x.
``store-append-arcticdb`` / ``store-append-arcticdb-65536``
    The same stream appended to ArcticDB (LMDB backend, one ``Library.append`` per batch of
    4,096 / 65,536 records). ArcticDB is handed ready-made DataFrames (``ts_event`` as a
    ``DatetimeIndex``), built before the clock starts, so its figure is its storage engine
    alone. Targets >= 10x at 4,096 and >= 3x at 65,536. Skipped with a message when
    ``arcticdb`` (the ``bench`` extra) is missing.
``store-append-parquet``
    pyarrow's ``ParquetWriter`` (zstd, the store's archive codec) fed the same batches as
    ready-made Arrow tables, one ``write_table`` (one row group) per batch: a report.
``wal``, ``postgres-copy``, ``mongodb-encode`` (and ``mongodb-insert`` with a server)
    From the optional case modules ``benchmarks/storage_wal.py``,
    ``benchmarks/storage_postgres.py`` and ``benchmarks/storage_mongodb.py`` (each exposes
    ``cases(quick) -> list[Result]``); a module that is not there is skipped with a message.
``read`` / ``read-parquet``
    10 M stored trades (--quick: 1 M); a 10 % time range of them (every instrument) through
    ``hftagg.read`` against ArcticDB's ``read(date_range=...)`` of the same data (target >= 3x),
    and against ``pandas.read_parquet`` with ``ts_event`` filters on a zstd file of 65,536-row
    row groups (report). Each returns the same record count, checked. ``hftagg.read`` of one
    segment's contiguous range is a view of the memory map; the details also give it followed by
    a copy (every byte read), and that ratio.

``replay`` (report)
    The stream split into two topics interleaved in time, stored, then replayed by the
    ``store_replay`` source (``next_batch`` until exhausted, batches of 4,096; 65,536 in the
    details) against reading both topics whole and merging them with one stable argsort.

Every figure is the best of a few runs (files removed between runs, so each append starts
empty). Files live under a temporary directory (``TMPDIR``), removed at the end. The machine
is shared and the page cache does the writing, so figures vary by 10-20 % run to run; the ratio
is the steadier figure.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.harness import Result
from hftagg.records import TRADE

__all__ = ["CASE_MODULES", "make_trades", "run"]

#: optional case modules, each with ``cases(quick) -> list[Result]``
CASE_MODULES = (
    "benchmarks.storage_wal",
    "benchmarks.storage_postgres",
    "benchmarks.storage_mongodb",
)
TOPIC = "md.trades"
SYMBOL = "trades"
SMALL, LARGE = 4096, 65536
INSTRUMENTS = 16
START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def make_trades(n: int, *, instruments: int = INSTRUMENTS, seed: int = 7) -> np.ndarray:
    """``n`` trades in ``ts_event`` order (gaps of 1-2,000 ns), ``seq`` per instrument from 1."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=TRADE.dtype)
    out["ts_event"] = START_NS + np.cumsum(rng.integers(1, 2000, n, dtype=np.int64))
    out["ts_recv"] = out["ts_event"] + rng.integers(5_000, 50_000, n, dtype=np.int64)
    ids = rng.integers(0, instruments, n).astype(np.uint32)
    out["instrument_id"] = ids + 1000
    order = np.argsort(ids, kind="stable")
    counts = np.bincount(ids, minlength=instruments)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    seq = np.empty(n, dtype=np.uint64)
    seq[order] = np.arange(n, dtype=np.uint64) - starts.astype(np.uint64) + 1
    out["seq"] = seq
    out["side"] = rng.choice(np.array([ord("B"), ord("A")], dtype=np.uint8), n)
    out["price"] = 100_000_000_000 + rng.integers(-10_000, 10_000, n) * 1_000_000
    out["size"] = rng.integers(1, 1000, n) * 10_000_000
    return out


def split(records: np.ndarray, size: int) -> list[np.ndarray]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def best_of(work: Callable[[], object], repeat: int, reset: Callable[[], None]) -> float:
    """Best wall time of ``work`` over ``repeat`` runs, ``reset`` (untimed) before each."""
    best = float("inf")
    for _ in range(repeat):
        reset()
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return best


def _fresh(path: Path) -> Callable[[], None]:
    def reset() -> None:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    return reset


def _target(ratio: float, target: float) -> str:
    return f">= {target:g}x: {'met' if ratio >= target else 'MISSED'}"


def _note(message: str) -> None:
    sys.stderr.write(f"storage: {message}\n")
    sys.stderr.flush()


# -- baselines -------------------------------------------------------------------------------------


def raw_write(batches: list[np.ndarray], path: Path) -> None:
    """The same bytes written sequentially with unbuffered ``file.write``, one call per batch."""
    with open(path, "wb", buffering=0) as file:
        for batch in batches:
            file.write(batch.data)


def _arcticdb_library(root: Path):
    try:
        from arcticdb import Arctic
    except ImportError:
        return None
    arctic = Arctic(f"lmdb://{root}?map_size=16GB")
    return arctic.get_library("bench", create_if_missing=True)


def _frames(batches: list[np.ndarray]) -> list:
    import pandas as pd

    frames = []
    for batch in batches:
        columns = {name: batch[name] for name in TRADE.dtype.names if name != "ts_event"}
        index = pd.DatetimeIndex(batch["ts_event"].astype("datetime64[ns]"), name="ts_event")
        frames.append(pd.DataFrame(columns, index=index))
    return frames


def arcticdb_append(library, frames: list) -> None:
    library.write(SYMBOL, frames[0])
    for frame in frames[1:]:
        library.append(SYMBOL, frame)


def _arrow_table(batch: np.ndarray):
    import pyarrow as pa

    return pa.table({name: np.ascontiguousarray(batch[name]) for name in TRADE.dtype.names})


def parquet_write(tables: list, path: Path) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(path, tables[0].schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table)


# -- hftagg ----------------------------------------------------------------------------------------


def _store_type():
    """The ``store`` stage type from the plugin registry (``None`` while there is none)."""
    from hftagg.plugins.manager import load_plugins

    return load_plugins([], entry_points=False).stage_types.get("store")


def store_append(store_type, batches: list[np.ndarray], root: Path, fsync: str = "none") -> None:
    """What the pipeline's sink thread does: ``write`` per batch with its stream offset, then
    ``flush`` and ``close`` (the files are complete and readable afterwards). ``fsync``: the
    store's policy; ``"none"`` leaves the bytes in the page cache, as the baseline does."""
    from hftagg.stages import StageContext

    stage = store_type(store_type.Params(path=str(root), topics=[TOPIC], fsync=fsync))
    stage.open(StageContext(max_batch=max(len(b) for b in batches), topic_schemas={TOPIC: TRADE}))
    port = next(iter(stage.input_topics))
    offset = 0
    for batch in batches:
        stage.write(batch, port, offset)
        offset += len(batch)
    stage.flush()
    stage.close()


# -- append ----------------------------------------------------------------------------------------


def append_rates(records: np.ndarray, work: Path, repeat: int) -> dict[tuple[str, int], float]:
    """Records/s per (writer, batch size); a writer that is not available is left out."""
    n = len(records)
    rates: dict[tuple[str, int], float] = {}
    store_type = _store_type()
    if store_type is None:
        _note("store-append skipped: no 'store' stage type is registered in this tree")
    for size in (SMALL, LARGE):
        batches = split(records, size)
        raw = work / f"raw-{size}.bin"
        rates["raw", size] = n / best_of(partial(raw_write, batches, raw), repeat, _fresh(raw))
        if store_type is not None:
            root = work / f"store-{size}"
            work_fn = partial(store_append, store_type, batches, root)
            rates["store", size] = n / best_of(work_fn, repeat, _fresh(root))
            work_fn = partial(store_append, store_type, batches, root, "seal")
            rates["store-seal", size] = n / best_of(work_fn, repeat, _fresh(root))
        pq_path = work / f"parquet-{size}.parquet"
        work_fn = partial(parquet_write, [_arrow_table(b) for b in batches], pq_path)
        rates["parquet", size] = n / best_of(work_fn, max(repeat - 1, 1), _fresh(pq_path))
        del work_fn
    rates.update(_arcticdb_append_rates(records, work, max(repeat - 1, 1)))
    return rates


def _arcticdb_append_rates(records: np.ndarray, work: Path, repeat: int) -> dict:
    """ArcticDB is slow per call: 2 M records (--quick: all) at 4,096, all at 65,536."""
    rates = {}
    for size in (SMALL, LARGE):
        subset = records[: 2_000_000 if size == SMALL else len(records)]
        root = work / f"arcticdb-{size}"
        holder: dict = {}

        def reset(root: Path = root, holder: dict = holder) -> None:
            _fresh(root)()
            holder["lib"] = _arcticdb_library(root)

        reset()
        if holder["lib"] is None:
            _note("store-append-arcticdb skipped: arcticdb is not installed; "
                  "pip install -e '.[bench]' to compare with it")  # fmt: skip
            return {}
        frames = _frames(split(subset, size))
        secs = best_of(lambda f=frames, h=holder: arcticdb_append(h["lib"], f), repeat, reset)
        rates["arcticdb", size] = len(subset) / secs
        holder.clear()
        _fresh(root)()
    return rates


def append_results(rates: dict, n: int) -> list[Result]:
    gbs = TRADE.itemsize / 1e9
    results = []
    if ("store", SMALL) in rates:
        ours, raw = rates["store", SMALL], rates["raw", SMALL]
        results.append(
            Result(
                name="store-append",
                hftagg=ours,
                baseline=raw,
                baseline_name="raw file.write, same bytes",
                unit="rec/s",
                extra={
                    "records": n,
                    "batch": SMALL,
                    "target ratio": _target(ours / raw, 0.7),
                    "hftagg GB/s": ours * gbs,
                    "file.write GB/s": raw * gbs,
                    "batch 65536: hftagg rec/s": rates["store", LARGE],
                    "batch 65536: file.write rec/s": rates["raw", LARGE],
                    "batch 65536: ratio": rates["store", LARGE] / rates["raw", LARGE],
                    "fsync at seal (default) rec/s": rates["store-seal", SMALL],
                    "fsync at seal, batch 65536 rec/s": rates["store-seal", LARGE],
                },
            )
        )
    else:
        _note(
            "file.write of the same bytes: "
            + ", ".join(f"{rates['raw', s] / 1e6:.1f} M rec/s at {s:,}" for s in (SMALL, LARGE))
        )
    for size, target in ((SMALL, 10.0), (LARGE, 3.0)):
        if ("arcticdb", size) not in rates:
            continue
        theirs = rates["arcticdb", size]
        if ("store", size) not in rates:
            _note(f"ArcticDB append per {size:,}: {theirs / 1e6:.2f} M rec/s (no store to compare)")
            continue
        ours = rates["store", size]
        results.append(
            Result(
                name="store-append-arcticdb" + ("" if size == SMALL else f"-{size}"),
                hftagg=ours,
                baseline=theirs,
                baseline_name=f"ArcticDB LMDB append per {size:,}",
                unit="rec/s",
                extra={"batch": size, "target ratio": _target(ours / theirs, target)},
            )
        )
    for size in (SMALL, LARGE) if ("store", SMALL) in rates else ():
        theirs = rates["parquet", size]
        results.append(
            Result(
                name="store-append-parquet" + ("" if size == SMALL else f"-{size}"),
                hftagg=rates["store", size],
                baseline=theirs,
                baseline_name=f"pyarrow ParquetWriter zstd, row group per {size:,}",
                unit="rec/s",
                extra={"batch": size, "report": "no target"},
            )
        )
    if ("store", SMALL) not in rates:
        _note(
            "ParquetWriter zstd: "
            + ", ".join(f"{rates['parquet', s] / 1e6:.1f} M rec/s at {s:,}" for s in (SMALL, LARGE))
        )
    return results


# -- read ------------------------------------------------------------------------------------------


def time_window(records: np.ndarray, share: float = 0.10) -> tuple[int, int]:
    """``[start, end)`` in ns covering ``share`` of the records, in the middle of the stream."""
    n = len(records)
    first = int(n * (0.5 - share / 2))
    return int(records["ts_event"][first]), int(records["ts_event"][first + int(n * share)])


def read_hftagg(root: Path, start: int, end: int) -> int:
    import hftagg

    return len(hftagg.read(TOPIC, start=start, end=end, path=str(root)))


def read_hftagg_copy(root: Path, start: int, end: int) -> int:
    """``hftagg.read`` and a copy of what it returned: every byte read from the page cache
    (``read`` alone may return a view of the memory map without touching the data)."""
    import hftagg

    return len(np.array(hftagg.read(TOPIC, start=start, end=end, path=str(root))))


def read_arcticdb(library, start: int, end: int) -> int:
    import pandas as pd

    # date_range is inclusive at both ends: stop one nanosecond before ``end``
    window = (pd.Timestamp(start, unit="ns"), pd.Timestamp(end - 1, unit="ns"))
    return len(library.read(SYMBOL, date_range=window).data)


def read_parquet(path: Path, start: int, end: int) -> int:
    import pandas as pd

    filters = [("ts_event", ">=", start), ("ts_event", "<", end)]
    return len(pd.read_parquet(path, engine="pyarrow", filters=filters))


def read_rates(records: np.ndarray, work: Path, repeat: int) -> dict[str, float]:
    """Records/s returned for the 10 % window, per reader (stored first, untimed)."""
    import pyarrow.parquet as pq

    start, end = time_window(records)
    expected = int(np.count_nonzero((records["ts_event"] >= start) & (records["ts_event"] < end)))
    readers: dict[str, Callable[[], int]] = {}
    store_type = _store_type()
    if store_type is not None:
        root = work / "read-store"
        store_append(store_type, split(records, LARGE), root)
        readers["hftagg"] = lambda: read_hftagg(root, start, end)
        readers["hftagg+copy"] = lambda: read_hftagg_copy(root, start, end)
    library = _arcticdb_library(work / "read-arcticdb")
    if library is not None:
        for i, frame in enumerate(_frames(split(records, 1 << 20))):
            (library.write if i == 0 else library.append)(SYMBOL, frame)
        readers["arcticdb"] = lambda: read_arcticdb(library, start, end)
    pq_path = work / "read.parquet"
    pq.write_table(_arrow_table(records), pq_path, row_group_size=LARGE, compression="zstd")
    readers["parquet"] = lambda: read_parquet(pq_path, start, end)
    rates = {}
    for name, reader in readers.items():
        got = reader()
        if got != expected:
            raise AssertionError(f"read: {name} returned {got:,} records, expected {expected:,}")
        rates[name] = expected / best_of(reader, repeat, lambda: None)
    rates["records"] = expected
    return rates


def read_results(rates: dict, stored: int) -> list[Result]:
    if "hftagg" not in rates:
        _note("read skipped (no store): " + ", ".join(
            f"{k} {v / 1e6:.1f} M rec/s" for k, v in rates.items() if k != "records"))  # fmt: skip
        return []
    ours = rates["hftagg"]
    extra = {
        "stored": stored,
        "returned": int(rates["records"]),
        "hftagg.read + copy rec/s": rates["hftagg+copy"],
    }
    results = []
    if "arcticdb" in rates:
        results.append(
            Result(
                name="read",
                hftagg=ours,
                baseline=rates["arcticdb"],
                baseline_name="ArcticDB read(date_range=...)",
                unit="rec/s",
                extra=extra
                | {
                    "target ratio": _target(ours / rates["arcticdb"], 3.0),
                    "ratio with the copy": rates["hftagg+copy"] / rates["arcticdb"],
                },
            )
        )
    else:
        _note("read against ArcticDB skipped: arcticdb is not installed")
    results.append(
        Result(
            name="read-parquet",
            hftagg=ours,
            baseline=rates["parquet"],
            baseline_name="pandas.read_parquet with filters",
            unit="rec/s",
            extra=extra | {"report": "no target"},
        )
    )
    return results


# -- replay ----------------------------------------------------------------------------------------


def store_topics(store_type, streams: dict[str, np.ndarray], root: Path) -> None:
    """Several topics of trades into one store, in batches of 65,536."""
    from hftagg.stages import StageContext

    stage = store_type(store_type.Params(path=str(root), topics=list(streams)))
    stage.open(StageContext(max_batch=LARGE, topic_schemas=dict.fromkeys(streams, TRADE)))
    for port, topic in stage.input_topics.items():
        offset = 0
        for batch in split(streams[topic], LARGE):
            stage.write(batch, port, offset)
            offset += len(batch)
    stage.flush()
    stage.close()


def replay_hftagg(root: Path, topics: list[str], batch: int) -> int:
    """The ``store_replay`` source's ``next_batch`` until exhausted: what its thread does."""
    from hftagg.builtins.storage.store_replay.stage import StoreReplay, StoreReplayParams
    from hftagg.stages import StageContext

    stage = StoreReplay(StoreReplayParams(path=str(root), topics=topics, batch=batch))
    stage.open(StageContext())
    n = 0
    while not stage.exhausted:
        out = stage.next_batch()
        if out:
            n += sum(len(b) for b in out.values())
    stage.close()
    return n


def replay_in_memory(root: Path, topics: list[str]) -> int:
    """Read every topic whole, concatenate, one stable argsort by ts_event, take: the same
    merged order, all of it in memory at once."""
    import hftagg

    parts = [np.asarray(hftagg.read(t, path=str(root))) for t in topics]
    ts = np.concatenate([p["ts_event"] for p in parts])
    order = np.argsort(ts, kind="stable")
    return len(np.concatenate(parts)[order])


def replay_results(records: np.ndarray, work: Path, repeat: int) -> list[Result]:
    """Two topics (the stream split in two, interleaved in time) replayed, merged by ts_event."""
    store_type = _store_type()
    if store_type is None:
        return []
    topics = ["md.trades", "md.trades_b"]
    streams = {topics[0]: records[0::2], topics[1]: records[1::2]}
    root = work / "replay-store"
    store_topics(store_type, streams, root)
    n = len(records)
    ours = n / best_of(partial(replay_hftagg, root, topics, SMALL), repeat, lambda: None)
    large = n / best_of(partial(replay_hftagg, root, topics, LARGE), repeat, lambda: None)
    theirs = n / best_of(partial(replay_in_memory, root, topics), repeat, lambda: None)
    return [
        Result(
            name="replay",
            hftagg=ours,
            baseline=theirs,
            baseline_name="read all + np.argsort(stable) merge, in memory",
            unit="rec/s",
            extra={
                "records": n,
                "topics": len(topics),
                "batch": SMALL,
                "batch 65536 rec/s": large,
                "report": "no target; the replay streams, the baseline holds everything",
            },
        )
    ]


# -- optional case modules -------------------------------------------------------------------------


def module_cases(name: str, quick: bool) -> list[Result]:
    """``cases(quick)`` of an optional case module; a message and nothing when it is absent."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        _note(
            f"{name.rsplit('.', 1)[-1].removeprefix('storage_')} cases skipped: {name.replace('.', '/')}.py is absent"
        )
        return []
    return list(module.cases(quick))


def run(quick: bool = False) -> list[Result]:
    n = 1_000_000 if quick else 10_000_000
    repeat = 2 if quick else 4
    records = make_trades(n)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="hftagg-bench-storage-") as tmp:
        work = Path(tmp)
        results += append_results(append_rates(records, work, repeat), n)
        for name in CASE_MODULES:
            results += module_cases(name, quick)
        results += read_results(read_rates(records, work, repeat + 1), n)
        results += replay_results(records, work, repeat)
    return results


if __name__ == "__main__":  # pragma: no cover - python -m benchmarks storage is the entry point
    sys.exit(f"run it as: python -m benchmarks storage {' '.join(sys.argv[1:])}".strip())
