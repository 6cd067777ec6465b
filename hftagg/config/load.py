"""Reading config layers: built-in defaults, ``config.toml``, then the environment.

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

__all__ = ["ENV_PREFIX", "env_overrides", "merge", "read_config_file", "read_layers"]

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
        raise ConfigError([Problem("(file)", MISSING, f"TOML syntax error: {exc}", str(path))]) from exc


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The nested dict that ``HFTAGG__A__B=value`` variables describe."""
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw)
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


def read_layers(
    path: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Merged raw config: file (if any) under environment overrides."""
    data = read_config_file(path) if path is not None else {}
    return merge(data, env_overrides(environ))
