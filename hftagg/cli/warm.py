"""``hftagg warm``: compile and cache every numba kernel ahead of the first run."""

from __future__ import annotations

import argparse
import time

__all__ = ["add_parser", "cmd_warm"]


def cmd_warm(args: argparse.Namespace) -> int:
    from hftagg.kernels import warm_all

    t0 = time.perf_counter()
    warm_all()
    print(f"hftagg: compiled kernels warmed in {time.perf_counter() - t0:.1f}s")
    return 0


def add_parser(sub) -> None:
    warm = sub.add_parser("warm", help="compile and cache the numba kernels")
    warm.set_defaults(func=cmd_warm)
