"""Live change: config edits, Consul updates and plugin files, applied to a running pipeline.

Every change goes one way: read all config layers -> validate the whole config -> diff against
what runs -> apply at a batch boundary, all or nothing (:mod:`hftagg.runtime.apply`). An invalid
change is rejected with one log line per problem (file, key, value, what is expected) and the
pipeline keeps its current config untouched. Every applied or rejected change is logged once,
counted, kept in ``history``, and announced through the ``hftagg_config_changed`` hook.

A config file is read only once it has settled (size, mtime and inode unchanged for
``settle_secs``), so an editor that truncates the file and writes it a moment later is not read
half-way. A file with no settings at all, or a change that removes every data source or every
``[stages.*]`` stage, is refused unless ``runtime.allow_remove_all = true``: that is what an
editor part-way through a save looks like, and applying it would tear the pipeline down. A file
that cannot be read (not UTF-8, binary, nested too deeply, a directory) is a rejection like any
other: logged with the file, what was found and the fix, counted, and announced.

Plugin files: a new or changed file in a plugin folder is (re-)imported; if it imports and
registers cleanly, the config is re-applied, so stages of a reloaded type are replaced with their
state carried over; if not, it is reported and the old version keeps running. A deleted file
unregisters its plugin; stages still using it are reported and keep running the old code until
the config stops using them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftagg.config.watch import FileWatcher, fingerprint, wait_until_stable
from hftagg.errors import MISSING, ConfigError, Problem
from hftagg.plugins.manager import PluginHost, plugin_files
from hftagg.runtime.apply import Applied, ApplyError, apply_changes
from hftagg.runtime.assemble import Assembled, assemble
from hftagg.runtime.diff import (
    Change,
    plan_changes,
    removal_problems,
    runtime_problems,
    section_problems,
)
from hftagg.runtime.pipeline import Pipeline

__all__ = ["ReloadEvent", "Reloader"]

log = logging.getLogger("hftagg.reload")

SETTLE_SECS = 0.05  # a save in progress: the file must stay unchanged this long before a read
SETTLE_TIMEOUT_SECS = 2.0
BUSY_ATTEMPTS = 3  # a change a busy thread could not take is applied on a later attempt


@dataclass
class ReloadEvent:
    source: str
    accepted: bool
    at: float
    changes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    pause_secs: float = 0.0


class Reloader:
    """Keeps a running pipeline in step with its config file, Consul layer and plugin folders."""

    def __init__(
        self,
        pipeline: Pipeline,
        host: PluginHost,
        config_path: Path | None,
        *,
        plugin_dirs: list[Path] = (),
        environ: Mapping[str, str] | None = None,
        on_event: Callable[[ReloadEvent], None] | None = None,
        settle_secs: float = SETTLE_SECS,
    ) -> None:
        self.pipeline = pipeline
        self.host = host
        self.config_path = Path(config_path).resolve() if config_path else None
        self.plugin_dirs = [Path(d).resolve() for d in plugin_dirs]
        self.environ = environ
        self.consul_layer: dict[str, Any] | None = None
        #: the latest layer of each config source, by name (see hftagg.config.sources)
        self.remote_layers: dict[str, dict[str, Any]] = {}
        self.on_event = on_event
        self.settle_secs = settle_secs
        self._fingerprint = fingerprint(self.config_path) if self.config_path else None
        self.applied = 0
        self.rejected = 0
        self.history: list[ReloadEvent] = []
        # one change at a time: plugin loads and config applies alike (a plugin change holds it
        # from the import through the re-apply, so no config change sees half a plugin)
        self._lock = threading.RLock()
        self._watcher: FileWatcher | None = None

    # -- the one path every change takes ------------------------------------------------------

    def reload(self, source: str | None = None) -> ReloadEvent:
        """Re-read every layer, validate, diff and apply; returns what happened."""
        source = source or str(self.config_path or "(defaults)")
        with self._lock:
            try:
                applied = self._apply_when_parked(source)
            except ConfigError as exc:
                return self._record(
                    ReloadEvent(source, False, time.time(), problems=[str(p) for p in exc.problems])
                )
            except ApplyError as exc:
                return self._record(ReloadEvent(source, False, time.time(), problems=[str(exc)]))
            except Exception as exc:  # a bug, not the config: still a rejection, never a crash
                log.exception("%s: validating the change failed unexpectedly", source)
                problem = Problem(
                    "(change)",
                    MISSING,
                    f"could not be validated ({type(exc).__name__}: {exc}); the pipeline keeps "
                    f"its current config. Please report this with the file that caused it",
                    source,
                )
                return self._record(
                    ReloadEvent(source, False, time.time(), problems=[str(problem)])
                )
            event = ReloadEvent(
                source,
                True,
                time.time(),
                changes=applied.changes + applied.notes,
                offsets=applied.offsets,
                pause_secs=applied.pause_secs,
            )
            return self._record(event)

    def _apply_when_parked(self, source: str) -> Applied:
        """Apply; a change refused only because a thread was inside a batch (a first batch
        compiling under load, a stage that is slow once) is tried again a few times first."""
        for attempt in range(1, BUSY_ATTEMPTS + 1):
            try:
                return self._apply()
            except ApplyError as exc:
                if not exc.retryable or attempt == BUSY_ATTEMPTS:
                    raise
                log.warning("%s: %s; trying again (%d of %d)", source, exc, attempt, BUSY_ATTEMPTS)
        raise AssertionError("unreachable")

    def plan(self) -> tuple[Assembled, list[Change]]:
        """Read and validate every layer and diff it against what runs, changing nothing.

        Raises ConfigError with every problem (restart-only settings that changed included)."""
        where = str(self.config_path or "(defaults)")
        if self.config_path is not None and not os.path.lexists(self.config_path):
            raise ConfigError([_removed_file_problem(where)])
        assembled = assemble(
            self.config_path,
            self.environ,
            host=self.host,
            consul=self.consul_layer,
            remote=list(self.remote_layers.items()),
        )  # ConfigError with every problem
        spec, graph = assembled.spec, assembled.graph
        if assembled.file_layer == {} and not spec.runtime.allow_remove_all:
            raise ConfigError([_empty_file_problem(where)])
        problems: list[Problem] = runtime_problems(self.pipeline.runtime, spec.runtime, where)
        tel = self.pipeline.telemetry
        if tel is not None:
            problems += runtime_problems(tel.settings, spec.telemetry, where, "telemetry")
        running_raw = getattr(self.pipeline, "config_raw", None)
        if running_raw is not None:
            problems += section_problems(self.host, running_raw, spec.raw, where)
        if not spec.runtime.allow_remove_all:
            problems += removal_problems(self.pipeline.graph, graph, where)
        if problems:
            raise ConfigError(problems)
        return assembled, plan_changes(self.pipeline.graph, graph)

    def _apply(self) -> Applied:
        assembled, changes = self.plan()
        spec, graph = assembled.spec, assembled.graph
        tel = self.pipeline.telemetry
        applied = apply_changes(self.pipeline, graph, changes)
        self.pipeline.runtime = spec.runtime
        self.pipeline.config_raw = spec.raw
        if tel is not None and tel.settings != spec.telemetry:
            tel.update(spec.telemetry)
            applied.changes.append(f"telemetry: sample_ratio -> {spec.telemetry.sample_ratio}")
        return applied

    def _record(self, event: ReloadEvent) -> ReloadEvent:
        self.history.append(event)
        if event.accepted:
            if event.changes:
                self.applied += 1
                log.info("%s: applied: %s", event.source, "; ".join(event.changes))
        else:
            self.rejected += 1
            log.warning(
                "%s: change rejected, still running the previous config (%d problem%s)",
                event.source,
                len(event.problems),
                "" if len(event.problems) == 1 else "s",
            )
            for problem in event.problems:
                log.warning("  %s", problem)
        if event.changes or not event.accepted:
            if self.host is not None:
                self.host.pm.hook.hftagg_config_changed(
                    pipeline=self.pipeline,
                    source=event.source,
                    accepted=event.accepted,
                    changes=event.changes,
                    problems=event.problems,
                )
            if self.on_event is not None:
                self.on_event(event)
        return event

    # -- config sources (Consul, ...) ----------------------------------------------------------

    def set_remote_layer(self, name: str, layer: dict[str, Any]) -> ReloadEvent:
        """Config source ``name`` has a new layer: apply it through the same path as a file edit.

        Holds the reload lock while it swaps the layer in, so a concurrent reload never sees it
        half-set; a rejected layer stays the source's latest (as a rejected file edit stays on
        disk) and the pipeline keeps its previous config."""
        with self._lock:
            self.remote_layers[name] = dict(layer)
            return self.reload(name)

    def set_consul_layer(self, layer: dict[str, Any]) -> ReloadEvent:
        """A new Consul KV layer arrived: apply it through the same path as a file edit."""
        self.consul_layer = layer
        return self.reload("consul")

    # -- plugin files --------------------------------------------------------------------------

    def plugin_changed(self, path: Path) -> ReloadEvent:
        """A plugin file or package appeared, changed or disappeared."""
        with self._lock:
            return self._plugin_changed(path)

    def _plugin_changed(self, path: Path) -> ReloadEvent:
        name = path.stem
        source = f"plugin {name}"
        if not path.exists():
            provided = self.host.remove_file(path)
            users = [n.id for n in self.pipeline.graph.nodes if n.stage.type_name in provided]
            event = self.reload(source)
            if users:
                log.warning(
                    "%s: file removed; stage(s) %s still use it and keep running the "
                    "code already loaded until the config stops using them",
                    source,
                    ", ".join(users),
                )
            return event
        held = self.host.record(name)
        running = held is not None and held.error is None and held.location == str(path)
        record = self.host.load_file(path)
        if record.error:
            outcome = "the old one keeps running" if running else "it was skipped"
            problem = f"{path}: new version failed to load, {outcome}: {record.last_error_line}"
            return self._record(ReloadEvent(source, False, time.time(), problems=[problem]))
        return self.reload(source)

    # -- watching ------------------------------------------------------------------------------

    def _on_files(self, paths: set[Path]) -> None:
        config_changed = self.config_path is not None and self.config_path in paths
        plugins: set[Path] = set()
        for path in paths:
            for folder in self.plugin_dirs:
                if folder in path.parents:
                    top = folder / path.relative_to(folder).parts[0]
                    if top.suffix == ".py" or top.is_dir() or not top.exists():
                        if not top.name.startswith(("_", ".")):
                            plugins.add(top)
        for top in sorted(plugins):
            if top.suffix == ".py" or top in plugin_files(top.parent) or not top.exists():
                self.plugin_changed(top)
        if config_changed:
            if not wait_until_stable(self.config_path, self.settle_secs, SETTLE_TIMEOUT_SECS):
                log.warning(
                    "%s: still changing after %.1fs; reading it as it is now",
                    self.config_path,
                    SETTLE_TIMEOUT_SECS,
                )
            self.reload()

    def start(self) -> None:
        files = [self.config_path] if self.config_path else []
        self._watcher = FileWatcher(
            self._on_files, files=files, folders=self.plugin_dirs, on_ready=self._catch_up
        )
        self._watcher.start()

    def _catch_up(self) -> None:
        """The watcher has started: a config edit made before then (while the pipeline was
        starting on a busy machine) is handled now instead of waiting for the next one."""
        if self.config_path is not None and fingerprint(self.config_path) != self._fingerprint:
            log.info("%s: changed while starting; reading it now", self.config_path)
            self._on_files({self.config_path})

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()


def _empty_file_problem(where: str) -> Problem:
    return Problem(
        "(file)",
        MISSING,
        "has no settings (empty, or only comments): refused, the pipeline keeps its current "
        "config (an editor or a '>' redirection part-way through writing the file looks like "
        "this). To run on built-in defaults, restart hftagg, or write just "
        "'[runtime]' and 'allow_remove_all = true' to the file to apply them live",
        where,
    )


def _removed_file_problem(where: str) -> Problem:
    return Problem(
        "(file)",
        MISSING,
        "was removed or renamed: the pipeline keeps its current config, and applies the file "
        "again when it is back (an editor that saves by deleting and re-creating looks so)",
        where,
    )
