"""``hftagg warm``: compile and cache every plugin's numba kernels ahead of the first run.

Every plugin -- built-in, installed or in a plugin folder -- registers its warm-ups through
``hftagg_register_kernel_warmups``; this calls each, times it, and reports a failing one by name
without stopping the others (exit status 1 if any failed).
"""

from __future__ import annotations

import argparse
import sys
import time

from hftagg.cli.common import add_config_option, config_path, load_plugins_reported

__all__ = ["add_parser", "cmd_warm"]


def cmd_warm(args: argparse.Namespace) -> int:
    host = load_plugins_reported(config_path(getattr(args, "config", None)))
    t0 = time.perf_counter()
    failed = []
    for name, warmup in host.kernel_warmups.items():
        t1 = time.perf_counter()
        try:
            warmup.warm()
        except Exception as exc:  # one failing warm-up must not stop the others
            failed.append(name)
            plugin = host.table_origin("kernel_warmups", name)
            print(
                f"hftagg: warming {name} (plugin {plugin!r}) failed: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            continue
        if args.verbose:
            print(f"  {name}: {time.perf_counter() - t1:.1f}s", flush=True)
    done = len(host.kernel_warmups) - len(failed)
    summary = f"hftagg: {done} kernel warm-up(s) done in {time.perf_counter() - t0:.1f}s"
    if failed:
        summary += f", {len(failed)} failed: {', '.join(failed)}"
    print(summary)
    return 1 if failed else 0


def add_parser(sub) -> None:
    warm = sub.add_parser(
        "warm", help="compile and cache the numba kernels of every plugin (built-in or not)"
    )
    add_config_option(warm, "whose plugin_paths to load; default: ./config.toml if present")
    warm.add_argument("--verbose", "-v", action="store_true", help="time each warm-up")
    warm.set_defaults(func=cmd_warm)
