"""Built-in plugin: Consul KV as a config source, when ``CONSUL_HTTP_ADDR`` is set.

Keys under ``HFTAGG_CONSUL_PREFIX`` (default ``hftagg/``) map to config keys, one level per
``/``; watched with blocking queries (:mod:`hftagg.config.consul`). ``CONSUL_HTTP_TOKEN`` is sent
when ACLs are on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hftagg.config.consul import ConsulSource, consul_settings
from hftagg.config.sources import ConfigSourceType
from hftagg.hookspecs import hookimpl

__all__ = ["CONSUL"]


def open_consul(environ: Mapping[str, str]) -> ConsulSource | None:
    settings = consul_settings(environ)
    if settings is None:
        return None
    address, prefix = settings
    return ConsulSource(address, prefix, token=environ.get("CONSUL_HTTP_TOKEN"))


CONSUL = ConfigSourceType(
    "consul",
    open_consul,
    doc="Consul KV under HFTAGG_CONSUL_PREFIX (default hftagg/) when CONSUL_HTTP_ADDR is set",
    removal="delete {key} from Consul KV",
)


@hookimpl
def hftagg_register_config_sources(register: Callable[[ConfigSourceType], None]) -> None:
    register(CONSUL)
