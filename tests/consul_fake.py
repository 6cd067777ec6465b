"""A small in-process stand-in for a Consul agent's KV HTTP API, for tests.

Speaks the documented subset hftagg uses: ``GET /v1/kv/<key>[?recurse][&index=N&wait=Xs]``
(a JSON list of {Key, Value (base64), CreateIndex, ModifyIndex, LockIndex, Flags, Session},
404 when nothing matches, ``X-Consul-Index`` always; with ``index`` the request blocks until
the store's index is greater than N or ``wait`` runs out), ``PUT /v1/kv/<key>`` (body is the
value; answers ``true``) and ``DELETE /v1/kv/<key>[?recurse]``. Request headers are kept in
``requests`` so tests can check the ``X-Consul-Token``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeConsul", "parse_wait"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wait(text: str, default: float = 300.0) -> float:
    """A Go duration (``10s``, ``500ms``, ``1m30s``) in seconds; Consul caps it at 10 minutes."""
    parts = re.findall(r"([\d.]+)(ns|us|ms|s|m|h)", text)
    if not parts:
        return default
    return min(sum(float(n) * _UNITS[u] for n, u in parts), 600.0)


@dataclass
class Entry:
    value: bytes | None
    create_index: int
    modify_index: int
    flags: int = 0

    def as_json(self, key: str) -> dict[str, Any]:
        value = None if self.value is None else base64.b64encode(self.value).decode("ascii")
        return {
            "Key": key,
            "Value": value,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "LockIndex": 0,
            "Flags": self.flags,
            "Session": None,
        }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as Consul (Go) does: no 40 ms delayed-ACK stalls

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _parse(self) -> tuple[str, dict[str, str]] | None:
        url = urllib.parse.urlsplit(self.path)
        if not url.path.startswith("/v1/kv/"):
            self._send(404, b"unknown endpoint")
            return None
        key = urllib.parse.unquote(url.path[len("/v1/kv/") :])
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        fake = self.server.fake
        with fake.cond:
            fake.requests.append((self.command, self.path, dict(self.headers.items())))
        return key, query

    def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Consul-Index", str(self.server.fake.index))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parsed = self._parse()
        if parsed is None:
            return
        key, query = parsed
        fake = self.server.fake
        if not fake.wait_for_change(
            int(query.get("index", "0") or 0), parse_wait(query.get("wait", ""))
        ):
            self.close_connection = True  # shutting down: drop the connection, like a dead agent
            return
        entries = fake.matching(key, recurse="recurse" in query)
        if not entries:
            self._send(404, b"")
            return
        self._send(200, json.dumps(entries).encode(), "application/json")

    def do_PUT(self) -> None:  # noqa: N802
        parsed = self._parse()
        if parsed is None:
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.fake.put(parsed[0], body, int(parsed[1].get("flags", "0") or 0))
        self._send(200, b"true", "application/json")

    def do_DELETE(self) -> None:  # noqa: N802
        parsed = self._parse()
        if parsed is None:
            return
        self.server.fake.delete(parsed[0], recurse="recurse" in parsed[1])
        self._send(200, b"true", "application/json")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeConsul


class FakeConsul:
    """``FakeConsul(port).start()``; ``address`` is ``127.0.0.1:<port>``; ``stop()`` takes it
    down (blocked queries are dropped) and ``start()`` brings it back on the same port, data kept."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.store: dict[str, Entry] = {}
        self.index = 1
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.cond = threading.Condition()
        self._closing = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeConsul:
        self._closing = False
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, kwargs={"poll_interval": 0.05}
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self._closing = True
            self.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the store -------------------------------------------------------------------------

    def _bump(self) -> int:
        self.index += 1
        self.cond.notify_all()
        return self.index

    def put(self, key: str, value: bytes | str, flags: int = 0) -> None:
        data = value.encode() if isinstance(value, str) else value
        with self.cond:
            old = self.store.get(key)
            index = self._bump()
            self.store[key] = Entry(data, old.create_index if old else index, index, flags)

    def delete(self, key: str, recurse: bool = False) -> None:
        with self.cond:
            doomed = [k for k in self.store if (k.startswith(key) if recurse else k == key)]
            for k in doomed:
                del self.store[k]
            self._bump()

    def set_index(self, index: int) -> None:
        """Force the store's index (e.g. lower, as after a snapshot restore) and wake watchers."""
        with self.cond:
            self.index = index
            self.cond.notify_all()

    def matching(self, key: str, recurse: bool) -> list[dict[str, Any]]:
        with self.cond:
            keys = sorted(k for k in self.store if (k.startswith(key) if recurse else k == key))
            return [self.store[k].as_json(k) for k in keys]

    def wait_for_change(self, index: int, wait_secs: float) -> bool:
        """Block while the store's index is <= ``index`` (up to ``wait_secs``); False when the
        server is shutting down."""
        with self.cond:
            if index > 0:
                self.cond.wait_for(lambda: self.index > index or self._closing, wait_secs)
            return not self._closing

    def tokens(self) -> list[str | None]:
        with self.cond:
            return [h.get("X-Consul-Token") for _, _, h in self.requests]
