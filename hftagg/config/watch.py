"""Watching files for changes (watchfiles), with a debounce short enough for live edits.

watchfiles' default debounce is 1.6 s; an edit to ``config.toml`` should apply within about
100 ms, so hftagg groups events over ``debounce_ms`` (default 20) checked every ``step_ms``.
Folders are watched rather than files, so editors that save by writing a new file and renaming
it over the old one are seen too.

Editors that save in place (and shell ``>`` redirection) truncate the file first and write it a
few milliseconds later; :func:`wait_until_stable` waits for such a save to finish (size, mtime
and inode unchanged for a quiet period) before the file is read.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import watchfiles

__all__ = ["FileWatcher", "fingerprint", "wait_until_stable"]

log = logging.getLogger("hftagg.watch")


def fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def wait_until_stable(
    path: Path, quiet_secs: float = 0.05, timeout_secs: float = 2.0, step_secs: float = 0.005
) -> bool:
    """Wait until ``path``'s size, mtime and inode stay unchanged for ``quiet_secs``.

    Returns True once settled, False when it was still changing after ``timeout_secs`` (the
    caller reads it anyway: validation refuses a half-written file that does not parse)."""
    deadline = time.monotonic() + timeout_secs
    last = fingerprint(path)
    stable_since = time.monotonic()
    while True:
        now = time.monotonic()
        if now - stable_since >= quiet_secs:
            return True
        if now >= deadline:
            return False
        time.sleep(step_secs)
        current = fingerprint(path)
        if current != last:
            last, stable_since = current, time.monotonic()


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
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.files = {Path(f).resolve() for f in files}
        self.on_ready = on_ready
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
            if not self.ready.is_set():
                self.ready.set()
                self._call_on_ready()
            if self._stop.is_set():
                return
            if not changes:
                continue
            try:
                self.on_change({Path(p) for _, p in changes})
            except BaseException:  # noqa: BLE001 - SystemExit here would end watching silently
                log.exception("handling a change to %s failed", sorted(p for _, p in changes))

    def _call_on_ready(self) -> None:
        if self.on_ready is None:
            return
        try:
            self.on_ready()
        except Exception:
            log.exception("handling the watcher's start failed")

    def start(self) -> None:
        """Start watching; returns once watching (or after 2 s on a slow machine: ``on_ready``
        is called from the watching thread when it really starts, so that the caller can catch
        up with changes made before then)."""
        self._thread = threading.Thread(target=self._run, name="hftagg-watch", daemon=True)
        self._thread.start()
        self.ready.wait(2.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
