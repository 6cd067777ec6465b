"""``hftagg config params``: every stage type's ports and parameters, then the ``[runtime]``,
``[processing]`` and ``[telemetry]`` sections (``hftagg config params runtime`` for one).

For each parameter: its type, the values it allows (a Literal's choices, numeric bounds), its
default, whether a running pipeline applies a change in place (``live``) or rebuilds the stage
(``restart``), and its description. For each port: the record schema and default topic.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from typing import Any

from pydantic.fields import FieldInfo

__all__ = ["cmd_config_params", "describe_stage_type", "param_rows"]

_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_text(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _allowed(info: FieldInfo) -> tuple[list[Any] | None, list[str]]:
    """(choices or None, bounds such as ['>= 1', '<= 1000000'])."""
    choices = None
    if typing.get_origin(info.annotation) is typing.Literal:
        choices = list(typing.get_args(info.annotation))
    bounds = []
    for item in info.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value}")
        for attr, text in (("min_length", "length >="), ("max_length", "length <=")):
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{text} {value}")
    return choices, bounds


def param_rows(params_model: Any) -> list[dict[str, Any]]:
    """One dict per parameter: name, type, choices, bounds, default, required, live, description."""
    rows = []
    for name, info in params_model.model_fields.items():
        choices, bounds = _allowed(info)
        rows.append(
            {
                "name": name,
                "type": _type_text(info.annotation),
                "choices": choices,
                "bounds": bounds,
                "default": None
                if info.is_required()
                else info.get_default(call_default_factory=True),
                "required": info.is_required(),
                "live": params_model.is_live(name),
                "description": info.description or "",
            }
        )
    return rows


def _ports(ports: dict) -> list[dict[str, Any]]:
    return [
        {"port": name, "schema": port.schema or "any", "topic": port.topic, "doc": port.doc}
        for name, port in ports.items()
    ]


def describe_stage_type(name: str, cls: Any, origin: str) -> dict[str, Any]:
    return {
        "type": name,
        "kind": cls.kind,
        "origin": origin,
        "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
        "inputs": _ports(cls.inputs),
        "outputs": _ports(cls.outputs),
        "params": param_rows(cls.Params),
    }


def describe_sections(host: Any = None) -> dict[str, dict[str, Any]]:
    """The config sections that are not a stage's parameters, with the same live/restart marks
    the reloader reads (``[processing]``'s ema keys are the ema stage's parameters). Sections a
    plugin owns (``host``; default: the built-ins') name that plugin as their origin."""
    from hftagg.config.layers import section_models
    from hftagg.config.sections import builtin_host

    host = host if host is not None else builtin_host()
    owners = host.config_sections
    out = {}
    for name, models in section_models(host).items():
        origin = host.table_origin("config_sections", name) or "hftagg.config"
        out[name] = {
            "type": f"[{name}]",
            "kind": "section",
            "origin": origin,
            "doc": owners[name].doc if name in owners else "",
            "inputs": [],
            "outputs": [],
            "params": [row for model in models for row in param_rows(model)],
        }
    return out


def _default_text(row: dict[str, Any]) -> str:
    return "required" if row["required"] else f"default {row['default']!r}"


def _print_stage_type(d: dict[str, Any]) -> None:
    print(f"{d['type']} ({d['kind']}, from {d['origin']})" + (f": {d['doc']}" if d["doc"] else ""))
    ports = [("input", "<-", p) for p in d["inputs"]] + [("output", "->", p) for p in d["outputs"]]
    port_w = max((len(p["port"]) for *_, p in ports), default=0) + 2
    topic_w = max((len(p["topic"]) for *_, p in ports), default=0) + 2
    schema_w = max((len(p["schema"]) for *_, p in ports), default=0) + 2
    for direction, arrow, p in ports:
        print(
            f"    {direction:<7}{p['port']:<{port_w}}{arrow} {p['topic']:<{topic_w}}"
            f"{p['schema']:<{schema_w}}{p['doc']}".rstrip()
        )
    rows = [
        (r, r["type"] + (f" ({', '.join(r['bounds'])})" if r["bounds"] else ""))
        for r in d["params"]
    ]
    name_w = max((len(r["name"]) for r, _ in rows), default=0) + 2
    type_w = max((len(t) for _, t in rows), default=0) + 2
    default_w = max((len(_default_text(r)) for r, _ in rows), default=0) + 2
    for row, allowed in rows:
        mode = "live" if row["live"] else "restart"
        print(
            f"    {row['name']:<{name_w}}{allowed:<{type_w}}{_default_text(row):<{default_w}}"
            f"{mode:<9}{row['description']}".rstrip()
        )


def cmd_config_params(args: argparse.Namespace) -> int:
    """Every stage type's ports and parameters (or one type's)."""
    from hftagg.cli.common import config_path, suggest
    from hftagg.config.load import read_layers
    from hftagg.plugins.manager import load_plugins
    from hftagg.runtime.assemble import plugin_dirs

    path = config_path(args.config)
    host = load_plugins(plugin_dirs(read_layers(path), path))
    sections = describe_sections(host)
    known = sorted(host.stage_types)
    unknown = [t for t in args.types if t not in sections and t not in host.stage_types]
    for name in unknown:
        close = suggest(name, known + sorted(sections))
        hint = f" (did you mean {close!r}?)" if close else ""
        print(
            f"hftagg config params: unknown stage type {name!r}{hint}; known stage types: "
            f"{', '.join(known)}; sections: {', '.join(sorted(sections))}",
            file=sys.stderr,
        )
    if unknown:
        return 1
    if args.types:
        described = [
            sections[t]
            if t in sections
            else describe_stage_type(t, host.stage_type(t), host.stage_origin[t])
            for t in args.types
        ]
    else:
        described = [
            describe_stage_type(n, host.stage_type(n), host.stage_origin[n]) for n in known
        ]
        described += list(sections.values())
    if args.json:
        print(json.dumps(described, indent=2, default=str))
        return 0
    print(
        "ports: input/output PORT <- or -> default TOPIC, record schema (rewire with "
        'topics = { PORT = "topic" });\nparams: NAME, TYPE (bounds), default, live (applied '
        "from the next batch) or restart (the stage is rebuilt, state carried)\n"
    )
    for d in described:
        _print_stage_type(d)
    return 0
