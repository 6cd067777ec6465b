"""Watching files for changes (watchfiles), with a debounce short enough for live edits.

watchfiles' default debounce is 1.6 s; an edit to ``config.toml`` should apply within about
100 ms, so hftagg groups events over ``debounce_ms`` (default 20) checked every ``step_ms``.
Folders are watched rather than files, so editors that save by writing a new file and renaming
it over the old one are seen too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import watchfiles

__all__ = ["FileWatcher"]

log = logging.getLogger("hftagg.watch")


class FileWatcher:
    """Calls ``on_change(paths)`` from a background thread when watched files change.

    ``files``: exact files to report (their folders are watched). ``folders``: report any
    change below them. ``on_change`` receives the set of changed paths (resolved).
    """

    def __init__(
        self,
        on_change: Callable[[set[Path]], None],
        *,
        files: list[Path] = (),
        folders: list[Path] = (),
        debounce_ms: int = 20,
        step_ms: int = 5,
    ) -> None:
        self.files = {Path(f).resolve() for f in files}
        self.folders = [Path(d).resolve() for d in folders if Path(d).is_dir()]
        self.on_change = on_change
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()

    def _wanted(self, _change: watchfiles.Change, path: str) -> bool:
        p = Path(path)
        if p in self.files:
            return True
        if p.suffix in (".pyc", ".swp", ".tmp") or p.name.startswith((".", "#")):
            return False
        return any(folder == p or folder in p.parents for folder in self.folders)

    def _roots(self) -> list[Path]:
        roots = {f.parent for f in self.files} | set(self.folders)
        return sorted(r for r in roots if r.is_dir())

    def _run(self) -> None:
        roots = self._roots()
        if not roots:
            self.ready.set()
            return
        watcher = watchfiles.watch(
            *roots,
            watch_filter=self._wanted,
            debounce=self.debounce_ms,
            step=self.step_ms,
            stop_event=self._stop,
            rust_timeout=200,
            yield_on_timeout=True,
            raise_interrupt=False,
        )
        for changes in watcher:
            self.ready.set()
            if self._stop.is_set():
                return
            if not changes:
                continue
            try:
                self.on_change({Path(p) for _, p in changes})
            except Exception:
                log.exception("handling a change to %s failed", sorted(p for _, p in changes))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hftagg-watch", daemon=True)
        self._thread.start()
        self.ready.wait(2.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
