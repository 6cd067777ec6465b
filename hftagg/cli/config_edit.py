"""``hftagg config set``, ``add-stage`` and ``remove``: edit config.toml, one validated change.

Each edit keeps comments and layout (tomlkit), validates the whole new config (types, bounds,
unknown keys, the graph it builds) and only then replaces the file atomically; a refused edit
leaves the file untouched. A whole stage is one change: ``add-stage`` (or ``set stages.ID
'{...}'``) writes its ``[stages.ID]`` table at once, so a stage and its parameters are never
validated half-written.

After writing, a key that a higher layer overrides (an ``HFTAGG__...`` environment variable,
or Consul KV when ``CONSUL_HTTP_ADDR`` is set) is reported: the file changed, but a pipeline
started in this environment would not use the new value.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomlkit

from hftagg.cli.common import DEFAULT_CONFIG, print_problems
from hftagg.errors import MISSING, ConfigError, Problem

__all__ = [
    "cmd_config_add_stage",
    "cmd_config_remove",
    "cmd_config_set",
    "full_validator",
    "overriding_layers",
]

_STAGE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_value(value: Any) -> str:
    """``value`` as TOML on one line (tables inline)."""
    from hftagg.config.edit import inline_table

    try:
        if isinstance(value, dict):
            return inline_table(value).as_string()
        return tomlkit.item(value).as_string()
    except Exception:  # not representable in TOML (should not happen for parsed config)
        return repr(value)


def full_validator(path: Path) -> Callable[[dict], None]:
    """Validation an edit must pass: the config maps onto a spec and its graph builds."""

    def validate(raw: dict) -> None:
        from hftagg.config.paths import set_config_dir
        from hftagg.config.spec import parse_spec
        from hftagg.plugins.manager import load_plugins
        from hftagg.runtime.assemble import plugin_dirs
        from hftagg.runtime.graph import build_graph

        set_config_dir(path)  # file parameters (a store, a DBN file) are relative to it
        host = load_plugins(plugin_dirs(raw, path))
        build_graph(parse_spec(raw, str(path), strict=False, sections=host.config_sections), host)

    return validate


def _edit_path(args: argparse.Namespace) -> Path:
    return Path(args.config) if args.config else DEFAULT_CONFIG


def _refused(path: Path, exc: ConfigError) -> int:
    print_problems(exc)
    print(f"{path}: not changed ({len(exc.problems)} problem(s))", file=sys.stderr)
    return 1


# -- overrides ------------------------------------------------------------------------------------


def _leaves(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_leaves(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _overlaps(key: str, other: str) -> bool:
    return other == key or other.startswith(key + ".") or key.startswith(other + ".")


def overriding_layers(
    key: str,
    environ: Mapping[str, str],
    consul: Mapping[str, Any] | None = None,
    remote: list[tuple[str, Mapping[str, Any]]] = (),
) -> list[tuple[str, str, Any]]:
    """``(layer, key, value)`` for every value above the file that overrides ``key`` or a part
    of it: config source layers (Consul KV, ...), then ``HFTAGG__...`` variables (the
    environment wins)."""
    from hftagg.config.load import env_layers

    layers = [("consul", dict(consul))] if consul else []
    layers += [(name, dict(layer)) for name, layer in remote]
    found = []
    for name, layer in [*layers, *env_layers(environ)]:
        for other, value in _leaves(layer).items():
            if _overlaps(key, other):
                found.append((name, other, value))
    return found


def _source_layers_for_warning(path: Path, environ: Mapping[str, str]) -> tuple[list, Any]:
    """Every configured config source's layer, and the host that registered them; a source
    that cannot be read is a warning (the override check goes on without it)."""
    from hftagg.config.load import read_layers
    from hftagg.config.sources import read_config_sources
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    def unreachable(name: str, exc: ConfigError) -> None:
        print(
            f"hftagg config: warning: could not check the {name} config source for overrides: "
            f"{exc}",
            file=sys.stderr,
        )

    host = load_plugins(plugin_dirs(read_layers(path, environ), path))
    return read_config_sources(host, environ, unreachable), host


def warn_if_overridden(
    path: Path, key: str, environ: Mapping[str, str] | None = None, edit: str = "sets"
) -> int:
    """Tell the user (stderr) which higher layers still override ``key``; returns how many."""
    environ = dict(os.environ) if environ is None else environ
    remote, host = _source_layers_for_warning(path, environ)
    found = overriding_layers(key, environ, remote=remote)
    for layer, other, value in found:
        kind = host.config_sources.get(layer)
        if layer.startswith("env ") or kind is None:
            how = "unset it"
        else:
            how = kind.removal.format(key=other, name=layer)
        print(
            f"hftagg config: warning: {path} now {edit} {key}, but {layer} overrides {other} = "
            f"{format_value(value)}; a pipeline started with this environment uses that "
            f"value ({how} to use the file's)",
            file=sys.stderr,
        )
    return len(found)


# -- set ------------------------------------------------------------------------------------------


def _liveness_after_set(path: Path, key: str) -> str:
    from hftagg.config.layers import liveness_of
    from hftagg.config.load import read_config_file
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    raw = read_config_file(path)
    mode = liveness_of([key], raw, load_plugins(plugin_dirs(raw, path)))[key]
    if (
        mode == "unknown"
        and key.count(".") == 1
        and key.split(".")[0] in ("stages", "data_sources")
    ):
        return "a whole stage: a running pipeline builds it without a restart"
    return mode


def cmd_config_set(args: argparse.Namespace) -> int:
    from hftagg.config.edit import set_value

    path = _edit_path(args)
    try:
        old, new = set_value(path, args.key, args.value, validate=full_validator(path))
    except ConfigError as exc:
        return _refused(path, exc)
    mode = _liveness_after_set(path, args.key)
    was = "unset" if old is None else format_value(old)
    print(f"{path}: {args.key} = {format_value(new)}    (was {was}; {mode})")
    warn_if_overridden(path, args.key)
    return 0


# -- add-stage, remove ----------------------------------------------------------------------------


def _stage_table(stage_type: str, assignments: list[str], source: str) -> dict[str, Any]:
    """``{"type": TYPE, ...}`` from ``KEY=VALUE`` words (``topics.PORT=TOPIC`` nests)."""
    from hftagg.config.edit import parse_value

    table: dict[str, Any] = {"type": stage_type}
    problems = []
    for word in assignments:
        key, sep, raw = word.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            problems.append(Problem(word, MISSING, "expected KEY=VALUE", source))
            continue
        node = table
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_value(raw.strip()).unwrap()
    if problems:
        raise ConfigError(problems)
    return table


def cmd_config_add_stage(args: argparse.Namespace) -> int:
    from hftagg.config.edit import inline_table, set_item

    path = _edit_path(args)
    key = f"stages.{args.id}"
    try:
        if not _STAGE_ID.match(args.id):
            raise ConfigError(
                [
                    Problem(
                        key, args.id, "a stage id is letters, digits, _ and - (no dots)", str(path)
                    )
                ]
            )
        table = _stage_table(args.type, args.assignments, str(path))
        existing = _existing(path, key)
        if existing is not None and not args.replace:
            raise ConfigError(
                [Problem(key, existing, "already exists; pass --replace to redefine it, or "
                         f"hftagg config remove {key}", str(path))]
            )  # fmt: skip
        set_item(path, key, inline_table(table), validate=full_validator(path))
    except ConfigError as exc:
        return _refused(path, exc)
    verb = "replaced" if existing is not None else "added"
    print(f"{path}: {verb} [{key}] {format_value(table)}")
    warn_if_overridden(path, key)
    return 0


def _existing(path: Path, key: str) -> Any:
    from hftagg.config.load import read_config_file

    node: Any = read_config_file(path)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def cmd_config_remove(args: argparse.Namespace) -> int:
    from hftagg.config.edit import remove_key

    path = _edit_path(args)
    try:
        old, _ = remove_key(path, args.key, validate=full_validator(path))
    except ConfigError as exc:
        return _refused(path, exc)
    print(f"{path}: removed {args.key} (was {format_value(old)})")
    warn_if_overridden(path, args.key, edit="no longer sets")
    return 0


def add_edit_parsers(config_subparsers: Any, live_help: str) -> None:
    """``set``, ``add-stage`` and ``remove`` under ``hftagg config``."""
    from hftagg.cli.common import add_config_option

    set_parser = config_subparsers.add_parser(
        "set",
        help="set one key in config.toml, keeping comments and layout (validated first)",
        description="Set KEY (dotted, e.g. processing.ema_window) to VALUE (a TOML value: 30, "
        "true, '\"x\"', '[1, 2]', '{type = \"sma\", window = 5}'; anything else is a string). "
        "The whole config is validated before the file is written; an invalid value leaves the "
        "file untouched. A table value replaces the whole table (e.g. a stage) in one change. "
        "A warning says when the environment or Consul overrides the key. " + live_help,
    )
    set_parser.add_argument("key", help="dotted key, e.g. processing.ema_window")
    set_parser.add_argument("value", help="TOML value, e.g. 30, true, '\"text\"', '[1, 2]'")
    _file_options(set_parser, add_config_option)
    set_parser.set_defaults(func=cmd_config_set)

    add = config_subparsers.add_parser(
        "add-stage",
        help="add a whole [stages.ID] table (type, parameters, topics), validated as one change",
        description="Add stage ID of TYPE with its parameters as KEY=VALUE words (TOML values; "
        "topics.PORT=TOPIC wires a port), e.g.: hftagg config add-stage fast_ema ema window=5 "
        "topics.output=ind.ema5. The stage and the graph it joins are validated together "
        "before the file is written; a running pipeline builds the new stage without a restart. "
        "See a type's parameters and ports with: hftagg config params TYPE",
    )
    add.add_argument("id", help="stage id (letters, digits, _ and -)")
    add.add_argument("type", help="stage type (hftagg config params lists them)")
    add.add_argument("assignments", nargs="*", metavar="KEY=VALUE", help="parameters and topics")
    add.add_argument("--replace", action="store_true", help="redefine a stage that exists")
    _file_options(add, add_config_option)
    add.set_defaults(func=cmd_config_add_stage)

    remove = config_subparsers.add_parser(
        "remove",
        help="remove a key or a whole table (e.g. stages.mid), validated first",
        description="Remove KEY (a value, or a table such as stages.mid) from the config file. "
        "The config without it is validated first (a stage others read from cannot go alone).",
    )
    remove.add_argument("key", help="dotted key, e.g. stages.mid")
    _file_options(remove, add_config_option)
    remove.set_defaults(func=cmd_config_remove)


def _file_options(parser: argparse.ArgumentParser, add_config_option: Callable) -> None:
    add_config_option(parser, "default: ./config.toml")
    parser.add_argument(
        "--file", "-f", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )  # older spelling
