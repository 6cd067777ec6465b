"""Config sources that plugins provide: layers between the config file and the environment.

A plugin registers a :class:`ConfigSourceType` with ``hftagg_register_config_sources``. At start
each type's ``open(environ)`` returns a source, or ``None`` when it is not configured here (the
built-in Consul type opens only when ``CONSUL_HTTP_ADDR`` is set). A source is read once before
the pipeline starts -- unreachable is not fatal: the pipeline starts on the other layers, says
so, and the source keeps retrying -- and then watched: every new layer it hands to
``on_change`` is validated and applied like an edit of ``config.toml``.

A source object has ``name`` (the layer's name in provenance, e.g. ``consul``), ``layer`` (the
last layer read, ``{}`` before the first), ``fetch_once()`` (read now; raise ``ConfigError``
naming the address when it cannot), ``on_change`` (set by the runtime before ``start()``),
``start()`` (watch in the background; never raise from the thread) and ``stop()``.

Plugin folders (``runtime.plugin_paths``) are read from the file and the environment only:
config sources are themselves plugins, so they are opened after plugins are loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hftagg.errors import ConfigError

__all__ = ["ConfigSourceType", "open_config_sources", "read_config_sources", "source_layers"]

log = logging.getLogger("hftagg.config")


@dataclass(frozen=True)
class ConfigSourceType:
    """A kind of config source: ``open(environ)`` returns a source or ``None`` (not configured)."""

    name: str
    open: Callable[[Mapping[str, str]], Any]
    doc: str = ""
    #: how a user removes one key from this source (``config set`` says it when one overrides)
    removal: str = "remove {key} from the {name} config source"


def _warn_unreachable(name: str, exc: ConfigError) -> None:
    log.warning("%s; running on the other layers and retrying in the background", exc)


def open_config_sources(
    host: Any,
    environ: Mapping[str, str] | None = None,
    *,
    fetch: bool = True,
    on_unreachable: Callable[[str, ConfigError], None] = _warn_unreachable,
) -> list[Any]:
    """Open every registered source configured in ``environ``; read each once (``fetch``).

    A source that cannot be opened is logged and skipped; one that cannot be read is kept (it
    retries once started) and ``on_unreachable(name, error)`` says so (default: a warning that
    the pipeline runs on the other layers).
    """
    environ = os.environ if environ is None else environ
    out = []
    for name, kind in host.config_sources.items():
        origin = host.table_origin("config_sources", name)
        try:
            source = kind.open(environ)
        except Exception as exc:  # a plugin's bug must not stop the start
            log.warning("config source %r (plugin %r) could not open: %s", name, origin, exc)
            continue
        if source is None:
            continue
        if fetch:
            try:
                source.fetch_once()
                log.info("config source %r: layer read, %d key(s)", name, _leaves(source.layer))
            except ConfigError as exc:
                on_unreachable(name, exc)
        out.append(source)
    return out


def read_config_sources(
    host: Any,
    environ: Mapping[str, str] | None = None,
    on_unreachable: Callable[[str, ConfigError], None] = _warn_unreachable,
) -> list[tuple[str, dict[str, Any]]]:
    """Each configured source's layer, read once now, for one-shot commands (``config show``)."""
    sources = open_config_sources(host, environ, on_unreachable=on_unreachable)
    try:
        return source_layers(sources)
    finally:
        for source in sources:
            source.stop()


def source_layers(sources: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, layer)`` of each source, in registration order, for ``named_layers(remote=)``."""
    return [(source.name, dict(source.layer)) for source in sources]


def _leaves(layer: Mapping[str, Any]) -> int:
    return sum(_leaves(v) if isinstance(v, Mapping) and v else 1 for v in layer.values())
