"""``hftagg graph``: draw the configured pipeline (stages, the topics joining them, schemas).

Mermaid (paste into a Markdown file or mermaid.live), Graphviz DOT, or SVG laid out by hftagg
itself (no Graphviz needed). The graph is the one ``hftagg run`` would build: same config
layers, same plugins; an invalid config prints its problems instead.
"""

from __future__ import annotations

import argparse
import sys

from hftagg.cli.common import add_config_option, config_path, output_file, print_problems
from hftagg.errors import ConfigError

__all__ = ["add_parser", "cmd_graph"]

_BY_SUFFIX = {".svg": "svg", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".md": "mermaid"}


def cmd_graph(args: argparse.Namespace) -> int:
    from hftagg.runtime.assemble import assemble
    from hftagg.runtime.draw import pipeline_diagram, render

    path = config_path(args.config)
    fmt = args.format
    if fmt is None:
        fmt = _BY_SUFFIX.get(args.output.suffix, "mermaid") if args.output else "mermaid"
    try:
        graph = assemble(path).graph
    except ConfigError as exc:
        print_problems(exc)
        print(f"{path or '(defaults)'}: invalid, {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    text = render(pipeline_diagram(graph), fmt)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output} ({fmt}, {len(graph.nodes)} stages, {len(graph.topics)} topics)")
    else:
        sys.stdout.write(text)
    return 0


def add_parser(sub) -> None:
    graph = sub.add_parser(
        "graph",
        help="draw the configured pipeline as Mermaid, DOT or SVG",
        description="Draw the pipeline the config describes: stages (sources, core, sinks) and "
        "the topics joining them, each with its record schema. --format mermaid (default; for "
        "Markdown), dot (Graphviz) or svg (laid out by hftagg, no Graphviz needed). With -o FILE "
        "the format follows the file's suffix (.svg, .dot, .mmd) unless --format is given.",
    )
    add_config_option(graph, "default: ./config.toml if present, else built-in defaults")
    graph.add_argument("--format", choices=["mermaid", "dot", "svg"], help="output format")
    graph.add_argument(
        "--output", "-o", type=output_file, metavar="FILE", help="write to FILE instead of stdout"
    )
    graph.set_defaults(func=cmd_graph)
