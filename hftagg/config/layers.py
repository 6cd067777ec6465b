"""Config layers with provenance: which layer each effective value came from, and whether it is
live-changeable.

Layers, lowest first: ``defaults`` (every section's built-in defaults and each configured stage's
parameter defaults), the config file (named by its path), ``consul``, then one layer per
``HFTAGG__SECTION__KEY`` variable (named ``env HFTAGG__SECTION__KEY``)::

    merged, sources = merge_layers([("defaults", defaults_layer(raw, host)), *named_layers(path)])
    sources["processing.ema_window"]  # -> "config.toml"
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel

from hftagg.config.sections import CORE_SECTION_MODELS, builtin_sections
from hftagg.config.spec import (
    SOURCE_COMMON_KEYS,
    PipelineSpec,
    RuntimeSection,
    parse_spec,
)
from hftagg.errors import PluginError, Problem
from hftagg.plugins.manager import PluginHost
from hftagg.telemetry.settings import TelemetrySection

__all__ = ["Liveness", "defaults_layer", "flatten", "liveness_of", "merge_layers"]

Liveness = Literal["live", "restart", "unknown"]

SECTION_MODELS = {
    "runtime": RuntimeSection,
    "telemetry": TelemetrySection,
}


def section_models(host: PluginHost | None = None) -> dict[str, list[type]]:
    """Every section with a model: the core's, then the plugin-owned ones (``host``; default:
    the built-ins'), each with the core's own keys in it (``processing.use_mock_data``)."""
    sections = host.config_sections if host is not None else builtin_sections()
    models: dict[str, list[type]] = {name: [model] for name, model in SECTION_MODELS.items()}
    for name, section in sections.items():
        if section.model is not None:
            models.setdefault(name, []).append(section.model)
    for name, model in CORE_SECTION_MODELS.items():
        models.setdefault(name, []).append(model)
    return models


SOURCE_DEFAULTS = {"format": "native", "topic_prefix": "md"}


def _forget(provenance: dict[str, str], key: str) -> None:
    """Drop ``key`` and everything under it (a layer replaced it as a whole)."""
    for k in [k for k in provenance if k == key or k.startswith(key + ".")]:
        del provenance[k]


def _merge_into(
    out: dict[str, Any], layer: Mapping[str, Any], name: str, prefix: str, prov: dict[str, str]
) -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            _merge_into(out[key], value, name, dotted + ".", prov)
            continue
        _forget(prov, dotted)
        if isinstance(value, Mapping):
            out[key] = {}
            _merge_into(out[key], value, name, dotted + ".", prov)
            if not value:
                prov[dotted] = name
        else:
            out[key] = copy.deepcopy(value)
            prov[dotted] = name


def merge_layers(
    layers: list[tuple[str, Mapping[str, Any]]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Deep-merge named layers (later win, tables merge); returns (merged, key -> layer name).

    The provenance map has one entry per leaf (a non-table value, or an empty table), keyed by
    its dotted path.
    """
    merged: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    for name, layer in layers:
        _merge_into(merged, layer, name, "", provenance)
    return merged, provenance


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested dict by dotted key (empty tables are leaves too)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _model_defaults(model: type[BaseModel]) -> dict[str, Any]:
    out = {}
    for name, info in model.model_fields.items():
        if not info.is_required():
            out[name] = info.get_default(call_default_factory=True)
    return out


def _set_dotted(out: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _spec(raw: Mapping[str, Any], host: PluginHost) -> PipelineSpec:
    return parse_spec(dict(raw), "(layers)", strict=False, sections=host.config_sections)


def defaults_layer(raw: Mapping[str, Any], host: PluginHost) -> dict[str, Any]:
    """Built-in defaults for ``raw`` (the merged config above defaults): the ``[runtime]``,
    ``[processing]`` and ``[telemetry]`` sections, and each configured stage's parameters (from
    its Params model)."""
    out: dict[str, Any] = {}
    for name, models in section_models(host).items():
        for model in models:
            out.setdefault(name, {}).update(_model_defaults(model))
    for stage in _spec(raw, host).stages:
        try:
            params = host.stage_type(stage.type_name).Params
        except PluginError:
            continue  # validation reports the unknown type
        for name, value in _model_defaults(params).items():
            _set_dotted(out, stage.key_of(name), value)
        if stage.key.startswith("data_sources."):
            for name, value in SOURCE_DEFAULTS.items():
                _set_dotted(out, f"{stage.key}.{name}", value)
    return out


def _params_by_key(raw: Mapping[str, Any], host: PluginHost) -> dict[str, tuple[type, str]]:
    out: dict[str, tuple[type, str]] = {}
    for stage in _spec(raw, host).stages:
        try:
            params = host.stage_type(stage.type_name).Params
        except PluginError:
            continue
        for name in params.model_fields:
            out[stage.key_of(name)] = (params, name)
    return out


def liveness_of(keys: list[str], raw: Mapping[str, Any], host: PluginHost) -> dict[str, Liveness]:
    """For each dotted key: ``live`` (a running pipeline applies it in place), ``restart``
    (needs a restart or a rebuild of the stage) or ``unknown`` (not a key hftagg knows)."""
    params = _params_by_key(raw, host)
    models = section_models(host)
    owned = set(host.config_sections)
    out: dict[str, Liveness] = {}
    for key in keys:
        out[key] = _liveness(key, params, models, owned)
    return out


STAGE_COMMON_KEYS = ("type", "topics", "enabled", "policy")


def _liveness(
    key: str, params: dict[str, tuple[type, str]], models: dict[str, list[type]], owned: set[str]
) -> Liveness:
    """The marks on the models decide: a stage's Params for its parameters (``processing.*``
    keys that feed the ema stage included), the section models for ``[runtime]``,
    ``[telemetry]`` and plugin-owned sections such as ``[processing]``. Keys that choose or wire
    a stage (type, topics, enabled, policy) rebuild it: ``restart``; so do the core's keys inside
    plugin-owned sections (``processing.use_mock_data``)."""
    head = key
    while True:  # the key, or the table-valued parameter it is inside (store's retention.*)
        if head in params:
            model, name = params[head]
            return "live" if model.is_live(name) else "restart"
        if head.count(".") < 3:
            break
        head = head.rsplit(".", 1)[0]
    section, _, rest = key.partition(".")
    for model in models.get(section, ()):
        if rest in model.model_fields:
            return "live" if model.is_live(rest) else "restart"
    if section in models and section not in owned:
        return "unknown"
    parts = rest.split(".")
    if section in owned:
        return "restart" if parts[0] in ("enabled", "policy", "on_error") else "unknown"
    if section in ("data_sources", "stages") and len(parts) >= 2:
        common = SOURCE_COMMON_KEYS if section == "data_sources" else STAGE_COMMON_KEYS
        if parts[1] in common:
            return "restart"
    return "unknown"


def attribute(problems: list[Problem], provenance: Mapping[str, str]) -> list[Problem]:
    """Name the layer each bad value came from (``consul``, ``env HFTAGG__...``), not the file."""
    out = []
    for problem in problems:
        origin = provenance.get(problem.key)
        if origin is None:  # a table: its leaves' layer, when they all come from one
            under = {v for k, v in provenance.items() if k.startswith(problem.key + ".")}
            origin = under.pop() if len(under) == 1 else None
        out.append(replace(problem, source=origin) if origin else problem)
    return out
