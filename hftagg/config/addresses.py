"""Checking listen addresses from config without opening anything.

``hftagg config validate`` and every live change run these, so a garbage URL, a bad port or a
non-loopback address without ``allow_remote`` is a config problem found before a socket opens,
not an exception when the stage starts. The checks are the ones the transports make when they
open (:func:`hftagg.bus.transport.check_loopback` for the loopback rule).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["LISTEN_SCHEMES", "host_port_problem", "listen_address_problem"]

# what pynng can listen on (nng's URL schemes)
LISTEN_SCHEMES = ("tcp", "tcp4", "tcp6", "ipc", "inproc", "ws", "wss", "tls+tcp", "abstract")
_LOCAL_SCHEMES = ("ipc", "inproc", "abstract")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port_problem(port_text: str) -> str | None:
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        return f"port {port_text or '(none)'!r} is not a port number 0-65535 (0: any free one)"
    return None


def listen_address_problem(address: object, allow_remote: bool, allow_key: str) -> str | None:
    """What is wrong with ``address`` as a place to listen (None: nothing), with the fix."""
    example = "e.g. tcp://127.0.0.1:5555 or ipc:///tmp/hftagg.ipc"
    if not isinstance(address, str) or "://" not in address:
        return f"expected a URL, {example}"
    parts = urlsplit(address)
    if parts.scheme not in LISTEN_SCHEMES:
        return f"scheme {parts.scheme!r} is not one of {', '.join(LISTEN_SCHEMES)} ({example})"
    if parts.scheme in _LOCAL_SCHEMES:
        return None if address.split("://", 1)[1] else f"names no path ({example})"
    netloc = parts.netloc
    host, sep, port = netloc.rpartition(":")
    if not sep or netloc.endswith("]"):
        return f"names no port ({example})"
    problem = _port_problem(port)
    if problem:
        return f"{problem} ({example})"
    host = host.strip("[]")
    if not host:
        return f"names no host: use 127.0.0.1 to listen on loopback ({example})"
    if not allow_remote and not _is_loopback(host):
        return (
            f"listens beyond loopback (host {host!r}); use 127.0.0.1 (or ipc://), or set "
            f"{allow_key} = true to expose it on purpose"
        )
    return None


def host_port_problem(address: object, allow_remote: bool, allow_key: str) -> str | None:
    """The same for a ``host:port`` address (the metrics endpoint)."""
    if not isinstance(address, str) or ":" not in address:
        return "expected host:port, e.g. 127.0.0.1:9464"
    host, _, port = address.rpartition(":")
    problem = _port_problem(port)
    if problem:
        return f"{problem}; expected host:port, e.g. 127.0.0.1:9464"
    host = host.strip("[]")
    if not host:
        return "names no host; use 127.0.0.1:PORT to listen on loopback"
    if not allow_remote and not _is_loopback(host):
        return (
            f"listens beyond loopback (host {host!r}); use 127.0.0.1, or set {allow_key} = true "
            f"to expose it on purpose"
        )
    return None
