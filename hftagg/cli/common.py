"""What every command group shares: which config file to use, how problems are printed."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hftagg.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "config_path", "print_problems", "setup_logging"]

DEFAULT_CONFIG = Path("config.toml")


def config_path(value: str | None) -> Path | None:
    """The config to use: the one given, else ./config.toml if present, else built-in defaults."""
    if value:
        return Path(value)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def print_problems(exc: ConfigError) -> None:
    """One line per problem on stderr."""
    for problem in exc.problems:
        print(problem, file=sys.stderr)


def setup_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="hftagg: %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
