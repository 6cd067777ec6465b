"""From a raw config dict to a typed pipeline spec: the seed's vocabulary on the stage graph.

``config.toml`` sections and what they become:

``[runtime]``                 ring sizes, batch maximum, status interval, plugin paths
``[data_sources.<name>]``     a source stage ``<name>``: ``type`` (stage type), ``format``
                              (``native``), ``fields`` (which streams: trades, book, quotes),
                              ``topic_prefix`` (default ``md``: topics ``md.trades`` ...), and the
                              source type's own parameters
``[stages.<id>]``             any other stage: ``type``, optional ``topics = {port = "topic"}``,
                              and the type's parameters
``[telemetry]``               tracing and metrics settings

Every other top-level table belongs to a plugin (:mod:`hftagg.config.sections`): in the shipped
set, ``[processing]`` (``ema_window`` -> the ``ema`` stage's ``window``) belongs to the EMA
plugin and ``[delivery]`` (``method``, ``target``, ``topics``) to the publisher plugin.
``processing.use_mock_data = true`` is the core's: it runs every data source as the simulator.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from hftagg.config.addresses import host_port_problem
from hftagg.config.sections import (
    CORE_SECTION_KEYS,
    CORE_SECTION_MODELS,
    ConfigSection,
    builtin_sections,
)
from hftagg.errors import MISSING, ConfigError, Problem
from hftagg.stages.params import Params, live, restart
from hftagg.telemetry.settings import TelemetrySection

__all__ = [
    "CORE_SECTIONS",
    "PipelineSpec",
    "RuntimeSection",
    "StageSpec",
    "check_enabled",
    "check_on_error",
    "check_policy",
    "parse_spec",
    "pydantic_problems",
]


class _Section(Params):
    """A config section: like stage parameters, each field is marked ``live`` (a running
    pipeline applies a change) or ``restart``; the reloader and ``hftagg config show`` both read
    these marks (:func:`hftagg.config.layers.liveness_of`)."""


WaitName = Literal["blocking", "yielding", "busy_spin", "sleeping"]


class RuntimeSection(_Section):
    status_interval_secs: float = live(1.0, gt=0, le=3600, description="status line interval")
    ring_bytes: int = restart(
        4 << 20,
        ge=4096,
        le=1 << 34,
        description="memory per topic ring, in bytes (records: the largest power of two that "
        "fits, at least 16); a topic nobody reads gets no ring",
    )
    ring_capacity: int = restart(
        0, ge=0, le=1 << 26, description="deprecated: records per topic ring (0: use ring_bytes)"
    )
    max_batch: int = restart(4096, ge=1, le=1 << 20, description="largest batch a stage is given")
    drain_timeout_secs: float = live(5.0, ge=0, le=600, description="how long stop may drain")
    plugin_paths: list[str] = restart(["plugins"], description="drop-in plugin folders")
    protocol_paths: list[str] = restart(
        ["protocols"], description="folders of your SBE schemas and FIX dictionaries"
    )
    wait: WaitName = restart(
        "blocking",
        description="how an idle thread waits for data: blocking (woken by the publish), "
        "yielding, busy_spin (burns a core; pin it with runtime.cpus) or sleeping",
    )
    waits: dict[str, WaitName] = restart(
        {}, description="wait strategy per thread: 'core' or a source/sink stage id"
    )
    cpus: dict[str, list[int]] = restart(
        {}, description="CPUs per thread ('core' or a source/sink stage id), pinned at start"
    )
    threading: Literal["threaded", "inline"] = restart(
        "threaded",
        description="threaded: sources, the core stages and each sink in their own threads; "
        "inline: a source's thread runs the core stages and the sinks for its batches (lowest "
        "latency, no hand-off)",
    )
    threaded_sinks: list[str] = restart(
        [], description='sinks that keep their own thread when threading = "inline" (slow I/O)'
    )
    allow_remove_all: bool = live(
        False,
        description="let a live change remove every data source or every [stages.*] stage, or "
        "apply an empty file (refused by default: an editor part-way through a save looks so)",
    )


SOURCE_COMMON_KEYS = ("type", "format", "fields", "topic_prefix", "enabled", "on_error")
SUPPORTED_FORMATS = ("native",)


@dataclass
class StageSpec:
    """One stage to build: id, type, raw parameters, topic overrides, and config key names."""

    stage_id: str
    type_name: str
    params: dict[str, Any]
    key: str  # where it lives in the config, e.g. "data_sources.sim"
    topics: dict[str, str] = field(default_factory=dict)
    fields: list[str] | None = None  # sources: which output ports are active
    param_keys: dict[str, str] = field(default_factory=dict)  # param name -> config key
    policy: str | None = None  # ring reader policy for its inputs (None: the stage's default)
    on_error: str | None = None  # stop | isolate (None: the stage type's default)
    mocked: StageSpec | None = None  # the source as configured, when use_mock_data replaced it
    builtin: bool = False  # added by hftagg's defaults, not declared in any config layer

    def key_of(self, param: str) -> str:
        return self.param_keys.get(param, f"{self.key}.{param}")


@dataclass
class PipelineSpec:
    runtime: RuntimeSection
    stages: list[StageSpec]
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # found while mapping (strict=False)
    notes: list[str] = field(default_factory=list)  # defaults or replacements worth saying
    telemetry: TelemetrySection = field(default_factory=TelemetrySection)


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    """`` (did you mean 'ema_window'?)`` for a likely typo of a known name, else ``""``."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def pydantic_problems(
    exc: ValidationError, key_of, source: str, known: list[str] | None = None
) -> list[Problem]:
    """One Problem per pydantic error, keyed the way the user wrote it."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = key_of(loc[0]) + "".join(f".{p}" for p in loc[1:]) if loc else "?"
        if err["type"] == "extra_forbidden":
            expected = "unknown key" + _did_you_mean(loc[-1] if loc else "", known or [])
            expected += f"; known keys: {', '.join(known)}" if known else ""
        elif err["type"] == "missing":
            problems.append(Problem(key, MISSING, "required key is missing", source))
            continue
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            expected = str(err["ctx"]["error"])  # a validator's own message, as written
        else:
            expected = err["msg"][0].lower() + err["msg"][1:]
        problems.append(Problem(key, err.get("input"), expected, source))
    return problems


def _section(model: type[_Section], raw: Any, name: str, source: str, problems: list[Problem]):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(Problem(name, raw, "expected a table", source))
        return model()
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        known = list(model.model_fields)
        problems.extend(pydantic_problems(exc, lambda p: f"{name}.{p}", source, known))
        return model.model_construct()


def _source_specs(raw: Any, use_mock_data: bool, source: str, problems: list[Problem]):
    if not isinstance(raw, dict):
        problems.append(
            Problem("data_sources", raw, "expected a table of [data_sources.<name>]", source)
        )
        return []
    specs = []
    for name, table in raw.items():
        key = f"data_sources.{name}"
        if not isinstance(table, dict):
            problems.append(Problem(key, table, "expected a table", source))
            continue
        if not _enabled(table, key, source, problems):
            continue
        params = {k: v for k, v in table.items() if k not in SOURCE_COMMON_KEYS}
        type_name = table.get("type")
        mocked: StageSpec | None = None
        if use_mock_data and type_name != "simulator" and isinstance(type_name, str):
            # still checked as configured (graph building validates it), then replaced
            mocked = StageSpec(name, type_name, params, key)
            type_name, params = "simulator", {}
        if not isinstance(type_name, str):
            problems.append(
                Problem(
                    f"{key}.type",
                    type_name,
                    'required: the source\'s stage type, e.g. "simulator"',
                    source,
                )
            )
            continue
        fmt = table.get("format", "native")
        if fmt not in SUPPORTED_FORMATS:
            problems.append(
                Problem(f"{key}.format", fmt, f"expected one of {list(SUPPORTED_FORMATS)}", source)
            )
        fields = table.get("fields")
        if fields is not None and not (
            isinstance(fields, list) and all(isinstance(f, str) for f in fields)
        ):
            problems.append(
                Problem(
                    f"{key}.fields",
                    fields,
                    'expected a list of stream names, e.g. ["trades", "book"]',
                    source,
                )
            )
            fields = None
        prefix = table.get("topic_prefix", "md")
        spec = StageSpec(name, type_name, params, key, fields=fields, topics={"*": prefix})
        spec.on_error = _on_error(table, key, source, problems)
        spec.mocked = mocked
        specs.append(spec)
    return specs


def _enabled(table: dict, key: str, source: str, problems: list[Problem]) -> bool:
    """``enabled`` must be a boolean: ``"no"`` or ``0`` is reported, not read as true."""
    value = table.get("enabled", True)
    if isinstance(value, bool):
        return value
    problems.append(
        Problem(
            f"{key}.enabled", value, "expected true or false (a TOML boolean, unquoted)", source
        )
    )
    return True  # built anyway, so that its own problems are reported too


POLICIES = ("lossless", "drop_oldest", "latest_only")


def _policy(table: dict, key: str, source: str, problems: list[Problem]) -> str | None:
    policy = table.get("policy")
    if policy is not None and policy not in POLICIES:
        problems.append(
            Problem(
                f"{key}.policy",
                policy,
                f"expected one of {', '.join(POLICIES)} (how this stage reads its "
                f"input rings: lossless applies backpressure, the others skip "
                f"and count)",
                source,
            )
        )
        return None
    return policy


ON_ERROR = ("stop", "isolate")


def _on_error(table: dict, key: str, source: str, problems: list[Problem]) -> str | None:
    value = table.get("on_error")
    if value is not None and value not in ON_ERROR:
        problems.append(
            Problem(
                f"{key}.on_error",
                value,
                'expected "stop" (a raising stage stops the pipeline) or "isolate" (its input '
                "batch goes to dead letters with the exception and the rest runs on)",
                source,
            )
        )
        return None
    return value


def _ring_size_notes(raw: Any, source: str) -> list[str]:
    """``runtime.ring_capacity`` (records; 0 or absent: unset) still works, with a note."""
    if not isinstance(raw, dict) or not raw.get("ring_capacity"):
        return []
    overrides = (
        f"; it overrides runtime.ring_bytes = {raw['ring_bytes']!r}" if "ring_bytes" in raw else ""
    )
    return [
        f"{source}: runtime.ring_capacity = {raw['ring_capacity']!r} is deprecated: it counts "
        f"records, so rings of large records take far more memory than small ones (a 4 KiB "
        f"raw chunk ring of 65536 records is 256 MiB); use runtime.ring_bytes, the memory "
        f"per ring, and remove ring_capacity (it still applies until then{overrides})"
    ]


def _stage_specs(raw: Any, source: str, problems: list[Problem]) -> list[StageSpec]:
    if not isinstance(raw, dict):
        problems.append(Problem("stages", raw, "expected a table of [stages.<id>]", source))
        return []
    specs = []
    for stage_id, table in raw.items():
        key = f"stages.{stage_id}"
        if not isinstance(table, dict):
            problems.append(Problem(key, table, "expected a table", source))
            continue
        if not _enabled(table, key, source, problems):
            continue
        type_name = table.get("type")
        if not isinstance(type_name, str):
            problems.append(
                Problem(f"{key}.type", type_name, 'required: the stage type, e.g. "ema"', source)
            )
            continue
        topics = table.get("topics", {})
        reserved = ("type", "topics", "enabled", "policy", "on_error")
        if isinstance(topics, list):  # a list is the stage's own parameter (e.g. publisher)
            topics, reserved = {}, ("type", "enabled", "policy", "on_error")
        policy = _policy(table, key, source, problems)
        if not (isinstance(topics, dict) and all(isinstance(v, str) for v in topics.values())):
            problems.append(
                Problem(f"{key}.topics", topics, 'expected a table of port = "topic"', source)
            )
            topics = {}
        params = {k: v for k, v in table.items() if k not in reserved}
        spec = StageSpec(stage_id, type_name, params, key, topics=dict(topics), policy=policy)
        spec.on_error = _on_error(table, key, source, problems)
        specs.append(spec)
    return specs


check_enabled = _enabled
check_policy = _policy
check_on_error = _on_error


def _use_mock_data(raw: dict[str, Any], source: str, problems: list[Problem]) -> bool:
    """``processing.use_mock_data``: the core's key in the seed's ``[processing]`` table."""
    (name, model), *_ = CORE_SECTION_MODELS.items()
    table = raw.get(name)
    mine = (
        {k: v for k, v in table.items() if k in model.model_fields}
        if isinstance(table, dict)
        else {}
    )
    return bool(getattr(_section(model, mine, name, source, problems), "use_mock_data", False))


def _plugin_section(section: ConfigSection, raw: Any, source: str, problems: list[Problem]):
    """The stage specs one plugin-owned section stands for (its core keys taken out first)."""
    core = CORE_SECTION_KEYS.get(section.name, ())
    if isinstance(raw, dict) and core:
        raw = {k: v for k, v in raw.items() if k not in core}
    values = raw
    if section.model is not None:
        values = _section(section.model, raw, section.name, source, problems)
    return list(section.to_stages(values, source, problems))


def _telemetry_problems(telemetry: TelemetrySection, source: str) -> list[Problem]:
    """The metrics endpoint's address, checked as the server will when it starts."""
    address = getattr(telemetry, "prometheus_address", None)
    if not getattr(telemetry, "prometheus", False) or address is None:
        return []
    allow = bool(getattr(telemetry, "allow_remote", False))
    problem = host_port_problem(address, allow, "telemetry.allow_remote")
    return [Problem("telemetry.prometheus_address", address, problem, source)] if problem else []


CORE_SECTIONS = ("runtime", "data_sources", "stages", "telemetry")


def parse_spec(
    raw: dict[str, Any],
    source: str = "",
    *,
    strict: bool = True,
    sections: Mapping[str, ConfigSection] | None = None,
) -> PipelineSpec:
    """Map a raw (merged) config dict onto a PipelineSpec.

    ``strict``: raise ConfigError with every problem found. Otherwise the problems are kept on
    the spec so that graph building can add its own and report them all at once.
    ``sections``: the plugin-owned sections (``host.config_sections``); default: the built-ins'.
    """
    if sections is None:
        sections = builtin_sections()
    problems = _unknown_sections(raw, (*CORE_SECTIONS, *sections), source)
    runtime = _section(RuntimeSection, raw.get("runtime"), "runtime", source, problems)
    telemetry = _section(TelemetrySection, raw.get("telemetry"), "telemetry", source, problems)
    problems += _telemetry_problems(telemetry, source)
    use_mock_data = _use_mock_data(raw, source, problems)
    stages = _source_specs(raw.get("data_sources", {}), use_mock_data, source, problems)
    notes = [
        f"{s.key}: processing.use_mock_data = true runs the simulator instead of "
        f"type {s.mocked.type_name!r}"
        + (
            f" (its parameters {', '.join(sorted(s.mocked.params))} are not used)"
            if s.mocked.params
            else ""
        )
        for s in stages
        if s.mocked is not None
    ]
    notes += _ring_size_notes(raw.get("runtime"), source)
    if not stages and "data_sources" not in problem_keys(problems):
        stages.append(
            StageSpec("sim", "simulator", {}, "data_sources.sim", topics={"*": "md"}, builtin=True)
        )
        notes.append(
            "data_sources: none configured (or all disabled), so the built-in simulator 'sim' "
            "runs; add [data_sources.<name>] to use a real feed"
        )
    # the seed's order: sources, sections, [stages.*], then sections marked last (sinks)
    stages += _sections_stages(sections, raw, False, source, problems)
    stages += _stage_specs(raw.get("stages", {}), source, problems)
    stages += _sections_stages(sections, raw, True, source, problems)
    ids = [s.stage_id for s in stages]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        keys = [s.key for s in stages if s.stage_id == dup]
        problems.append(
            Problem(
                keys[-1],
                dup,
                f"stage id {dup!r} is used by {', '.join(keys)}; ids must be unique: "
                f"rename [{keys[-1]}]"
                + "".join(
                    f" ([{k}] runs the {dup!r} stage; set {k}.enabled = false to run only yours)"
                    for k in keys
                    if k in sections
                ),
                source,
            )
        )
    for spec in stages:
        if "." in spec.stage_id or not spec.stage_id:
            problems.append(
                Problem(
                    spec.key,
                    spec.stage_id,
                    "a stage id must be non-empty and contain no '.' (dots belong to topics)",
                    source,
                )
            )
    if problems and strict:
        raise ConfigError(problems)
    return PipelineSpec(
        runtime,
        stages,
        source=source,
        raw=raw,
        problems=problems,
        telemetry=telemetry,
        notes=notes,
    )


def problem_keys(problems: list[Problem]) -> set[str]:
    """The top-level sections that ``problems`` are about."""
    return {p.key.split(".")[0] for p in problems}


def _unknown_sections(raw: dict[str, Any], known: tuple[str, ...], source: str) -> list[Problem]:
    return [
        Problem(
            name,
            raw[name],
            f"unknown section{_did_you_mean(name, known)}; known sections: {', '.join(known)}",
            source,
        )
        for name in raw
        if name not in known and not _only_core_keys(name, raw[name])
    ]


def _sections_stages(
    sections: Mapping[str, ConfigSection],
    raw: dict[str, Any],
    last: bool,
    source: str,
    problems: list[Problem],
) -> list[StageSpec]:
    out: list[StageSpec] = []
    for name, section in sections.items():
        if section.last == last:
            out += _plugin_section(section, raw.get(name), source, problems)
    return out


def _only_core_keys(name: str, table: Any) -> bool:
    """A table that holds only keys the core reads (``[processing] use_mock_data``)."""
    core = CORE_SECTION_KEYS.get(name)
    return bool(core) and isinstance(table, dict) and set(table) <= set(core)
