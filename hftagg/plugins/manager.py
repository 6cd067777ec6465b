"""Plugin discovery and the registries plugins fill.

Discovery, in tiers: built-ins, installed distributions' entry points (group ``hftagg``), then the
``plugins/`` directory and any configured plugin paths (``*.py`` files and packages). Nothing a
plugin does at import or registration stops the others: it is recorded with its traceback and
skipped (see :mod:`hftagg.plugins.loading` for ``sys.exit()`` and imports that hang).

Registration goes through pluggy: each plugin's registration hooks are called through the plugin
manager (so ``HFTAGG_TRACE_PLUGINS=1`` logs every call, with the plugin's name on the
``register`` argument) and what they register is checked, then committed all at once, or not at
all.

Duplicate names (stage types, transports, codec families, schemas with the same name and version
but other fields, warm-ups) never depend on file names or load order:

- within a tier, every plugin that claims a contested name fails, with an error naming all of
  them; neither gets the name, so a config that uses it fails to validate and says why;
- across tiers, the earlier tier keeps the name (a built-in's stage type cannot be replaced by a
  file in ``plugins/``) and the newcomer fails;
- while running, a new or changed plugin file that claims a name another plugin holds fails and
  the running one keeps it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from hftagg import hookspecs
from hftagg.builtins import builtin_plugin_modules
from hftagg.errors import PluginError
from hftagg.plugins.kinds import KINDS, Kind, Registrar
from hftagg.plugins.loading import (
    FILE_MODULE_PREFIX,
    file_signature,
    import_here,
    import_plugin_file,
    import_timeout_secs,
    run_timeboxed,
)
from hftagg.records.schema import SchemaRegistry
from hftagg.stages.base import Stage

__all__ = ["PluginHost", "PluginRecord", "import_plugin_file", "load_plugins", "plugin_files"]

log = logging.getLogger("hftagg.plugins")

ENTRY_POINT_GROUP = "hftagg"
TRACE_ENV = "HFTAGG_TRACE_PLUGINS"


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

    @property
    def label(self) -> str:
        return f"plugin {self.name!r} ({self.location})"

    @property
    def last_error_line(self) -> str:
        return self.error.strip().splitlines()[-1] if self.error else ""


@dataclass
class _Candidate:
    """A plugin about to be loaded: its record and how to import it."""

    record: PluginRecord
    load: Callable[[], ModuleType]
    timeboxed: bool = True
    path: Path | None = None
    module: ModuleType | None = None
    found: dict[str, list[Any]] = field(default_factory=dict)


def _fail(cand: _Candidate, message: str) -> None:
    cand.record.error = (cand.record.error or "") + message.rstrip("\n") + "\n"


class PluginHost:
    """The pluggy manager plus one registry per kind of thing plugins register."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self.schemas = SchemaRegistry()
        self._tables: dict[str, dict[str, Any]] = {k.attr: {} for k in KINDS[1:]}
        self._origins: dict[str, dict[str, str]] = {k.attr: {} for k in KINDS[1:]}
        #: label + name -> the plugins that all claimed it (none of them got it)
        self.contested: dict[tuple[str, str], list[str]] = {}
        #: plugin file -> signature of a version whose import hung (not imported again)
        self.hung: dict[Path, tuple] = {}
        #: held while plugins load or unload; a reload holds it across its whole change
        self.lock = threading.RLock()
        self.import_timeout_secs = import_timeout_secs()
        if os.environ.get(TRACE_ENV) == "1":
            self.pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
            self.pm.enable_tracing()

    # -- the registries ------------------------------------------------------------------------

    def table(self, attr: str) -> dict[str, Any]:
        return self._tables[attr]

    @property
    def stage_types(self) -> dict[str, type[Stage]]:
        return self._tables["stage_types"]

    @property
    def stage_origin(self) -> dict[str, str]:
        return self._origins["stage_types"]

    @property
    def transports(self) -> dict[str, Any]:
        return self._tables["transports"]

    @property
    def transport_origin(self) -> dict[str, str]:
        return self._origins["transports"]

    @property
    def codecs(self) -> dict[str, Any]:
        return self._tables["codecs"]

    @property
    def codec_origin(self) -> dict[str, str]:
        return self._origins["codecs"]

    @property
    def config_sections(self) -> dict[str, Any]:
        """Top-level config tables owned by plugins: name -> ConfigSection."""
        return self._tables["config_sections"]

    @property
    def config_sources(self) -> dict[str, Any]:
        """Kinds of config layer plugins provide (Consul, ...): name -> ConfigSourceType."""
        return self._tables["config_sources"]

    @property
    def kernel_warmups(self) -> dict[str, Any]:
        return self._tables["kernel_warmups"]

    def table_origin(self, attr: str, key: str) -> str | None:
        """The plugin that registered ``key`` in table ``attr`` (``"stage_types"``, ...)."""
        return self._origins[attr].get(key)

    def owner(self, kind: Kind, key: str) -> str | None:
        if kind.attr == "schemas":
            return self.schemas.origin.get(key)
        return self._origins[kind.attr].get(key)

    def record(self, name: str) -> PluginRecord | None:
        return next((r for r in self.records if r.name == name), None)

    def _label(self, name: str) -> str:
        record = self.record(name)
        return record.label if record is not None else f"plugin {name!r}"

    # -- loading a tier ------------------------------------------------------------------------

    def load_tier(self, candidates: list[_Candidate]) -> None:
        """Load plugins of one discovery tier; duplicates inside it fail every claimant."""
        with self.lock:
            self._reject_duplicate_names(candidates)
            for cand in candidates:
                if cand.record.error is None:
                    self._import(cand)
                if cand.record.error is None:
                    self._register(cand)
            alive = [c for c in candidates if c.record.error is None]
            self._reject_conflicts(alive, within=True)
            for cand in candidates:
                if cand.record.error is None:
                    self._commit(cand)
                elif cand.module is not None and self.pm.is_registered(cand.module):
                    self.pm.unregister(cand.module)
                self.records.append(cand.record)

    def _reject_duplicate_names(self, candidates: list[_Candidate]) -> None:
        by_name: dict[str, list[_Candidate]] = {}
        for cand in candidates:
            by_name.setdefault(cand.record.name, []).append(cand)
        for name, group in by_name.items():
            held = self.record(name)
            if held is not None and held.error is None:
                for cand in group:
                    _fail(
                        cand,
                        f"PluginError: plugin name {name!r} of {cand.record.location} is already "
                        f"used by {held.label}; rename the file or the entry point",
                    )
            elif len(group) > 1:
                where = " and ".join(c.record.location for c in group)
                for cand in group:
                    _fail(
                        cand,
                        f"PluginError: plugin name {name!r} is used by {where}; none of them is "
                        f"loaded -- rename all but one",
                    )

    def _import(self, cand: _Candidate) -> None:
        what = cand.record.label
        if cand.path is not None and self.hung.get(cand.path) == file_signature(cand.path):
            _fail(
                cand,
                f"PluginError: {what} was not imported: this version hung at import before; "
                f"it is retried when the file changes",
            )
            return
        if cand.timeboxed:
            result = run_timeboxed(cand.load, what, self.import_timeout_secs)
        else:  # built-ins: imported in this thread (trusted not to hang), still never fatal
            result = import_here(cand.load, what)
        if result.timed_out and cand.path is not None:
            self.hung[cand.path] = file_signature(cand.path)
        if result.module is None:
            _fail(cand, result.error or f"PluginError: {what} did not load")
            return
        if cand.path is not None:
            self.hung.pop(cand.path, None)
        cand.module = result.module

    def _register(self, cand: _Candidate) -> None:
        """Register the module with pluggy and call its registration hooks through pluggy."""
        name = cand.record.name
        try:
            self.pm.register(cand.module, name=name)
        except Exception:  # a bad hookimpl signature, an unknown hftagg_ hook
            _fail(cand, traceback.format_exc())
            return
        others = [p for p in self.pm.get_plugins() if p is not cand.module]
        try:
            for kind in KINDS:
                hook = getattr(self.pm.hook, kind.hook)
                if not any(i.plugin is cand.module for i in hook.get_hookimpls()):
                    continue
                register = Registrar(kind, name)
                self.pm.subset_hook_caller(kind.hook, remove_plugins=others)(register=register)
                cand.found[kind.attr] = register.items
                _check_twice(kind, register.items, cand.record.label)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - sys.exit() in a hook fails the plugin only
            text = traceback.format_exc()
            if isinstance(exc, SystemExit):
                text += (
                    f"PluginError: {cand.record.label} called sys.exit({exc.code!r}) in a "
                    f"registration hook; raise an exception instead\n"
                )
            _fail(cand, text)
            self.pm.unregister(cand.module)

    def _reject_conflicts(self, cands: list[_Candidate], *, within: bool) -> None:
        """Fail plugins whose names clash with registered ones, or (``within``) each other's."""
        claims: dict[tuple[str, str], list[tuple[_Candidate, Any]]] = {}
        for cand in cands:
            for kind in KINDS:
                for item in cand.found.get(kind.attr, []):
                    key = kind.key(item)
                    claims.setdefault((kind.attr, key), []).append((cand, item))
                    owner = self.owner(kind, key)
                    if owner is None or owner == cand.record.name:
                        continue
                    if kind.attr == "schemas" and self.schemas.get(key).dtype == item.dtype:
                        continue  # the identical schema twice is fine
                    _fail(
                        cand,
                        f"PluginError: {cand.record.label} registers {kind.label} {key!r}, "
                        f"already registered by {self._label(owner)}; rename one of them",
                    )
        if not within:
            return
        kinds = {k.attr: k for k in KINDS}
        for (attr, key), group in claims.items():
            plugins = {id(c): c for c, _ in group}
            if len(plugins) < 2:
                continue
            if attr == "schemas" and len({item.dtype for _, item in group}) == 1:
                continue
            names = [c.record.name for c in plugins.values()]
            where = " and ".join(c.record.label for c in plugins.values())
            self.contested[(kinds[attr].label, key)] = names
            for cand in plugins.values():
                _fail(
                    cand,
                    f"PluginError: {kinds[attr].label} {key!r} is registered by {where}; none "
                    f"of them is loaded (which one wins must not depend on file names) -- "
                    f"rename or remove all but one",
                )

    def _commit(self, cand: _Candidate) -> None:
        name = cand.record.name
        provides: dict[str, list[str]] = {}
        for kind in KINDS:
            items = cand.found.get(kind.attr, [])
            for item in items:
                key = kind.key(item)
                if kind.attr == "schemas":
                    self.schemas.register(item, origin=name)
                else:
                    self._tables[kind.attr][key] = item
                    self._origins[kind.attr][key] = name
                self.contested.pop((kind.label, key), None)
            if items:
                provides[kind.attr] = [
                    kind.key(i) if kind.attr == "schemas" else kind.describe(i) for i in items
                ]
        cand.record.provides = provides

    # -- live: one plugin file at a time ------------------------------------------------------

    def _forget(self, name: str) -> ModuleType | None:
        """Unregister plugin ``name`` and everything it registered; return its module."""
        module = self.pm.get_plugin(name)
        if module is not None:
            self.pm.unregister(name=name)
        for attr, origin in self._origins.items():
            for key in [k for k, owner in origin.items() if owner == name]:
                self._tables[attr].pop(key, None)
                origin.pop(key, None)
        keep = {}
        for record in self.records:
            if record.name != name and record.error is None:
                for key in record.provides.get("schemas", []):
                    keep.setdefault(key, record.name)
        self.schemas.forget(name, keep)
        self.records = [r for r in self.records if r.name != name]
        return module

    def _snapshot(self) -> tuple:
        return (
            {a: dict(t) for a, t in self._tables.items()},
            {a: dict(o) for a, o in self._origins.items()},
            self.schemas.state(),
            list(self.records),
            dict(self.contested),
        )

    def _rollback(self, saved: tuple, name: str, module: ModuleType | None) -> None:
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        tables, origins, schemas, self.records, self.contested = saved
        for attr in self._tables:  # in place: others hold references to these dicts
            self._tables[attr].clear()
            self._tables[attr].update(tables[attr])
            self._origins[attr].clear()
            self._origins[attr].update(origins[attr])
        self.schemas.restore(schemas)
        if module is not None:
            self.pm.register(module, name=name)

    def load_file(self, path: Path) -> PluginRecord:
        """Import (or re-import) a plugin file; if the new version fails, the old one stays.

        Returns the record of the attempt: ``error`` set means nothing changed.
        """
        path = Path(path).resolve()
        name = path.stem
        with self.lock:
            cand = _file_candidate(path)
            held = self.record(name)
            if held is not None and held.origin == "file" and held.location != str(path):
                _fail(
                    cand,
                    f"PluginError: plugin name {name!r} of {path} is already used by "
                    f"{held.label}; rename one of the files",
                )
                return cand.record
            if held is not None and held.origin != "file":
                _fail(
                    cand,
                    f"PluginError: plugin name {name!r} of {path} is already used by "
                    f"{held.label}; rename the file",
                )
                return cand.record
            self._import(cand)
            if cand.record.error:
                return cand.record
            saved = self._snapshot()
            old_module = self._forget(name)
            self._register(cand)
            if cand.record.error is None:
                self._reject_conflicts([cand], within=False)
            if cand.record.error is None:
                self._commit(cand)
                self.records.append(cand.record)
                return cand.record
            self._rollback(saved, name, old_module)
            return cand.record

    def remove_file(self, path: Path) -> list[str]:
        """Unregister the plugin from a deleted file; returns the stage types it had provided."""
        path = Path(path).resolve()
        name = path.stem
        with self.lock:
            self.hung.pop(path, None)
            held = self.record(name)
            if held is None or held.location != str(path):
                return []  # never loaded from there (it failed, or another file holds the name)
            provided = [t for t, owner in self.stage_origin.items() if owner == name]
            self._forget(name)
            sys.modules.pop(FILE_MODULE_PREFIX + name, None)
            return provided

    # -- queries ---------------------------------------------------------------------------

    def stage_type(self, name: str) -> type[Stage]:
        try:
            return self.stage_types[name]
        except KeyError:
            pass
        contested = self.contested.get(("stage type", name))
        if contested:
            raise PluginError(self.missing_stage_type_note(name).lstrip("; "))
        known = ", ".join(sorted(self.stage_types))
        note = self.missing_stage_type_note(name)
        raise PluginError(f"unknown stage type {name!r}; known stage types: {known}{note}")

    def missing_stage_type_note(self, name: str) -> str:
        """Why stage type ``name`` may be missing: plugins that claimed it, or that failed."""
        contested = self.contested.get(("stage type", name))
        if contested:
            who = " and ".join(self._label(n) for n in contested)
            return (
                f"; stage type {name!r} is registered by {who}, so none of them was loaded; "
                f"rename or remove all but one"
            )
        failed = self.failed
        if not failed:
            return ""
        listed = ", ".join(f"{r.label}: {r.last_error_line}" for r in failed)
        return f"; {len(failed)} plugin(s) failed to load and may provide it: {listed}"

    def plugin_of_stage(self, type_name: str) -> str:
        """``plugin 'x' (where)`` for the plugin that registered stage type ``type_name``."""
        owner = self.stage_origin.get(type_name)
        return self._label(owner) if owner else f"stage type {type_name!r} (no plugin)"

    @property
    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records if r.error]


def _check_twice(kind: Kind, items: list[Any], label: str) -> None:
    seen: dict[str, Any] = {}
    for item in items:
        key = kind.key(item)
        other = seen.setdefault(key, item)
        same = other is item or (kind.attr == "schemas" and other.dtype == item.dtype)
        if not same:
            raise PluginError(
                f"{label} registers two different {kind.label}s named {key!r}; rename one"
            )


def _file_candidate(path: Path) -> _Candidate:
    record = PluginRecord(path.stem, "file", str(path))
    return _Candidate(record, lambda: import_plugin_file(path), path=path)


def _builtin_candidates() -> list[_Candidate]:
    return [
        _Candidate(
            PluginRecord(name, "built-in", name),
            lambda name=name: importlib.import_module(name),
            timeboxed=False,
        )
        for name in builtin_plugin_modules()
    ]


def _entry_point_candidates() -> list[_Candidate]:
    out = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else "?"
        out.append(_Candidate(PluginRecord(ep.name, "entry point", f"{dist}: {ep.value}"), ep.load))
    return out


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


def load_plugins(plugin_dirs: list[Path] | None = None, *, entry_points: bool = True) -> PluginHost:
    """Discover and load every plugin: built-ins, entry points, then each plugin directory."""
    host = PluginHost()
    host.load_tier(_builtin_candidates())
    if entry_points:
        host.load_tier(_entry_point_candidates())
    files = [p for d in plugin_dirs or [] for p in plugin_files(Path(d).resolve())]
    host.load_tier([_file_candidate(p) for p in files])
    return host
