"""From a config file to a checked graph: read layers, discover plugins, map, build, validate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hftagg.builtins.protocols import protocol_dirs, set_search_path
from hftagg.config.layers import attribute, merge_layers
from hftagg.config.load import named_layers
from hftagg.config.paths import set_config_dir
from hftagg.config.spec import PipelineSpec, parse_spec
from hftagg.errors import ConfigError
from hftagg.plugins.manager import PluginHost, load_plugins
from hftagg.runtime.graph import Graph, build_graph
from hftagg.runtime.pipeline import Pipeline

__all__ = ["Assembled", "assemble", "plugin_dirs"]


@dataclass
class Assembled:
    host: PluginHost
    spec: PipelineSpec
    graph: Graph
    file_layer: dict[str, Any] | None = None  # the config file as read (None: no file)

    def pipeline(self, telemetry: Any = None) -> Pipeline:
        """A pipeline for this graph; ``telemetry``: a :class:`hftagg.telemetry.Telemetry`;
        with ``[durability] wal = true``, with its write-ahead log."""
        from hftagg.runtime.durability import durability_from

        pipeline = Pipeline(
            self.graph,
            self.spec.runtime,
            host=self.host,
            telemetry=telemetry,
            durability=durability_from(self.spec.raw),
        )
        pipeline.config_raw = self.spec.raw  # what the reloader compares restart-only sections to
        return pipeline


def plugin_dirs(raw: Mapping[str, Any], config_path: Path | None) -> list[Path]:
    """``runtime.plugin_paths``, relative to the config file's folder (or the current one)."""
    base = config_path.parent if config_path is not None else Path.cwd()
    runtime = raw.get("runtime", {})
    paths = runtime.get("plugin_paths", ["plugins"]) if isinstance(runtime, dict) else ["plugins"]
    if not isinstance(paths, list):
        paths = ["plugins"]  # parse_spec reports the bad value
    return [base / p for p in paths if isinstance(p, str)]


def assemble(
    config_path: Path | None,
    environ: Mapping[str, str] | None = None,
    host: PluginHost | None = None,
    consul: Mapping[str, Any] | None = None,
    remote: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> Assembled:
    """Config layers (file or built-in defaults, config sources, environment) -> plugins ->
    checked graph. ``remote``: ``(name, layer)`` of each config source (Consul, ...)."""
    layers = named_layers(config_path, environ, consul, remote=remote)
    raw, provenance = merge_layers(layers)
    set_config_dir(config_path)
    set_search_path(protocol_dirs(raw, config_path))
    if host is None:
        host = load_plugins(plugin_dirs(raw, config_path))
    where = str(config_path) if config_path else "(defaults)"
    spec = parse_spec(raw, where, strict=False, sections=host.config_sections)
    spec.problems = attribute(spec.problems, provenance)
    file_layer = layers[0][1] if config_path is not None else None
    try:
        return Assembled(host, spec, build_graph(spec, host), file_layer)
    except ConfigError as exc:
        raise ConfigError(attribute(exc.problems, provenance)) from None
