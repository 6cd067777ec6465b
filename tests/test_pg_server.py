"""The PostgreSQL fixture: a real server, fresh databases, an outage and a restart on one DSN."""

from __future__ import annotations

import psycopg
import pytest


def test_each_test_gets_its_own_empty_database(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()[0]
        version = conn.execute("SHOW server_version_num").fetchone()[0]

    assert tables == 0
    assert int(version) >= 160000


def test_server_stopped_and_restarted_serves_the_same_dsn_and_data(pg_server, pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (7)")

    pg_server.stop()
    assert not pg_server.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_dsn, connect_timeout=2)
    pg_server.start()

    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT x FROM kept").fetchall() == [(7,)]
