"""``hftagg config``: validate, params, set, add-stage, remove, show.

``validate`` reports every problem of a config at once; ``params`` lists stage types' ports and
parameters (:mod:`hftagg.cli.config_params`); ``set``, ``add-stage`` and ``remove`` edit the file
(:mod:`hftagg.cli.config_edit`). ``show --effective`` lists every leaf of the merged config
(defaults, file, Consul, environment) with the layer it came from and whether a running pipeline
applies a change in place (``live``) or needs a restart (``restart``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from hftagg.cli.common import add_config_option, config_path, load_plugins_reported, print_problems
from hftagg.cli.config_edit import add_edit_parsers, cmd_config_set, full_validator
from hftagg.cli.config_edit import format_value as _format_value
from hftagg.cli.config_params import cmd_config_params
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


# -- validate ----------------------------------------------------------------------------------


def cmd_config_validate(args: argparse.Namespace) -> int:
    from hftagg.runtime.assemble import assemble

    if args.file and args.config and args.file != args.config:
        print(
            f"hftagg config validate: two files given ({args.file}, -c {args.config})",
            file=sys.stderr,
        )
        return 2
    path = config_path(args.file or args.config)
    try:
        assembled = assemble(path, host=load_plugins_reported(path))
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


# -- show -----------------------------------------------------------------------------------------


def _going_on_without(name: str, exc: ConfigError) -> None:
    print_problems(exc)
    print(f"hftagg config show: going on without the {name} layer", file=sys.stderr)


def effective_config(
    path: Path | None,
    environ: dict[str, str] | None = None,
    consul: dict[str, Any] | None = None,
    *,
    sources: bool = False,
) -> dict[str, dict[str, Any]]:
    """Every leaf of the merged config: ``{dotted key: {"value", "source", "mode", "live"}}``;
    ``mode`` is "live", "restart" or "unknown" and ``live`` the same as True, False or None.
    ``sources``: also read every config source the environment configures (Consul, ...)."""
    from hftagg.config.layers import defaults_layer, flatten, liveness_of, merge_layers
    from hftagg.config.load import named_layers
    from hftagg.config.sources import read_config_sources
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    environ = dict(os.environ) if environ is None else environ
    above, _ = merge_layers(named_layers(path, environ, consul))
    host = load_plugins(plugin_dirs(above, path))
    remote = read_config_sources(host, environ, _going_on_without) if sources else []
    layers = named_layers(path, environ, consul, remote=remote)
    above, _ = merge_layers(layers)
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

    path = config_path(args.config)
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
        rows = effective_config(path, environ, sources=True)
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
    """Add ``hftagg config`` and its commands."""
    config = sub.add_parser("config", help="validate, inspect and edit the config")
    config_subparsers = config.add_subparsers(
        dest="config_command", required=True, metavar="COMMAND"
    )
    validate = config_subparsers.add_parser("validate", help="check a config; one line per problem")
    validate.add_argument("file", nargs="?", help="config file (same as -c FILE)")
    add_config_option(validate, "default: ./config.toml if present, else built-in defaults")
    validate.set_defaults(func=cmd_config_validate)

    params = config_subparsers.add_parser(
        "params",
        help="list stage types: ports, parameters, allowed values, live or restart-only",
        description="For every stage type (or TYPE): its input and output ports (record schema, "
        "default topic) and its parameters (type, allowed values and bounds, default, live or "
        "restart). live: applied to the running stage from its next batch when the config "
        "changes; restart: the stage is rebuilt (state carried by snapshot/restore).",
    )
    params.add_argument(
        "types", nargs="*", metavar="TYPE", help="stage types or sections (default: all)"
    )
    params.add_argument("--json", action="store_true", help="JSON instead of text")
    add_config_option(params, "its plugins' stage types are listed too; default: ./config.toml")
    params.set_defaults(func=cmd_config_params)

    add_edit_parsers(config_subparsers, LIVE_HELP)

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
    add_config_option(show, "default: ./config.toml if present")
    show.add_argument(
        "--file", "-f", dest="config", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    show.set_defaults(func=cmd_config_show)
