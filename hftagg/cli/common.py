"""What every command group shares: the parser (with suggestions), the ``-c/--config`` option,
checked argument types, which config file to use, how problems are printed."""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
from pathlib import Path
from typing import Any

from hftagg.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "Parser",
    "add_config_option",
    "config_path",
    "existing_dir",
    "load_plugins_reported",
    "non_negative_int",
    "output_file",
    "positive_float",
    "print_problems",
    "report_failed_plugins",
    "setup_logging",
    "suggest",
]

DEFAULT_CONFIG = Path("config.toml")
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def suggest(word: str, candidates: list[str]) -> str | None:
    """The candidate closest to ``word`` (a likely typo of it), or None."""
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that says "did you mean ..." for a mistyped command, choice or flag."""

    def error(self, message: str) -> Any:
        if "arguments are required: COMMAND" in message:  # `hftagg` or `hftagg config` alone
            self.print_help(sys.stderr)
            self.exit(2, f"\n{self.prog}: error: give a COMMAND (one of the above)\n")
        match = _INVALID_CHOICE.search(message)
        if match:
            choices = re.findall(r"'([^']*)'", match.group(2))
            close = suggest(match.group(1), choices)
            if close:
                message = f"{message}; did you mean {close!r}?"
        super().error(message)

    def option_strings(self) -> list[str]:
        return [s for action in self._actions for s in action.option_strings]

    def reject_unknown(self, extras: list[str]) -> None:
        """Exit 2 naming the arguments this command does not take, with suggestions."""
        hints = []
        for arg in extras:
            flag = arg.split("=", 1)[0]
            close = suggest(flag, self.option_strings()) if flag.startswith("-") else None
            if close:
                hints.append(f"{flag} -> did you mean {close}?")
        text = f"unrecognized arguments: {' '.join(extras)}"
        self.error(f"{text} ({'; '.join(hints)})" if hints else text)


def add_config_option(parser: argparse.ArgumentParser, default_help: str) -> None:
    """The one ``-c/--config FILE`` option (the same on every command that reads a config).

    ``--file/-f``, the older spelling on ``config set/show``, stays as a hidden alias. The
    default is SUPPRESS so ``hftagg -c FILE <command>`` (given before the command) is kept."""
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"config file ({default_help})",
    )


def positive_float(text: str) -> float:
    """A number of seconds > 0 (for --duration, --interval, --timeout ...)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A count >= 0 (0 meaning no limit where the option says so)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def existing_dir(text: str) -> Path:
    """A folder that exists."""
    path = Path(text)
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r} {what}; give an existing plugin folder")
    return path


def output_file(text: str) -> Path:
    """A file to write: its folder must exist (checked before anything runs)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {str(path.parent)!r} of {text!r} does not exist")
    return path


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


def report_failed_plugins(host: Any) -> None:
    """One line per plugin that failed to load (name, where, why), then where to see more."""
    for record in host.failed:
        print(
            f"hftagg: {record.label} failed to load, skipped: {record.last_error_line}",
            file=sys.stderr,
        )
    if host.failed:
        print(
            f"hftagg: {len(host.failed)} plugin(s) skipped; `hftagg plugins` shows their "
            f"tracebacks",
            file=sys.stderr,
        )


def load_plugins_reported(path: Path | None) -> Any:
    """Load the plugins ``path``'s config names and report the failed ones at once, before the
    config is checked (so they are reported even when it is invalid)."""
    from hftagg.config.load import read_layers
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    host = load_plugins(plugin_dirs(read_layers(path), path))
    report_failed_plugins(host)
    return host
