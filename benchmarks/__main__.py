"""``python -m benchmarks [NAME ...] [--json] [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from benchmarks.harness import format_result, to_json


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {names}")
    parser.add_argument("--json", action="store_true", help="one JSON object per result")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {names}")
    for name in args.names or names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        results = module.run(quick=args.quick)
        print(to_json(results) if args.json else "\n".join(map(format_result, results)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
