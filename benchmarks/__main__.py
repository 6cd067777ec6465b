"""``python -m benchmarks [NAME ...] [--json] [--quick] [--no-progress]``.

Results go to stdout as each benchmark finishes; progress (which benchmark runs, for how long)
goes to stderr, so ``--json > results.jsonl`` stays clean. A benchmark that fails is reported
with its traceback and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TextIO

from benchmarks.harness import environment, format_environment, format_result, to_json


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


def _clock(secs: float) -> str:
    return f"{secs:.1f}s" if secs < 60 else f"{int(secs // 60)}m{int(secs % 60):02d}s"


class Progress:
    """``[2/11] ema: running`` ... ``[2/11] ema: 2 results in 14.2s`` on stderr; on a terminal
    the running line counts the seconds in place."""

    def __init__(self, total: int, stream: TextIO | None, tick_secs: float = 1.0) -> None:
        self.total, self.stream, self.tick_secs = total, stream, tick_secs
        self.live = bool(stream is not None and stream.isatty())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()

    def start(self, index: int, name: str) -> float:
        label = f"[{index}/{self.total}] {name}"
        t0 = time.perf_counter()
        if not self.live:
            self._write(f"{label}: running\n")
            return t0
        self._stop.clear()

        def tick() -> None:
            while not self._stop.wait(self.tick_secs):
                self._write(f"\r{label}: running {_clock(time.perf_counter() - t0)}")

        self._write(f"{label}: running")
        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()
        return t0

    def finish(self, index: int, name: str, t0: float, outcome: str) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._write("\r\033[K")
        elapsed = _clock(time.perf_counter() - t0)
        self._write(f"[{index}/{self.total}] {name}: {outcome} in {elapsed}\n")


def build_parser(names: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {names}")
    parser.add_argument("--json", action="store_true", help="one JSON object per result")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = build_parser(names)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {names}")
    chosen = args.names or names
    progress = Progress(len(chosen), None if args.no_progress else sys.stderr)
    if not args.no_progress:
        sys.stderr.write(f"benchmarks: {format_environment(environment())}\n")
    failed = []
    t_all = time.perf_counter()
    for index, name in enumerate(chosen, 1):
        t0 = progress.start(index, name)
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            results = module.run(quick=args.quick)
        except Exception:
            progress.finish(index, name, t0, "FAILED")
            traceback.print_exc()
            failed.append(name)
            continue
        progress.finish(index, name, t0, f"{len(results)} result(s)")
        print(to_json(results) if args.json else "\n".join(map(format_result, results)), flush=True)
    if not args.no_progress:
        done = len(chosen) - len(failed)
        sys.stderr.write(
            f"benchmarks: {done} of {len(chosen)} ran in {_clock(time.perf_counter() - t_all)}"
            + (f"; failed: {', '.join(failed)}\n" if failed else "\n")
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
