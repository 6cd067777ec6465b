"""Consul KV as a config layer, kept current with blocking queries.

Keys under the prefix map to config keys, one level per ``/``; values are read as TOML values
(``30``, ``true``, ``"x"``, ``[1, 2]``) and as plain strings otherwise::

    hftagg/processing/ema_window = 30     ->  {"processing": {"ema_window": 30}}
    hftagg/data_sources/sim/rate = 5000   ->  {"data_sources": {"sim": {"rate": 5000}}}

``fetch_once()`` reads the layer at startup (and raises ConfigError naming the address when the
agent cannot be reached; the caller decides whether to go on without it). ``start()`` runs a
background thread that long-polls ``GET /v1/kv/<prefix>?recurse&index=N&wait=...`` and calls
``on_change(layer)`` only when the layer's content changed. The thread never raises: errors are
kept in ``status``/``last_error`` and retried with capped exponential backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import consul

from hftagg.config.load import parse_value
from hftagg.errors import MISSING, ConfigError, Problem

__all__ = ["ConsulSource", "layer_from_items"]

log = logging.getLogger(__name__)

MIN_BACKOFF_SECS = 0.1
MAX_BACKOFF_SECS = 10.0
CONNECT_TIMEOUT_SECS = 5.0


def _split_address(address: str) -> tuple[str, int, str]:
    """``host:port``, ``http://host:port`` or ``https://host[:port]`` -> (host, port, scheme)."""
    parsed = urllib.parse.urlsplit(address if "//" in address else f"//{address}")
    scheme = parsed.scheme or "http"
    try:
        port = parsed.port or (443 if scheme == "https" else 8500)
    except ValueError as exc:
        raise ConfigError(
            [Problem("consul address", address, f"expected host:port ({exc})")]
        ) from exc
    return parsed.hostname or "127.0.0.1", port, scheme


def layer_from_items(items: list[dict[str, Any]] | None, prefix: str) -> dict[str, Any]:
    """The nested config dict that KV entries under ``prefix`` describe (folders are skipped)."""
    out: dict[str, Any] = {}
    for item in sorted(items or [], key=lambda i: i["Key"]):
        key, value = item["Key"], item.get("Value")
        path = [p for p in key[len(prefix) :].split("/") if p] if key.startswith(prefix) else []
        if not path or key.endswith("/") or value is None:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict) or isinstance(node.get(path[-1]), dict):
            log.warning("consul key %r conflicts with another key under %r; ignored", key, prefix)
            continue
        node[path[-1]] = parse_value(text.strip())
    return out


class ConsulSource:
    """The Consul KV layer under ``prefix``, watched by a background thread."""

    name = "consul"  # the layer's name (hftagg.config.sources)

    def __init__(
        self,
        address: str,
        prefix: str = "hftagg/",
        on_change: Callable[[dict], None] | None = None,
        token: str | None = None,
        wait: str = "30s",
    ) -> None:
        self.address = address
        self.prefix = prefix.lstrip("/").rstrip("/") + "/"
        self.on_change = on_change
        self.token = token if token is not None else os.environ.get("CONSUL_HTTP_TOKEN")
        self.wait = wait
        self.last_error: BaseException | None = None
        self._host, self._port, self._scheme = _split_address(address)
        self._status = "not started"
        self._index = 0
        self._layer: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: consul.Consul | None = None
        self._lock = threading.Lock()

    # -- public ----------------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``connected``, ``unreachable: <error>``, or ``not started``."""
        return self._status

    @property
    def layer(self) -> dict[str, Any]:
        """The last layer read (empty before the first successful read)."""
        return dict(self._layer or {})

    def fetch_once(self) -> dict[str, Any]:
        """Read the layer now; ConfigError naming the address when Consul cannot be read."""
        try:
            index, items = self._connect().kv.get(self.prefix, recurse=True)
        except Exception as exc:
            self._failed(exc)
            raise ConfigError(
                [
                    Problem(
                        f"consul {self.address}",
                        MISSING,
                        f"cannot read {self.prefix!r} from Consul: {exc}; check CONSUL_HTTP_ADDR "
                        "and that the agent is running (and CONSUL_HTTP_TOKEN if ACLs are on)",
                    )
                ]
            ) from exc
        self._status = "connected"
        self._index = self._next_index(index)
        self._layer = layer_from_items(items, self.prefix)
        return dict(self._layer)

    def start(self) -> None:
        """Start watching in a daemon thread (a no-op when already running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hftagg-consul", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop watching. Returns within about ``timeout`` seconds; a blocking query still in
        flight is abandoned (the daemon thread ends when it returns and calls nothing)."""
        self._stop.set()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.http.session.close()
            except Exception:  # closing is best effort
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    # -- internals -------------------------------------------------------------------------

    def _connect(self) -> consul.Consul:
        with self._lock:
            if self._client is None:
                self._client = consul.Consul(
                    host=self._host, port=self._port, scheme=self._scheme, token=self.token
                )
                self._client.token = self.token  # py-consul prefers CONSUL_HTTP_TOKEN; ours wins
            return self._client

    def _failed(self, exc: BaseException) -> None:
        self.last_error = exc
        self._status = f"unreachable: {exc}"

    def _next_index(self, index: Any) -> int:
        """Per Consul's blocking-query rules: reset to 0 when the index goes backwards."""
        try:
            new = int(index)
        except (TypeError, ValueError):
            return 0
        if new < self._index or new < 0:
            return 0
        return max(new, 1)

    def _poll(self) -> None:
        index, items = self._connect().kv.get(
            self.prefix, recurse=True, index=self._index or None, wait=self.wait
        )
        if self._stop.is_set():
            return
        self._status = "connected"
        self._index = self._next_index(index)
        layer = layer_from_items(items, self.prefix)
        if layer == self._layer:
            return
        self._layer = layer
        if self.on_change is not None:
            try:
                self.on_change(dict(layer))
            except Exception:
                log.exception("consul on_change callback failed")

    def _run(self) -> None:
        backoff = MIN_BACKOFF_SECS
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._poll()
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._failed(exc)
                log.debug(
                    "consul %s unreachable, retrying in %.1fs: %s", self.address, backoff, exc
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECS)
                continue
            backoff = MIN_BACKOFF_SECS
            if time.monotonic() - started < 0.01:
                self._stop.wait(0.01)  # an index that does not block must not spin the CPU


DEFAULT_PREFIX = "hftagg/"


def consul_settings(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(address, prefix)`` when ``CONSUL_HTTP_ADDR`` is set (prefix from
    ``HFTAGG_CONSUL_PREFIX``, default ``hftagg/``); ``None`` when Consul is not configured."""
    environ = os.environ if environ is None else environ
    address = environ.get("CONSUL_HTTP_ADDR")
    if not address:
        return None
    return address, environ.get("HFTAGG_CONSUL_PREFIX") or DEFAULT_PREFIX
