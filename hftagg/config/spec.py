"""From a raw config dict to a typed pipeline spec: the seed's vocabulary on the stage graph.

``config.toml`` sections and what they become:

``[runtime]``                 ring sizes, batch maximum, status interval, plugin paths
``[data_sources.<name>]``     a source stage ``<name>``: ``type`` (stage type), ``format``
                              (``native``), ``fields`` (which streams: trades, book, quotes),
                              ``topic_prefix`` (default ``md``: topics ``md.trades`` ...), and the
                              source type's own parameters
``[processing]``              ``ema_window`` -> the built-in ``ema`` stage's ``window``;
                              ``use_mock_data = true`` runs every data source as the built-in
                              simulator (and adds one when none is configured)
``[stages.<id>]``             any other stage: ``type``, optional ``topics = {port = "topic"}``,
                              and the type's parameters
``[delivery]``                ``method`` (a transport: ``pynng``), ``target`` (address), ``topics``
                              -> the built-in ``publisher`` sink
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hftagg.errors import MISSING, ConfigError, Problem
from hftagg.telemetry.settings import TelemetrySection

__all__ = [
    "PipelineSpec",
    "ProcessingSection",
    "RuntimeSection",
    "StageSpec",
    "parse_spec",
    "pydantic_problems",
]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class RuntimeSection(_Section):
    status_interval_secs: float = Field(1.0, gt=0, le=3600)
    ring_capacity: int = Field(1 << 16, ge=16, le=1 << 26, description="records per topic ring")
    max_batch: int = Field(4096, ge=1, le=1 << 20, description="largest batch a stage is given")
    drain_timeout_secs: float = Field(5.0, ge=0, le=600)
    plugin_paths: list[str] = Field(default_factory=lambda: ["plugins"])


class ProcessingSection(_Section):
    ema_window: int = Field(20, ge=1, le=1_000_000, description="EMA span, in records")
    ema_seed: Literal["first", "sma"] = "first"
    ema_input: str = "md.trades"
    ema_output: str = "ind.ema"
    use_mock_data: bool = True
    enabled: bool = True


SOURCE_COMMON_KEYS = ("type", "format", "fields", "topic_prefix", "enabled")
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

    def key_of(self, param: str) -> str:
        return self.param_keys.get(param, f"{self.key}.{param}")


@dataclass
class PipelineSpec:
    runtime: RuntimeSection
    stages: list[StageSpec]
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # found while mapping (strict=False)
    telemetry: TelemetrySection = field(default_factory=TelemetrySection)


def pydantic_problems(
    exc: ValidationError, key_of, source: str, known: list[str] | None = None
) -> list[Problem]:
    """One Problem per pydantic error, keyed the way the user wrote it."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = key_of(loc[0]) + "".join(f".{p}" for p in loc[1:]) if loc else "?"
        if err["type"] == "extra_forbidden":
            expected = "unknown key" + (f"; known keys: {', '.join(known)}" if known else "")
        elif err["type"] == "missing":
            problems.append(Problem(key, MISSING, "required key is missing", source))
            continue
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


def _source_specs(raw: Any, processing: ProcessingSection, source: str, problems: list[Problem]):
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
        if table.get("enabled", True) is False:
            continue
        params = {k: v for k, v in table.items() if k not in SOURCE_COMMON_KEYS}
        type_name = table.get("type")
        if processing.use_mock_data and type_name != "simulator":
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
        specs.append(StageSpec(name, type_name, params, key, fields=fields, topics={"*": prefix}))
    return specs


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
        if table.get("enabled", True) is False:
            continue
        type_name = table.get("type")
        if not isinstance(type_name, str):
            problems.append(
                Problem(f"{key}.type", type_name, 'required: the stage type, e.g. "ema"', source)
            )
            continue
        topics = table.get("topics", {})
        reserved = ("type", "topics", "enabled", "policy")
        if isinstance(topics, list):  # a list is the stage's own parameter (e.g. publisher)
            topics, reserved = {}, ("type", "enabled", "policy")
        policy = _policy(table, key, source, problems)
        if not (isinstance(topics, dict) and all(isinstance(v, str) for v in topics.values())):
            problems.append(
                Problem(f"{key}.topics", topics, 'expected a table of port = "topic"', source)
            )
            topics = {}
        params = {k: v for k, v in table.items() if k not in reserved}
        specs.append(
            StageSpec(stage_id, type_name, params, key, topics=dict(topics), policy=policy)
        )
    return specs


def _processing_specs(processing: ProcessingSection) -> list[StageSpec]:
    if not processing.enabled:
        return []
    return [
        StageSpec(
            "ema",
            "ema",
            {"window": processing.ema_window, "seed": processing.ema_seed},
            "processing",
            topics={"input": processing.ema_input, "output": processing.ema_output},
            param_keys={"window": "processing.ema_window", "seed": "processing.ema_seed"},
        )
    ]


def _delivery_specs(raw: Any, source: str, problems: list[Problem]) -> list[StageSpec]:
    """``[delivery]`` is the built-in publisher's parameters (checked by its own model)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(Problem("delivery", raw, "expected a table", source))
        return []
    if raw.get("enabled", True) is False:
        return []
    params = {k: v for k, v in raw.items() if k not in ("enabled", "policy")}
    policy = _policy(raw, "delivery", source, problems)
    return [StageSpec("delivery", "publisher", params, "delivery", policy=policy)]


KNOWN_SECTIONS = ("runtime", "data_sources", "processing", "stages", "delivery", "telemetry")


def parse_spec(raw: dict[str, Any], source: str = "", *, strict: bool = True) -> PipelineSpec:
    """Map a raw (merged) config dict onto a PipelineSpec.

    ``strict``: raise ConfigError with every problem found. Otherwise the problems are kept on
    the spec so that graph building can add its own and report them all at once.
    """
    problems: list[Problem] = []
    for name in raw:
        if name not in KNOWN_SECTIONS:
            problems.append(
                Problem(
                    name,
                    raw[name],
                    f"unknown section; known sections: {', '.join(KNOWN_SECTIONS)}",
                    source,
                )
            )
    runtime = _section(RuntimeSection, raw.get("runtime"), "runtime", source, problems)
    telemetry = _section(TelemetrySection, raw.get("telemetry"), "telemetry", source, problems)
    processing = _section(ProcessingSection, raw.get("processing"), "processing", source, problems)
    stages = _source_specs(raw.get("data_sources", {}), processing, source, problems)
    if not stages and getattr(processing, "use_mock_data", True):
        stages.append(StageSpec("sim", "simulator", {}, "data_sources.sim", topics={"*": "md"}))
    elif not stages:
        problems.append(
            Problem(
                "data_sources",
                MISSING,
                "no data source configured: add [data_sources.<name>] "
                "or set processing.use_mock_data = true",
                source,
            )
        )
    stages += _processing_specs(processing)
    stages += _stage_specs(raw.get("stages", {}), source, problems)
    stages += _delivery_specs(raw.get("delivery"), source, problems)
    ids = [s.stage_id for s in stages]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        keys = [s.key for s in stages if s.stage_id == dup]
        problems.append(
            Problem(
                keys[-1],
                dup,
                f"stage id {dup!r} is used by {', '.join(keys)}; ids must be unique",
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
        runtime, stages, source=source, raw=raw, problems=problems, telemetry=telemetry
    )
