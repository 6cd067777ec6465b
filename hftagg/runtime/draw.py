"""Drawing graphs: the configured pipeline and hftagg's architecture, as Mermaid, DOT or SVG.

A :class:`Diagram` is boxes and arrows; :func:`pipeline_diagram` makes one from a built
:class:`~hftagg.runtime.graph.Graph` (stages and the topics that join them, each topic with its
record schema), :func:`architecture_diagram` one of the framework itself from the registered
plugins and hooks. :func:`render` writes Mermaid or Graphviz DOT text, or SVG laid out here in
pure Python (layered, left to right), so no Graphviz install is needed and the same input always
gives the same bytes: ``assets/`` is generated with it and a test fails when a file is stale.
"""

from __future__ import annotations

import graphlib
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

__all__ = [
    "FORMATS",
    "Arrow",
    "Box",
    "Diagram",
    "architecture_diagram",
    "asset_texts",
    "pipeline_diagram",
    "render",
]

FORMATS = ("mermaid", "dot", "svg")

# fill, stroke per style
_COLORS = {
    "source": ("#e6f4ea", "#34a853"),
    "core": ("#e8f0fe", "#4285f4"),
    "sink": ("#fef7e0", "#f9ab00"),
    "topic": ("#f1f3f4", "#9aa0a6"),
    "note": ("#f3e8fd", "#a142f4"),
}


@dataclass(frozen=True)
class Box:
    """A node: ``lines[0]`` is its title; ``style`` one of source, core, sink, topic, note."""

    id: str
    lines: tuple[str, ...]
    style: str = "core"
    align: str = "middle"  # of the lines under the title (SVG): "middle" or "start"


@dataclass(frozen=True)
class Arrow:
    src: str
    dst: str
    label: str = ""


@dataclass
class Diagram:
    name: str
    boxes: list[Box] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)


# -- building -------------------------------------------------------------------------------------


def _topic_id(topic: str) -> str:
    return "t_" + re.sub(r"[^A-Za-z0-9_]", "_", topic)


def pipeline_diagram(graph: Any, name: str = "pipeline") -> Diagram:
    """Stages (by role) and topics (with their schema), producer -> topic -> consumers."""
    diagram = Diagram(name)
    for node in graph.nodes:
        diagram.boxes.append(Box(f"s_{node.id}", (node.id, node.stage.type_name), node.role))
    topic_ids: dict[str, str] = {}
    for topic, schema in graph.topics.items():
        box_id = _topic_id(topic)
        while box_id in topic_ids.values():  # md.x and md_x would collide
            box_id += "_"
        topic_ids[topic] = box_id
        label = f"{schema.name}@{schema.version}" if schema is not None else "any"
        diagram.boxes.append(Box(box_id, (topic, label), "topic"))
    for node in graph.nodes:
        for topic in node.outputs.values():
            diagram.arrows.append(Arrow(f"s_{node.id}", topic_ids[topic]))
    for node in graph.nodes:
        for topic in node.inputs.values():
            diagram.arrows.append(Arrow(topic_ids[topic], f"s_{node.id}"))
    return diagram


def _wrapped(title: str, words: Iterable[str], width: int = 46) -> tuple[str, ...]:
    return (title, *textwrap.wrap(", ".join(words), width))


def _core_groups(host: Any, names: list[str]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for name in names:
        group = host.stage_origin[name].rsplit(".", 1)[-1]
        groups.setdefault(group, []).append(name)
    return [f"{group}: {', '.join(types)}" for group, types in sorted(groups.items())]


def architecture_diagram(host: Any) -> Diagram:
    """hftagg's parts, from code: the registration hooks, the stage types registered (by role,
    core ones grouped by the package that provides them), config layers, runtime threads."""
    from hftagg import hookspecs
    from hftagg.stages.base import SinkStage, SourceStage

    hooks = sorted(n for n in vars(hookspecs) if n.startswith("hftagg_register_"))
    by_role: dict[str, list[str]] = {"source": [], "core": [], "sink": []}
    for name in sorted(host.stage_types):
        cls = host.stage_type(name)
        role = (
            "source"
            if issubclass(cls, SourceStage)
            else "sink"
            if issubclass(cls, SinkStage)
            else "core"
        )
        by_role[role].append(name)
    core_lines = []
    for line in _core_groups(host, by_role["core"]):
        core_lines += textwrap.wrap(line, 52, subsequent_indent="  ")
    return Diagram(
        "architecture",
        [
            Box(
                "config",
                ("config layers", "defaults < config.toml", "< Consul KV < HFTAGG__ env"),
                "note",
            ),
            Box(
                "plugins",
                _wrapped("plugins (pluggy)", ["built-ins", "entry points", "plugins/"])
                + tuple(textwrap.wrap(", ".join(hooks), 46)),
                "note",
                "start",
            ),  # fmt: skip
            Box(
                "spec", ("validated spec", "typed frozen params,", "every problem at once"), "note"
            ),
            Box(
                "stage_graph", ("graph", "stages joined by topics,", "checked before start"), "note"
            ),
            Box(
                "reload",
                ("live reload", "watch -> validate -> diff", "-> apply at batch boundary"),
                "note",
            ),
            Box("sources", _wrapped("sources (own threads)", by_role["source"], 30), "source"),
            Box(
                "core",
                ("core stages (one thread, topological order)", *core_lines),
                "core",
                "start",
            ),
            Box("sinks", _wrapped("sinks (own threads)", by_role["sink"], 30), "sink"),
            Box("wire", ("pynng frames", "hftagg tail, client.subscribe"), "topic"),
            Box("telemetry", ("telemetry", "OpenTelemetry, Prometheus,", "hftagg top"), "topic"),
        ],
        [
            Arrow("config", "spec"),
            Arrow("spec", "stage_graph"),
            Arrow("plugins", "stage_graph", "stage types, codecs, schemas"),
            Arrow("reload", "stage_graph", "new graph, cursors kept"),
            Arrow("stage_graph", "sources"),
            Arrow("sources", "core", "rings (one per topic)"),
            Arrow("core", "sinks", "rings"),
            Arrow("sinks", "wire"),
            Arrow("core", "telemetry", "per-batch metrics, spans"),
        ],
    )


# -- text formats ---------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    """Mermaid's entity codes for the characters its labels cannot hold."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


def _mermaid(d: Diagram) -> str:
    out = ["flowchart LR"]
    for box in d.boxes:
        text = "<br/>".join(_mermaid_text(line) for line in box.lines)
        shape = f'(["{text}"])' if box.style == "topic" else f'["{text}"]'
        out.append(f"    {box.id}{shape}:::{box.style}")
    for a in d.arrows:
        label = f'|"{_mermaid_text(a.label)}"|' if a.label else ""
        out.append(f"    {a.src} -->{label} {a.dst}")
    for style in sorted({b.style for b in d.boxes}):
        fill, stroke = _COLORS[style]
        out.append(f"    classDef {style} fill:{fill},stroke:{stroke}")
    return "\n".join(out) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot(d: Diagram) -> str:
    out = [
        f"digraph {_dot_quote(d.name)} {{",
        "    rankdir=LR;",
        '    node [fontname="Helvetica", fontsize=11, style="rounded,filled"];',
        '    edge [fontname="Helvetica", fontsize=9, color="#5f6368"];',
    ]
    for box in d.boxes:
        fill, stroke = _COLORS[box.style]
        shape = "ellipse" if box.style == "topic" else "box"
        label = _dot_quote("\n".join(box.lines))
        out.append(
            f"    {_dot_quote(box.id)} [label={label}, shape={shape}, "
            f'fillcolor="{fill}", color="{stroke}"];'
        )
    for a in d.arrows:
        label = f" [label={_dot_quote(a.label)}]" if a.label else ""
        out.append(f"    {_dot_quote(a.src)} -> {_dot_quote(a.dst)}{label};")
    out.append("}")
    return "\n".join(out) + "\n"


# -- SVG: a layered layout, left to right ---------------------------------------------------------

_CHAR_W = 7.2  # px per character of 12 px DejaVu Sans Mono (the font the SVG asks for)
_LINE_H = 16.0
_PAD_X, _PAD_Y = 10.0, 7.0
_COL_GAP, _ROW_GAP, _MARGIN = 70.0, 14.0, 20.0


def _size(box: Box) -> tuple[float, float]:
    width = max(len(line) for line in box.lines) * _CHAR_W + 2 * _PAD_X
    return width, len(box.lines) * _LINE_H + 2 * _PAD_Y


def _layers(d: Diagram) -> list[list[Box]]:
    """Longest-path layering, then every box with successors pulled right to just before its
    nearest successor (so a topic sits next to its consumer, not where its producer was);
    within a layer, boxes are ordered by the mean row of their predecessors."""
    preds: dict[str, list[str]] = {b.id: [] for b in d.boxes}
    succs: dict[str, list[str]] = {b.id: [] for b in d.boxes}
    for a in d.arrows:
        preds[a.dst].append(a.src)
        succs[a.src].append(a.dst)
    order = list(graphlib.TopologicalSorter(preds).static_order())
    layer: dict[str, int] = {}
    for box_id in order:
        layer[box_id] = max((layer[p] + 1 for p in preds[box_id]), default=0)
    for box_id in reversed(order):
        if succs[box_id]:
            layer[box_id] = min(layer[s] for s in succs[box_id]) - 1
    position = {b.id: i for i, b in enumerate(d.boxes)}
    columns: list[list[Box]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for box in d.boxes:
        columns[layer[box.id]].append(box)
    row: dict[str, float] = {}
    for column in columns:

        def key(box: Box) -> tuple[float, int]:
            rows = [row[p] for p in preds[box.id] if p in row]
            return (sum(rows) / len(rows) if rows else position[box.id], position[box.id])

        column.sort(key=key)
        for i, box in enumerate(column):
            row[box.id] = float(i)
    return [c for c in columns if c]


def _gaps(d: Diagram, columns: list[list[Box]]) -> list[float]:
    """The space after each column: wide enough for the labels of the arrows leaving it."""
    column_of = {b.id: i for i, col in enumerate(columns) for b in col}
    gaps = [_COL_GAP] * len(columns)
    for a in d.arrows:
        if a.label:
            i = column_of[a.src]
            gaps[i] = max(gaps[i], _label_width(a.label) + 30.0)
    return gaps


def _label_width(label: str) -> float:
    return len(label) * _CHAR_W * 0.85 + 6


def _f(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _svg(d: Diagram) -> str:
    columns = _layers(d)
    sizes = {b.id: _size(b) for b in d.boxes}
    heights = [sum(sizes[b.id][1] for b in col) + _ROW_GAP * (len(col) - 1) for col in columns]
    total_h = max(heights, default=0.0) + 2 * _MARGIN
    pos: dict[str, tuple[float, float, float, float]] = {}  # x, y, w, h
    x = _MARGIN
    gaps = _gaps(d, columns)
    for col, col_h, gap in zip(columns, heights, gaps, strict=True):
        col_w = max(sizes[b.id][0] for b in col)
        y = (total_h - col_h) / 2
        for box in col:
            w, h = sizes[box.id]
            pos[box.id] = (x + (col_w - w) / 2, y, w, h)
            y += h + _ROW_GAP
        x += col_w + gap
    total_w = x - gaps[-1] + _MARGIN if gaps else 2 * _MARGIN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(total_w)}" height="{_f(total_h)}" '
        f'viewBox="0 0 {_f(total_w)} {_f(total_h)}" font-family="DejaVu Sans Mono, Menlo, '
        f'Consolas, monospace" font-size="12">',
        f"<title>{escape(d.name)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#5f6368"/></marker></defs>',
        f'<rect width="{_f(total_w)}" height="{_f(total_h)}" fill="#ffffff"/>',
    ]
    labels = []
    for a in d.arrows:
        sx, sy, sw, sh = pos[a.src]
        tx, ty, _, th = pos[a.dst]
        x1, y1, x2, y2 = sx + sw, sy + sh / 2, tx, ty + th / 2
        bend = max((x2 - x1) / 2, 20.0)
        out.append(
            f'<path d="M {_f(x1)} {_f(y1)} C {_f(x1 + bend)} {_f(y1)}, {_f(x2 - bend)} {_f(y2)}, '
            f'{_f(x2)} {_f(y2)}" fill="none" stroke="#5f6368" stroke-width="1.2" '
            f'marker-end="url(#arrow)"/>'
        )
        if a.label:
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            lw = _label_width(a.label)
            labels.append(
                f'<rect x="{_f(mx - lw / 2)}" y="{_f(my - 8)}" width="{_f(lw)}" height="14" '
                f'fill="#ffffff" opacity="0.9"/><text x="{_f(mx)}" y="{_f(my + 3)}" '
                f'text-anchor="middle" font-size="10" fill="#3c4043">{escape(a.label)}</text>'
            )
    for box in d.boxes:
        bx, by, bw, bh = pos[box.id]
        fill, stroke = _COLORS[box.style]
        radius = bh / 2 if box.style == "topic" else 6.0
        out.append(
            f'<g id="{escape(box.id)}"><rect x="{_f(bx)}" y="{_f(by)}" width="{_f(bw)}" '
            f'height="{_f(bh)}" rx="{_f(min(radius, 14.0))}" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="1.5"/>'
        )
        for i, line in enumerate(box.lines):
            start = i > 0 and box.align == "start"
            attrs = ' font-weight="bold"' if i == 0 else ""
            attrs += ' xml:space="preserve"' if start and line.startswith(" ") else ""
            tx, anchor = (bx + _PAD_X, "start") if start else (bx + bw / 2, "middle")
            ty = by + _PAD_Y + _LINE_H * i + 12
            out.append(
                f'<text x="{_f(tx)}" y="{_f(ty)}" text-anchor="{anchor}"{attrs} '
                f'fill="#202124">{escape(line)}</text>'
            )
        out.append("</g>")
    out += labels
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render(diagram: Diagram, fmt: str) -> str:
    """``diagram`` as ``mermaid``, ``dot`` or ``svg`` text."""
    renderers = {"mermaid": _mermaid, "dot": _dot, "svg": _svg}
    if fmt not in renderers:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return renderers[fmt](diagram)


# -- assets ---------------------------------------------------------------------------------------


def asset_texts(root: Path) -> dict[str, str]:
    """Every generated file under ``root/assets``: {file name: text}. Only the repository's
    config.toml, plugins/ and code go in (no environment, no Consul, no clock)."""
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import assemble

    pipeline = pipeline_diagram(assemble(root / "config.toml", environ={}).graph)
    architecture = architecture_diagram(load_plugins([]))
    texts = {}
    for diagram in (architecture, pipeline):
        texts[f"{diagram.name}.mmd"] = render(diagram, "mermaid")
        texts[f"{diagram.name}.svg"] = render(diagram, "svg")
    texts["pipeline.dot"] = render(pipeline, "dot")
    return texts
