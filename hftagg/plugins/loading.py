"""Importing plugin code so that no plugin can take the process (or the file watcher) down.

Every entry point and plugin file is imported in its own daemon thread, and the caller waits
at most ``HFTAGG_PLUGIN_IMPORT_TIMEOUT_SECS`` seconds (default 30) for it:

- anything the import raises -- ``Exception``, ``SystemExit`` from ``sys.exit()``, a stray
  ``KeyboardInterrupt`` or any other ``BaseException`` -- is caught in that thread and becomes the
  plugin's error (its traceback plus one line saying what to fix); the caller never sees it;
- an import still running at the deadline is reported and skipped. A Python import cannot be
  interrupted from outside, so its thread is left behind (a daemon: it never delays exit), and
  the host remembers the file's signature (size and modification time of every ``.py`` in it):
  that file is not imported again until it changes, so a hung import costs one timeout, not one
  per reload and one leaked thread each time. If the abandoned import finishes later, its module
  is discarded: nothing of it is registered.

A note after ``SLOW_IMPORT_NOTE_SECS`` says which plugin is still importing, so a slow start is
never silent. Imports run outside the main thread, so a plugin cannot install signal handlers
at import time (do it in a lifecycle hook instead).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from hftagg.errors import PluginError

__all__ = [
    "FILE_MODULE_PREFIX",
    "IMPORT_TIMEOUT_ENV",
    "Imported",
    "file_signature",
    "import_here",
    "import_plugin_file",
    "import_timeout_secs",
    "run_timeboxed",
]

log = logging.getLogger("hftagg.plugins")

FILE_MODULE_PREFIX = "hftagg_plugins."
IMPORT_TIMEOUT_ENV = "HFTAGG_PLUGIN_IMPORT_TIMEOUT_SECS"
DEFAULT_IMPORT_TIMEOUT_SECS = 30.0
SLOW_IMPORT_NOTE_SECS = 5.0


def import_timeout_secs(environ: Mapping[str, str] | None = None) -> float:
    """Seconds one plugin import may take: ``HFTAGG_PLUGIN_IMPORT_TIMEOUT_SECS`` or 30."""
    environ = os.environ if environ is None else environ
    raw = environ.get(IMPORT_TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_IMPORT_TIMEOUT_SECS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise PluginError(
            f"{IMPORT_TIMEOUT_ENV}={raw!r}: expected a positive number of seconds, e.g. 30"
        )
    return value


@dataclass
class Imported:
    """The outcome of one time-boxed import: a module, or an error text (never both)."""

    module: ModuleType | None
    error: str | None = None
    timed_out: bool = False


def _explain(exc: BaseException, what: str) -> str:
    """One closing line for errors that are not ordinary exceptions."""
    if isinstance(exc, SystemExit):
        return (
            f"PluginError: {what} called sys.exit({exc.code!r}) while being imported; a plugin "
            f"must raise an exception instead of exiting (it was skipped, the rest run on)"
        )
    if not isinstance(exc, Exception):
        return (
            f"PluginError: {what} raised {type(exc).__name__} while being imported; "
            f"raise an Exception subclass instead (it was skipped, the rest run on)"
        )
    return ""


def _failure(exc: BaseException, what: str) -> str:
    text = traceback.format_exc()
    extra = _explain(exc, what)
    return f"{text}{extra}\n" if extra else text


def _as_imported(module: object, what: str) -> Imported:
    if not isinstance(module, ModuleType):
        return Imported(None, f"PluginError: {what} loaded {module!r}, which is not a module\n")
    return Imported(module)


def import_here(load: Callable[[], ModuleType], what: str) -> Imported:
    """Run ``load()`` in this thread (built-ins); anything it raises but Ctrl-C is an error."""
    try:
        module = load()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001
        return Imported(None, _failure(exc, what))
    return _as_imported(module, what)


def run_timeboxed(load: Callable[[], ModuleType], what: str, timeout_secs: float) -> Imported:
    """Run ``load()`` in a daemon thread; wait at most ``timeout_secs``; never raises.

    ``what`` names the plugin in messages, e.g. ``plugin 'mid' (/app/plugins/mid.py)``.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["module"] = load()
        except BaseException as exc:  # noqa: BLE001 - a plugin must not end this thread
            box["error"] = _failure(exc, what)

    thread = threading.Thread(target=target, name=f"hftagg-import {what}", daemon=True)
    thread.start()
    thread.join(min(SLOW_IMPORT_NOTE_SECS, timeout_secs))
    if thread.is_alive() and timeout_secs > SLOW_IMPORT_NOTE_SECS:
        log.warning(
            "%s: still importing after %.0f s (gives up at %.0f s; %s sets the limit)",
            what,
            SLOW_IMPORT_NOTE_SECS,
            timeout_secs,
            IMPORT_TIMEOUT_ENV,
        )
        thread.join(timeout_secs - SLOW_IMPORT_NOTE_SECS)
    if thread.is_alive():
        return Imported(
            None,
            f"PluginError: {what} did not finish importing within {timeout_secs:g} s and was "
            f"skipped; it is not imported again until the file changes (a Python import cannot "
            f"be interrupted: look for a blocking call or an endless loop at module level, or "
            f"raise {IMPORT_TIMEOUT_ENV} if it is only slow)\n",
            timed_out=True,
        )
    if "error" in box:
        return Imported(None, str(box["error"]))
    return _as_imported(box.get("module"), what)


def file_signature(path: Path) -> tuple:
    """What identifies one version of a plugin file or package: size and mtime of each ``.py``."""
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    out = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            continue
        out.append(
            (str(file.relative_to(path)) if path.is_dir() else "", st.st_size, st.st_mtime_ns)
        )
    return tuple(out)


def import_plugin_file(path: Path) -> ModuleType:
    """Import a plugin file or package under a private module name (re-import replaces it).

    A package's submodules from an earlier import are dropped first, so a reload sees their
    new code too. Call it through :func:`run_timeboxed`.
    """
    modname = FILE_MODULE_PREFIX + path.stem
    target = path / "__init__.py" if path.is_dir() else path
    spec = importlib.util.spec_from_file_location(
        modname, target, submodule_search_locations=[str(path)] if path.is_dir() else None
    )
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin file {path}: not a .py file or a package")
    for name in [n for n in sys.modules if n.startswith(modname + ".")]:
        sys.modules.pop(name, None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if sys.modules.get(modname) is module:  # a newer import may have replaced it meanwhile
            sys.modules.pop(modname, None)
        raise
    return module
