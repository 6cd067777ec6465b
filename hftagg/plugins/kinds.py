"""What plugins register: one :class:`Kind` per registration hook, and the ``register`` callback.

A kind says which hook fills it, how a registered thing is named (the key duplicates are found
by), and how it is checked. The host (:mod:`hftagg.plugins.manager`) keeps one table per kind
with the plugin each entry came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hftagg.errors import PluginError
from hftagg.records.schema import Schema
from hftagg.stages.base import KINDS as STAGE_KINDS
from hftagg.stages.base import Stage

__all__ = ["KINDS", "Kind", "KernelWarmup", "Registrar"]


@dataclass(frozen=True)
class KernelWarmup:
    """A callable that compiles a plugin's kernels ahead of time (``hftagg warm``)."""

    name: str
    warm: Callable[[], None]


@dataclass(frozen=True)
class Kind:
    attr: str  # the host's table: host.table(attr)
    hook: str  # the registration hook that fills it
    label: str  # in messages: "stage type"
    key: Callable[[Any], str]
    check: Callable[[Any, str], None]  # raises PluginError naming the plugin
    make: Callable[..., Any] = lambda item: item  # what register(...) receives -> the entry
    describe: Callable[[Any], str] = str  # the line in ``hftagg plugins``


def _check_stage_type(cls: Any, plugin: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise PluginError(f"plugin {plugin!r} registered {cls!r}, which is not a Stage subclass")
    name = cls.type_name
    if not name or not isinstance(name, str) or "." in name:
        raise PluginError(
            f"plugin {plugin!r}: stage class {cls.__name__} has type_name {name!r}; "
            f"set a non-empty type_name without dots"
        )
    if cls.kind not in STAGE_KINDS:
        raise PluginError(
            f"plugin {plugin!r}: stage type {name!r} has kind {cls.kind!r}; use one of "
            f"{STAGE_KINDS}"
        )


def _check_schema(schema: Any, plugin: str) -> None:
    if not isinstance(schema, Schema):
        raise PluginError(
            f"plugin {plugin!r} registered {schema!r} as a schema; pass an hftagg.Schema"
        )


def _check_section(section: Any, plugin: str) -> None:
    from hftagg.config.sections import ConfigSection
    from hftagg.config.spec import CORE_SECTIONS

    if not isinstance(section, ConfigSection):
        raise PluginError(
            f"plugin {plugin!r} registered {section!r} as a config section; pass an "
            f"hftagg.config.sections.ConfigSection"
        )
    if not section.name or "." in section.name or section.name in CORE_SECTIONS:
        raise PluginError(
            f"plugin {plugin!r}: config section name {section.name!r} is not allowed; use a "
            f"name without dots, not one of the core's {', '.join(CORE_SECTIONS)}"
        )


def _check_source(kind: Any, plugin: str) -> None:
    from hftagg.config.sources import ConfigSourceType

    if not isinstance(kind, ConfigSourceType) or not kind.name or not callable(kind.open):
        raise PluginError(
            f"plugin {plugin!r} registered {kind!r} as a config source; pass an "
            f"hftagg.config.sources.ConfigSourceType with a name and an open(environ) callable"
        )


def _named(what: str) -> Callable[[Any, str], None]:
    def check(thing: Any, plugin: str) -> None:
        name = getattr(thing, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {what} without a name: {thing!r}")

    return check


def _make_warmup(warm: Callable[[], None], name: str | None = None) -> KernelWarmup:
    if not callable(warm):
        raise PluginError(f"register(warm): {warm!r} is not callable")
    default = f"{getattr(warm, '__module__', '?')}.{getattr(warm, '__qualname__', repr(warm))}"
    return KernelWarmup(name or default, warm)


KINDS: tuple[Kind, ...] = (
    # schemas first: stage types refer to them
    Kind("schemas", "hftagg_register_schemas", "schema", lambda s: s.key, _check_schema),
    Kind(
        "stage_types",
        "hftagg_register_stage_types",
        "stage type",
        lambda c: c.type_name,
        _check_stage_type,
        describe=lambda c: f"{c.type_name} ({c.kind})",
    ),
    Kind(
        "transports",
        "hftagg_register_transports",
        "transport",
        lambda t: t.name,
        _named("transport"),
        describe=lambda t: t.name,
    ),
    Kind(
        "codecs",
        "hftagg_register_codecs",
        "codec family",
        lambda c: c.name,
        _named("codec family"),
        describe=lambda c: c.name,
    ),
    Kind(
        "config_sections",
        "hftagg_register_config_sections",
        "config section",
        lambda c: c.name,
        _check_section,
        describe=lambda c: f"[{c.name}]",
    ),
    Kind(
        "config_sources",
        "hftagg_register_config_sources",
        "config source",
        lambda c: c.name,
        _check_source,
        describe=lambda c: c.name,
    ),
    Kind(
        "kernel_warmups",
        "hftagg_register_kernel_warmups",
        "kernel warm-up",
        lambda w: w.name,
        lambda w, p: None,
        make=_make_warmup,
        describe=lambda w: w.name,
    ),
)


class Registrar:
    """The ``register`` callback one plugin's registration hook receives.

    Its repr names the kind and the plugin, so ``HFTAGG_TRACE_PLUGINS=1`` shows who registers
    what. A bad argument raises :class:`PluginError` inside the plugin's hook, which fails that
    plugin only.
    """

    def __init__(self, kind: Kind, plugin: str) -> None:
        self.kind = kind
        self.plugin = plugin
        self.items: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        item = self.kind.make(*args, **kwargs)
        self.kind.check(item, self.plugin)
        self.items.append(item)

    def __repr__(self) -> str:
        return f"<register({self.kind.label}) for plugin {self.plugin!r}>"
