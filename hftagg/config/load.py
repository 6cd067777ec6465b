"""Reading config layers: built-in defaults, ``config.toml``, Consul KV, then the environment.

Environment overrides use ``HFTAGG__SECTION__KEY=value`` (double underscores separate levels,
names are lower-cased); the value is read as a TOML value (``30``, ``true``, ``"x"``, ``[1, 2]``)
and as a plain string if it is not one. Secrets come only from the environment.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping, Sequence
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


MAX_DEPTH = 32  # tables and arrays nested deeper than this are refused (no config needs it)


def _file_problem(path: Path, expected: str) -> ConfigError:
    return ConfigError([Problem("(file)", MISSING, expected, str(path))])


def read_text(path: Path) -> str:
    """The file as text; a ConfigError naming the file, what is wrong and the fix otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [Problem(str(path), MISSING, "config file not found; pass --config FILE", "")]
        ) from None
    except IsADirectoryError:
        raise _file_problem(
            path, "is a directory, not a config file; pass the TOML file, e.g. DIR/config.toml"
        ) from None
    except OSError as exc:
        raise _file_problem(
            path, f"cannot be read ({exc.strerror}); check its permissions"
        ) from exc
    if b"\0" in data:
        at = data.index(b"\0")
        raise _file_problem(
            path,
            f"is a binary file (a NUL byte at offset {at}), not TOML text; pass the config.toml",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _file_problem(
            path,
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}, line "
            f"{line}); save it as UTF-8",
        ) from None


def depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar: 0)."""
    stack, deepest = [(value, 0)], 0
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def loads(text: str, where: str = "") -> dict[str, Any]:
    """TOML text -> dict; syntax errors and too-deep nesting become ConfigErrors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("(file)", MISSING, f"TOML syntax error: {exc}", where)]) from exc
    except RecursionError:
        raise ConfigError(
            [
                Problem(
                    "(file)",
                    MISSING,
                    f"tables or arrays are nested too deeply to read (hftagg reads at most "
                    f"{MAX_DEPTH} levels); flatten them",
                    where,
                )
            ]
        ) from None
    if depth(data) > MAX_DEPTH:
        raise ConfigError(
            [
                Problem(
                    "(file)",
                    MISSING,
                    f"tables or arrays are nested {depth(data)} levels deep; hftagg reads at "
                    f"most {MAX_DEPTH}: flatten them",
                    where,
                )
            ]
        )
    return data


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML file; every way it can be unreadable (missing, a directory, binary, not
    UTF-8, a syntax error, nested too deeply) becomes a ConfigError naming the file."""
    return loads(read_text(path), str(path))


def parse_value(raw: str) -> Any:
    """``raw`` read as a TOML value (``30``, ``true``, ``"x"``, ``[1, 2]``), else as a string
    (also when it is nested too deeply to read as a value)."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw
    return raw if depth(value) > MAX_DEPTH else value


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
    *,
    remote: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> list[tuple[str, dict[str, Any]]]:
    """The layers above the built-in defaults, lowest first, each named for provenance:
    the file (named by its path), each config source's layer (``remote``: ``(name, layer)``
    from :func:`hftagg.config.sources.source_layers`; ``consul`` is the older spelling of one),
    then one ``env HFTAGG__...`` layer per variable."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        layers.append((str(path), read_config_file(path)))
    if consul:
        layers.append(("consul", dict(consul)))
    layers += [(name, dict(layer)) for name, layer in remote if layer]
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
