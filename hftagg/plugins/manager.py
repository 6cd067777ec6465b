"""Plugin discovery and the registries plugins fill.

Discovery order: built-ins, installed distributions' entry points (group ``hftagg``), then the
``plugins/`` directory and any configured plugin paths (``*.py`` files and packages). A plugin
that fails to import or to register is recorded with its traceback and skipped; the rest load.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from hftagg import hookspecs
from hftagg.builtins import builtin_plugin_modules
from hftagg.errors import PluginError
from hftagg.records.schema import Schema, SchemaRegistry
from hftagg.stages.base import KINDS, Stage

__all__ = ["PluginHost", "PluginRecord", "load_plugins"]

ENTRY_POINT_GROUP = "hftagg"
FILE_MODULE_PREFIX = "hftagg_plugins."


@dataclass
class PluginRecord:
    """One plugin: its name, where it came from, what it provides, or why it failed."""

    name: str
    origin: str  # "built-in" | "entry point" | "file"
    location: str
    provides: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "origin": self.origin,
            "location": self.location,
            "provides": self.provides,
            "error": self.error,
        }


class PluginHost:
    """The pluggy manager plus the registries the registration hooks fill."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self.schemas = SchemaRegistry()
        self.stage_types: dict[str, type[Stage]] = {}
        self.stage_origin: dict[str, str] = {}
        self.transports: dict[str, Any] = {}
        self.transport_origin: dict[str, str] = {}
        self.codecs: dict[str, Any] = {}
        self.codec_origin: dict[str, str] = {}
        if os.environ.get("HFTAGG_TRACE_PLUGINS") == "1":
            self.pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
            self.pm.enable_tracing()

    # -- loading -----------------------------------------------------------------------------

    def add(self, module: Any, name: str, origin: str, location: str) -> PluginRecord:
        """Register ``module`` as a plugin and run its registration hooks; never raises."""
        record = PluginRecord(name=name, origin=origin, location=location)
        self.records.append(record)
        try:
            self.pm.register(module, name=name)
        except Exception:  # a bad hookimpl signature, a duplicate name
            record.error = traceback.format_exc()
            return record
        try:
            self._run_registration(module, record)
        except Exception:
            self.pm.unregister(module)
            record.error = traceback.format_exc()
        return record

    def _run_registration(self, module: Any, record: PluginRecord) -> None:
        """Call this plugin's registration hooks, attributing what they register to it.

        Everything is checked first and committed only if the whole plugin is valid, so a
        plugin that fails halfway leaves nothing behind.
        """
        schemas: list[Schema] = []
        stages: list[type[Stage]] = []
        transports: list[Any] = []
        codecs: list[Any] = []
        self._call(module, "hftagg_register_schemas", schemas.append)
        self._call(module, "hftagg_register_stage_types", stages.append)
        self._call(module, "hftagg_register_transports", transports.append)
        self._call(module, "hftagg_register_codecs", codecs.append)
        for cls in stages:
            self._check_stage_type(cls, record.name)
        for transport in transports:
            self._check_named(transport, record.name, "transport", self.transport_origin)
        for codec in codecs:
            self._check_named(codec, record.name, "codec family", self.codec_origin)
        for schema in schemas:
            self.schemas.register(schema, origin=record.name)
        for cls in stages:
            self.stage_types[cls.type_name] = cls
            self.stage_origin[cls.type_name] = record.name
        for transport in transports:
            self.transports[transport.name] = transport
            self.transport_origin[transport.name] = record.name
        for codec in codecs:
            self.codecs[codec.name] = codec
            self.codec_origin[codec.name] = record.name
        provides = {
            "schemas": [s.key for s in schemas],
            "stage_types": [f"{c.type_name} ({c.kind})" for c in stages],
            "transports": [t.name for t in transports],
            "codecs": [c.name for c in codecs],
        }
        record.provides = {k: v for k, v in provides.items() if v}

    def _call(self, module: Any, hook_name: str, register: Any) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            if impl.plugin is module:
                kwargs = {"register": register}
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})

    def _check_stage_type(self, cls: Any, plugin: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise PluginError(
                f"plugin {plugin!r} registered {cls!r}, which is not a Stage subclass"
            )
        name = cls.type_name
        if not name or "." in name:
            raise PluginError(
                f"plugin {plugin!r}: stage class {cls.__name__} has type_name {name!r}; "
                f"set a non-empty type_name without dots"
            )
        if cls.kind not in KINDS:
            raise PluginError(
                f"plugin {plugin!r}: stage type {name!r} has kind {cls.kind!r}; use one of {KINDS}"
            )
        owner = self.stage_origin.get(name)
        if owner is not None and owner != plugin:
            raise PluginError(
                f"plugin {plugin!r} registers stage type {name!r}, already registered by "
                f"plugin {owner!r}; rename one of them"
            )

    @staticmethod
    def _check_named(thing: Any, plugin: str, what: str, origin: dict[str, str]) -> None:
        name = getattr(thing, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {what} without a name: {thing!r}")
        owner = origin.get(name)
        if owner is not None and owner != plugin:
            raise PluginError(
                f"plugin {plugin!r} registers {what} {name!r}, already registered by plugin "
                f"{owner!r}; rename one of them"
            )

    # -- hot reload ------------------------------------------------------------------------

    def _forget(self, name: str) -> Any:
        """Unregister plugin ``name`` and what it registered; return its module (or None)."""
        module = self.pm.get_plugin(name)
        if module is not None:
            self.pm.unregister(name=name)
        for registry, origin in (
            (self.stage_types, self.stage_origin),
            (self.transports, self.transport_origin),
            (self.codecs, self.codec_origin),
        ):
            for key in [k for k, owner in origin.items() if owner == name]:
                registry.pop(key, None)
                origin.pop(key, None)
        self.records = [r for r in self.records if r.name != name]
        return module

    def _snapshot(self) -> tuple:
        return (
            dict(self.stage_types),
            dict(self.stage_origin),
            dict(self.transports),
            dict(self.transport_origin),
            dict(self.codecs),
            dict(self.codec_origin),
            list(self.records),
        )

    def _rollback(self, saved: tuple, name: str, module: Any) -> None:
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        (
            self.stage_types,
            self.stage_origin,
            self.transports,
            self.transport_origin,
            self.codecs,
            self.codec_origin,
            self.records,
        ) = saved
        if module is not None:
            self.pm.register(module, name=name)

    def load_file(self, path: Path) -> PluginRecord:
        """Import (or re-import) a plugin file; if the new version fails, the old one stays.

        Returns the record of the attempt: ``error`` set means nothing changed.
        """
        path = Path(path).resolve()
        name = path.stem
        saved = self._snapshot()
        try:
            new_module = import_plugin_file(path)
        except Exception:
            return PluginRecord(name, "file", str(path), error=traceback.format_exc())
        old_module = self._forget(name)
        record = self.add(new_module, name, "file", str(path))
        if record.error:
            self._rollback(saved, name, old_module)
        return record

    def remove_file(self, path: Path) -> list[str]:
        """Unregister the plugin from a deleted file; returns the stage types it had provided."""
        name = Path(path).stem
        provided = [t for t, owner in self.stage_origin.items() if owner == name]
        self._forget(name)
        sys.modules.pop(FILE_MODULE_PREFIX + name, None)
        return provided

    # -- queries ---------------------------------------------------------------------------

    def stage_type(self, name: str) -> type[Stage]:
        try:
            return self.stage_types[name]
        except KeyError:
            known = ", ".join(sorted(self.stage_types))
            raise PluginError(f"unknown stage type {name!r}; known stage types: {known}") from None

    @property
    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records if r.error]


def _load_builtins(host: PluginHost) -> None:
    for modname in builtin_plugin_modules():
        try:
            module = importlib.import_module(modname)
        except Exception:
            record = PluginRecord(modname, "built-in", modname, error=traceback.format_exc())
            host.records.append(record)
            continue
        host.add(module, modname, "built-in", modname)


def _load_entry_points(host: PluginHost) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        location = f"{dist}: {ep.value}"
        try:
            module = ep.load()
        except Exception:
            host.records.append(
                PluginRecord(ep.name, "entry point", location, error=traceback.format_exc())
            )
            continue
        host.add(module, ep.name, "entry point", location)


def plugin_files(directory: Path) -> list[Path]:
    """Plugin candidates in ``directory``: ``*.py`` files and packages, not ``_``-prefixed."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
            found.append(path)
    return found


def import_plugin_file(path: Path) -> ModuleType:
    """Import a plugin file or package under a private module name (re-import replaces it)."""
    modname = FILE_MODULE_PREFIX + path.stem
    target = path / "__init__.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location(
        modname, target, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


def _load_directory(host: PluginHost, directory: Path) -> None:
    for path in plugin_files(directory.resolve()):
        name = path.stem
        try:
            module = import_plugin_file(path)
        except Exception:
            host.records.append(PluginRecord(name, "file", str(path), error=traceback.format_exc()))
            continue
        host.add(module, name, "file", str(path))


def load_plugins(plugin_dirs: list[Path] | None = None, *, entry_points: bool = True) -> PluginHost:
    """Discover and load every plugin: built-ins, entry points, then each plugin directory."""
    host = PluginHost()
    _load_builtins(host)
    if entry_points:
        _load_entry_points(host)
    for directory in plugin_dirs or []:
        _load_directory(host, Path(directory))
    return host
