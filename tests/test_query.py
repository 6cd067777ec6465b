"""hftagg query: DuckDB over live segments and archived Parquet alike, against a numpy
reference; output formats; errors that name the views."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import numpy as np
import pytest

from hftagg.builtins.storage.archive.compact import Compactor
from hftagg.builtins.storage.archive.query import open_query
from hftagg.cli import main
from hftagg.errors import StorageError
from tests.test_archive import DAY0, make_trades, write_segment


@pytest.fixture
def store(tmp_path):
    """md.trades: two segments archived to Parquet, one sealed and one live segment left."""
    root = tmp_path / "storage"
    batches = [make_trades(700 + 100 * i, DAY0 + i * 10**12, 10**6, seed=i) for i in range(4)]
    writers = []
    position = 0
    for batch in batches[:2]:
        write_segment(root, "md.trades", position, batch)
        position += len(batch)
    Compactor(root, settle_ns=0).run_once()
    for i, batch in enumerate(batches[2:]):
        writers.append(write_segment(root, "md.trades", position, batch, seal=i == 0))
        position += len(batch)
    yield root, np.concatenate(batches)
    writers[-1].seal()


def test_group_by_over_live_and_archived_equals_numpy(store):
    root, every = store
    session = open_query(root)

    rows = session.sql(
        "SELECT instrument_id, count(*), sum(price), min(ts_event), max(size) "
        "FROM md_trades GROUP BY 1 ORDER BY 1"
    ).fetchall()

    view = session.views["md_trades"]
    assert view.archived_rows == 1500 and view.live_rows == 1900
    expected = []
    for instrument in np.unique(every["instrument_id"]):
        mine = every[every["instrument_id"] == instrument]
        total = Decimal(int(mine["price"].astype(object).sum())).scaleb(-9)
        first = int(mine["ts_event"].min())
        largest = Decimal(int(mine["size"].max())).scaleb(-8)
        expected.append((int(instrument), len(mine), total, first, largest))
    got = [(i, n, s, t, m) for i, n, s, t, m in rows]
    assert [(i, n, s, m) for i, n, s, _, m in got] == [(i, n, s, m) for i, n, s, _, m in expected]
    first_ns = session.sql("SELECT epoch_ns(min(ts_event)) FROM md_trades").fetchall()[0][0]
    assert first_ns == int(every["ts_event"].min())
    session.close()


def test_types_are_utc_nanosecond_times_and_exact_decimals(store):
    root, _ = store
    session = open_query(root)

    types = dict(zip(*[session.sql("DESCRIBE md_trades").fetchnumpy()[k] for k in (
        "column_name", "column_type")], strict=True))  # fmt: skip

    assert types["ts_event"] == "TIMESTAMP_NS WITH TIME ZONE" or types["ts_event"] == (
        "TIMESTAMPTZ_NS"
    )
    assert types["price"] == "DECIMAL(19,9)" and types["size"] == "DECIMAL(19,8)"
    session.close()


def test_bad_sql_names_the_views(store):
    root, _ = store
    session = open_query(root)

    with pytest.raises(StorageError) as err:
        session.sql("SELECT * FROM md_trade")

    message = str(err.value)
    assert "md_trade" in message and "md_trades (topic md.trades, trade@2" in message
    assert "1900 live + 1500 archived rows" in message
    session.close()


def test_cli_formats(store, capsys):
    root, every = store
    sql = (
        "SELECT instrument_id, count(*) AS n, max(price) AS p FROM md_trades GROUP BY 1 ORDER BY 1"
    )

    assert main(["query", sql, "--path", str(root), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out, parse_float=Decimal)
    assert main(["query", sql, "--path", str(root), "--format", "csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert main(["query", sql, "--path", str(root)]) == 0
    table = capsys.readouterr().out

    top = every[every["instrument_id"] == 1]["price"].max()
    assert rows[0] == {"instrument_id": 1, "n": int((every["instrument_id"] == 1).sum()),
                       "p": Decimal(int(top)).scaleb(-9)}  # fmt: skip
    assert csv_lines[0] == "instrument_id,n,p"
    assert csv_lines[1] == f"1,{rows[0]['n']},{Decimal(int(top)).scaleb(-9)}"
    assert "DECIMAL(19,9)" in table and f"({len(rows)} rows)" in table


def test_cli_bad_sql_exits_2_listing_views(store, capsys):
    root, _ = store

    code = main(["query", "SELEC 1", "--path", str(root)])

    err = capsys.readouterr().err
    assert code == 2 and "syntax error" in err.lower() and "md_trades (topic md.trades" in err


@pytest.mark.slow
def test_query_command_runs_as_a_subprocess(store):
    root, every = store

    done = subprocess.run(
        [sys.executable, "-m", "hftagg", "query", "SELECT count(*) FROM md_trades",
         "--path", str(root), "--format", "csv"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["count_star()", str(len(every))]


def test_query_without_a_catalog_reads_the_parquet_files_found(store):
    root, every = store
    (root / "catalog.duckdb").unlink()
    session = open_query(root)

    [(count,)] = session.sql("SELECT count(*) FROM md_trades").fetchall()

    assert count == len(every)
    session.close()
