"""Every hook hftagg calls, grouped by phase. A plugin implements any subset with ``@hookimpl``.

Plugins accept only the hook arguments they need, so a hook can gain arguments later without
breaking anyone. Hooks run when plugins are loaded and when the graph is built, started or
stopped -- never per batch: the runtime calls stage objects directly on the hot path.

A minimal plugin file dropped into ``plugins/``::

    from hftagg import Stage, hookimpl

    class Mid(Stage):
        ...

    @hookimpl
    def hftagg_register_stage_types(register):
        register(Mid)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from hftagg.bus.transport import Transport
    from hftagg.config.sections import ConfigSection
    from hftagg.config.sources import ConfigSourceType
    from hftagg.records.schema import Schema
    from hftagg.runtime.pipeline import Pipeline
    from hftagg.stages.base import Stage

__all__ = ["PROJECT", "CodecFamily", "RegisterKernelWarmup", "hookimpl", "hookspec"]

PROJECT = "hftagg"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class CodecFamily(Protocol):
    """What ``hftagg_register_codecs`` takes: a protocol family with a unique name."""

    name: str
    description: str


class RegisterKernelWarmup(Protocol):
    """The ``register`` of ``hftagg_register_kernel_warmups``."""

    def __call__(self, warm: Callable[[], None], name: str | None = None) -> None: ...


# -------------------------------------------------------------------------------------------------
# Registration: called once per plugin when the plugin is loaded (and again when it is reloaded),
# through the plugin manager (``HFTAGG_TRACE_PLUGINS=1`` logs each call). The core keeps the
# registries and decides what a duplicate name means: within one discovery tier every plugin that
# claims the name fails with an error naming them all; an earlier tier (built-ins, then entry
# points, then plugin files) keeps a name against a later one; a running plugin keeps it against a
# new file. ``register`` raises PluginError for an invalid argument, which fails that plugin only.
# What a plugin registers is committed only if all of it is valid. Return values are ignored.
# -------------------------------------------------------------------------------------------------


@hookspec
def hftagg_register_schemas(register: Callable[[Schema], None]) -> None:
    """Register record schemas.

    Called when plugins are loaded, before stage types. ``register(schema)`` takes a
    :class:`hftagg.records.Schema`; registering the same name and version with a different
    layout is an error (bump the version instead).
    """


@hookspec
def hftagg_register_stage_types(register: Callable[[type[Stage]], None]) -> None:
    """Register stage types (sources, protocol decoders, core stages, sinks).

    Called when plugins are loaded. ``register(cls)`` takes a :class:`hftagg.stages.Stage`
    subclass with ``type_name``, ``kind``, ``Params`` and its ports set. Config refers to the
    stage by ``type_name``; two plugins registering the same name is an error naming both.
    """


@hookspec
def hftagg_register_transports(register: Callable[[Transport], None]) -> None:
    """Register transports that carry frames between processes (pynng, NATS, ...).

    Called when plugins are loaded. ``register(transport)`` takes an object with ``name``,
    ``patterns``, ``publisher(address, pattern=, buffer_frames=)`` and
    ``subscriber(address, topics, pattern=, buffer_frames=)`` (see :mod:`hftagg.bus.transport`).
    ``[delivery] method`` selects a transport by name.
    """


@hookspec
def hftagg_register_codecs(register: Callable[[CodecFamily], None]) -> None:
    """Register protocol codec families (SBE, FIX, DBN, ...).

    Called when plugins are loaded. ``register(family)`` takes an object with a unique ``name``
    (what config's ``format`` and decoder stages refer to) and a ``description``; how a family
    builds codecs from protocol definitions in ``protocols/`` (SBE XML schemas, FIX
    dictionaries) is the family's own API. Decoder stages find families in
    ``StageContext.codecs``. Two plugins registering the same name is an error naming both.
    """


@hookspec
def hftagg_register_config_sections(register: Callable[[ConfigSection], None]) -> None:
    """Register top-level config tables this plugin owns (the seed's ``[processing]`` is the EMA
    plugin's, ``[delivery]`` the publisher's).

    Called when plugins are loaded. ``register(section)`` takes an
    :class:`hftagg.config.sections.ConfigSection`: its ``name``, an optional ``model`` (a Params
    model: defaults, bounds, live/restart marks, unknown keys rejected) and
    ``to_stages(values, source, problems)``, which returns the stage specs the table stands for.
    The core owns ``runtime``, ``data_sources``, ``stages`` and ``telemetry``; any other table
    without an owner is an unknown section.
    """


@hookspec
def hftagg_register_config_sources(register: Callable[[ConfigSourceType], None]) -> None:
    """Register kinds of config layer that sit between ``config.toml`` and the environment
    (the built-in Consul KV source is one).

    Called when plugins are loaded. ``register(kind)`` takes an
    :class:`hftagg.config.sources.ConfigSourceType`: a ``name`` (the layer's name in messages
    and ``config show``) and ``open(environ)``, which returns a source object or ``None`` when
    the environment does not configure it. ``hftagg run`` reads each source once before start
    (unreachable is a warning, not fatal) and applies every layer it later hands to its
    ``on_change`` like an edit of the config file (see :mod:`hftagg.config.sources`).
    """


@hookspec
def hftagg_register_kernel_warmups(register: RegisterKernelWarmup) -> None:
    """Register functions that compile a plugin's numba kernels ahead of time.

    Called when plugins are loaded. ``register(warm, name=None)`` takes a no-argument callable
    that compiles (and caches on disk) every kernel signature the plugin's stages use, so a
    running pipeline never stops to compile. ``hftagg warm`` (run by ``build.sh``) calls every
    registered warm-up -- built-in and third-party alike -- times each and reports a failing one
    by name without stopping the others. ``name`` defaults to the callable's qualified name.
    """


# -------------------------------------------------------------------------------------------------
# Lifecycle: called by the runtime around a pipeline's life. Return values are ignored.
# -------------------------------------------------------------------------------------------------


@hookspec
def hftagg_pipeline_started(pipeline: Pipeline) -> None:
    """The pipeline's graph is built and its threads are running.

    Called once per start, from the thread that started it. ``pipeline`` exposes ``graph``,
    ``stats()`` and ``rings``; do not block.
    """


@hookspec
def hftagg_pipeline_stopping(pipeline: Pipeline, summary: dict[str, Any]) -> None:
    """The pipeline has drained and is about to close its stages.

    Called once, after sources stopped and in-flight batches were processed. ``summary`` is the
    per-stage totals that ``hftagg run`` prints (records, batches, drops, elapsed seconds).
    """


# -------------------------------------------------------------------------------------------------
# Reload: called when a config or plugin change is applied to, or rejected by, a running pipeline.
# -------------------------------------------------------------------------------------------------


@hookspec
def hftagg_config_changed(
    pipeline: Pipeline, source: str, accepted: bool, changes: list[str], problems: list[str]
) -> None:
    """A change to the running configuration was applied or rejected.

    Called once per change, after it took effect (``accepted=True``, ``changes`` lists what
    changed, e.g. ``"ema: window 20 -> 30 (live)"``) or after it was refused (``accepted=False``,
    ``problems`` holds one line per problem and the pipeline kept its previous config).
    ``source`` names where it came from: the config file path, ``consul`` or ``plugin <name>``.
    Called from the reload thread; do not block.
    """
