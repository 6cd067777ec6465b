"""Reading config layers: built-in defaults, ``config.toml``, Consul KV, then the environment.

Environment overrides use ``HFTAGG__SECTION__KEY=value`` (double underscores separate levels,
names are lower-cased); the value is read as a TOML value (``30``, ``true``, ``"x"``, ``[1, 2]``)
and as a plain string if it is not one. Secrets come only from the environment.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hftagg.errors import MISSING, ConfigError, Problem

__all__ = [
    "ENV_PREFIX",
    "env_layers",
    "env_overrides",
    "merge",
    "named_layers",
    "parse_value",
    "read_config_file",
    "read_layers",
]

ENV_PREFIX = "HFTAGG__"


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a ConfigError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [Problem(str(path), MISSING, "config file not found; pass --config FILE", "")]
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            [Problem("(file)", MISSING, f"TOML syntax error: {exc}", str(path))]
        ) from exc


def parse_value(raw: str) -> Any:
    """``raw`` read as a TOML value (``30``, ``true``, ``"x"``, ``[1, 2]``), else as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


_parse_env_value = parse_value


def _env_path(name: str) -> list[str]:
    return [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]


def env_layers(environ: Mapping[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """One layer per ``HFTAGG__A__B=value`` variable, named ``env HFTAGG__A__B``."""
    environ = os.environ if environ is None else environ
    layers = []
    for name, raw in environ.items():
        path = _env_path(name) if name.startswith(ENV_PREFIX) else []
        if not path:
            continue
        layer: dict[str, Any] = {path[-1]: parse_value(raw)}
        for part in reversed(path[:-1]):
            layer = {part: layer}
        layers.append((f"env {name}", layer))
    return layers


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The nested dict that ``HFTAGG__A__B=value`` variables describe."""
    out: dict[str, Any] = {}
    for _, layer in env_layers(environ):
        out = merge(out, layer)
    return out


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` onto a copy of ``base`` (tables merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def named_layers(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    consul: Mapping[str, Any] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The layers above the built-in defaults, lowest first, each named for provenance:
    the file (named by its path), ``consul``, then one ``env HFTAGG__...`` layer per variable."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((str(path), read_config_file(path)))
    if consul:
        layers.append(("consul", dict(consul)))
    return layers + env_layers(environ)


def read_layers(
    path: Path | None,
    environ: Mapping[str, str] | None = None,
    consul: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merged raw config: file (if any), then the Consul layer (if any), then the environment."""
    out: dict[str, Any] = {}
    for _, layer in named_layers(path, environ, consul):
        out = merge(out, layer)
    return out
