"""``hftagg config``: validate, params, set, show.

``validate`` reports every problem of a config at once; ``params`` lists stage types' parameters.

``set`` keeps comments and layout (tomlkit), validates the whole new config before writing and
writes atomically. ``show --effective`` lists every leaf of the merged config (defaults, file,
Consul, environment) with the layer it came from and whether a running pipeline applies a change
in place (``live``) or needs a restart (``restart``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomlkit

from hftagg.cli.common import DEFAULT_CONFIG, config_path, print_problems
from hftagg.errors import ConfigError

__all__ = [
    "add_parser",
    "cmd_config_params",
    "cmd_config_set",
    "cmd_config_show",
    "cmd_config_validate",
    "effective_config",
    "full_validator",
]
LIVE_HELP = (
    "Keys marked 'live' (e.g. processing.ema_window, data_sources.<name>.rate, "
    "runtime.status_interval_secs) apply to a running pipeline from its next batch; "
    "'restart' keys need the stage rebuilt or the pipeline restarted. "
    "See them all with: hftagg config show --effective"
)


def _format_value(value: Any) -> str:
    try:
        return tomlkit.item(value).as_string()
    except Exception:  # not representable in TOML (should not happen for parsed config)
        return repr(value)


# -- validate, params ----------------------------------------------------------------------------


def cmd_config_validate(args: argparse.Namespace) -> int:
    from hftagg.runtime.assemble import assemble

    path = Path(args.file) if args.file else config_path(None)
    try:
        assembled = assemble(path)
    except ConfigError as exc:
        print_problems(exc)
        print(f"{path or '(defaults)'}: invalid, {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{path or '(defaults)'}: valid, {len(assembled.graph.nodes)} stages")
    for line in assembled.graph.describe():
        print(f"  {line}")
    for note in assembled.spec.notes:
        print(f"note: {note}")
    return 0


def cmd_config_params(args: argparse.Namespace) -> int:
    """Every stage type's parameters: type, default, live or restart, description."""
    from hftagg.config.load import read_layers
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    path = config_path(args.config)
    host = load_plugins(plugin_dirs(read_layers(path), path))
    types = [args.type] if args.type else sorted(host.stage_types)
    for name in types:
        cls = host.stage_type(name)
        print(f"{name} ({cls.kind}, from {host.stage_origin[name]})")
        for p in cls.Params.describe():
            mode = "live" if p["live"] else "restart"
            print(
                f"    {p['name']:<22} {p['type']:<10} default {p['default']!r:<14} {mode:<8}"
                f"{p['description']}"
            )
    return 0


# -- set ------------------------------------------------------------------------------------------


def full_validator(path: Path) -> Callable[[dict], None]:
    """Validation a ``set`` must pass: the config maps onto a spec and its graph builds."""

    def validate(raw: dict) -> None:
        from hftagg.config.spec import parse_spec
        from hftagg.plugins.manager import load_plugins
        from hftagg.runtime.assemble import plugin_dirs
        from hftagg.runtime.graph import build_graph

        host = load_plugins(plugin_dirs(raw, path))
        build_graph(parse_spec(raw, str(path), strict=False), host)

    return validate


def cmd_config_set(args: argparse.Namespace) -> int:
    from hftagg.config.edit import set_value

    path = Path(args.file) if args.file else DEFAULT_CONFIG
    try:
        old, new = set_value(path, args.key, args.value, validate=full_validator(path))
    except ConfigError as exc:
        print_problems(exc)
        print(f"{path}: not changed ({len(exc.problems)} problem(s))", file=sys.stderr)
        return 1
    mode = _liveness_after_set(path, args.key)
    was = "unset" if old is None else _format_value(old)
    print(f"{path}: {args.key} = {_format_value(new)}    (was {was}; {mode})")
    return 0


def _liveness_after_set(path: Path, key: str) -> str:
    from hftagg.config.layers import liveness_of
    from hftagg.config.load import read_config_file
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    raw = read_config_file(path)
    return liveness_of([key], raw, load_plugins(plugin_dirs(raw, path)))[key]


# -- show -----------------------------------------------------------------------------------------


def _consul_layer(environ: dict[str, str]) -> dict[str, Any] | None:
    from hftagg.config.consul import ConsulSource, consul_settings

    settings = consul_settings(environ)
    if settings is None:
        return None
    address, prefix = settings

    try:
        return ConsulSource(address, prefix).fetch_once()
    except ConfigError as exc:
        print_problems(exc)
        print("hftagg config show: going on without the Consul layer", file=sys.stderr)
        return None


def effective_config(
    path: Path | None, environ: dict[str, str] | None = None, consul: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Every leaf of the merged config: ``{dotted key: {"value", "source", "mode", "live"}}``;
    ``mode`` is "live", "restart" or "unknown" and ``live`` the same as True, False or None."""
    from hftagg.config.layers import defaults_layer, flatten, liveness_of, merge_layers
    from hftagg.config.load import named_layers
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    environ = dict(os.environ) if environ is None else environ
    layers = named_layers(path, environ, consul)
    above, _ = merge_layers(layers)
    host = load_plugins(plugin_dirs(above, path))
    merged, sources = merge_layers([("defaults", defaults_layer(above, host)), *layers])
    leaves = flatten(merged)
    modes = liveness_of(list(leaves), above, host)
    return {
        key: {
            "value": value,
            "source": sources.get(key, "?"),
            "mode": modes[key],
            "live": {"live": True, "restart": False}.get(modes[key]),
        }
        for key, value in leaves.items()
    }


def _print_effective(rows: dict[str, dict[str, Any]]) -> None:
    lefts = {key: f"{key} = {_format_value(row['value'])}" for key, row in rows.items()}
    width = min(max((len(s) for s in lefts.values()), default=0), 56)
    for key, row in rows.items():
        print(f"{lefts[key]:<{width}}    ({row['source']}; {row['mode']})")


def cmd_config_show(args: argparse.Namespace) -> int:
    from hftagg.config.load import read_config_file

    path = config_path(args.file)
    try:
        if not args.effective:
            if path is None:
                print(
                    "no config file (./config.toml not found); built-in defaults apply: "
                    "see hftagg config show --effective",
                    file=sys.stderr,
                )
                return 1
            if args.json:
                print(json.dumps(read_config_file(path), indent=2, default=str))
            else:
                read_config_file(path)  # a syntax error is reported, not printed as text
                sys.stdout.write(path.read_text(encoding="utf-8"))
            return 0
        environ = dict(os.environ)
        rows = effective_config(path, environ, _consul_layer(environ))
    except ConfigError as exc:
        print_problems(exc)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        _print_effective(rows)
    return 0


# -- wiring ---------------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Add ``hftagg config`` and its commands: validate, params, set, show."""
    config = sub.add_parser("config", help="work with config files")
    config_subparsers = config.add_subparsers(dest="config_command", required=True)
    validate = config_subparsers.add_parser("validate", help="check a config; one line per problem")
    validate.add_argument("file", nargs="?")
    validate.set_defaults(func=cmd_config_validate)
    set_parser = config_subparsers.add_parser(
        "set",
        help="set one key in config.toml, keeping comments and layout (validated first)",
        description="Set KEY (dotted, e.g. processing.ema_window) to VALUE (a TOML value: 30, "
        "true, '\"x\"', '[1, 2]'; anything else is a string). The whole config is validated "
        "before the file is written; an invalid value leaves the file untouched. " + LIVE_HELP,
    )
    set_parser.add_argument("key", help="dotted key, e.g. processing.ema_window")
    set_parser.add_argument("value", help="TOML value, e.g. 30, true, '\"text\"', '[1, 2]'")
    set_parser.add_argument("--file", "-f", help="config file (default: ./config.toml)")
    set_parser.set_defaults(func=cmd_config_set)

    show = config_subparsers.add_parser(
        "show",
        help="show the config file, or with --effective every value with its source",
        description="Without --effective: the config file. With --effective: the merged config "
        "(defaults, file, Consul when CONSUL_HTTP_ADDR is set, "
        "HFTAGG__SECTION__KEY environment variables), one line per key with the layer it came "
        "from and whether it is live or restart. " + LIVE_HELP,
    )
    show.add_argument("--effective", action="store_true", help="merged config with provenance")
    show.add_argument("--json", action="store_true", help="JSON instead of text")
    show.add_argument("--file", "-f", help="config file (default: ./config.toml if present)")
    show.set_defaults(func=cmd_config_show)

    params = config_subparsers.add_parser(
        "params",
        help="list stage types' parameters and whether each is live or restart-only",
        description="live: applied to the running stage from its next batch when the config "
        "changes; restart: the stage is rebuilt (state carried by snapshot/restore).",
    )
    params.add_argument("type", nargs="?", help="one stage type (default: all)")
    params.add_argument("--config", "-c")
    params.set_defaults(func=cmd_config_params)
