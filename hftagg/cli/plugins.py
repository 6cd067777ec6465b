"""``hftagg plugins``: every plugin, where it came from, what it provides."""

from __future__ import annotations

import argparse
import json

from hftagg.cli.common import add_config_option, config_path, existing_dir, print_problems
from hftagg.errors import ConfigError

__all__ = ["add_parser", "cmd_plugins"]


def cmd_plugins(args: argparse.Namespace) -> int:
    from hftagg.config.load import read_layers
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    path = config_path(args.config)
    try:
        raw = read_layers(path)
    except ConfigError as exc:
        print_problems(exc)
        return 1
    dirs = plugin_dirs(raw, path) + list(args.plugin_dir)
    host = load_plugins(dirs)
    if args.json:
        print(json.dumps([r.as_dict() for r in host.records], indent=2))
        return 0
    for record in host.records:
        status = "FAILED" if record.error else "ok"
        print(f"{record.name}  [{record.origin}] {record.location}  {status}")
        for what, names in record.provides.items():
            print(f"    {what.replace('_', ' ')}: {', '.join(names)}")
        if record.error:
            for line in record.error.rstrip().splitlines():
                print(f"    | {line}")
    return 0


def add_parser(sub) -> None:
    plugins = sub.add_parser(
        "plugins", help="list plugins, where they came from, what they provide"
    )
    plugins.add_argument("--json", action="store_true", help="JSON instead of text")
    add_config_option(plugins, "its plugin_paths are searched; default: ./config.toml")
    plugins.add_argument(
        "--plugin-dir",
        action="append",
        default=[],
        type=existing_dir,
        metavar="DIR",
        help="also load plugins from DIR (repeatable)",
    )
    plugins.set_defaults(func=cmd_plugins)
