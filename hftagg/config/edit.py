"""Editing ``config.toml`` in place: one key at a time, comments and layout kept.

``hftagg config set processing.ema_window 30`` goes through :func:`set_value`: the file is parsed
with tomlkit (which keeps comments, blank lines, ordering and spacing), the one value is replaced
(its inline comment stays), the whole new config is validated, and only then is the file
replaced atomically (temp file in the same folder, fsync, ``os.replace``, mode kept).
"""

from __future__ import annotations

import os
import stat
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import AoT, InlineTable, Item, Table

from hftagg.config.load import loads, read_text
from hftagg.errors import MISSING, ConfigError, Problem

__all__ = [
    "inline_table",
    "parse_value",
    "remove_key",
    "set_item",
    "set_value",
    "write_atomic",
]

_TABLES = (Table, InlineTable, tomlkit.TOMLDocument)


def parse_value(raw: str) -> Item:
    """``raw`` as a TOML value (``30``, ``true``, ``"x"``, ``[1, 2]``, ``{a = 1}``), else a string."""
    try:
        return tomlkit.parse(f"v = {raw}\n")["v"]
    except tomlkit.exceptions.TOMLKitError:
        return tomlkit.item(raw)


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def _read_document(path: Path) -> tuple[str, tomlkit.TOMLDocument]:
    text = read_text(path)
    loads(text, str(path))  # syntax and nesting depth, reported as for any config read
    try:
        return text, tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError as exc:
        raise ConfigError(
            [Problem("(file)", MISSING, f"TOML syntax error: {exc}", str(path))]
        ) from exc


def _new_table(parent: Any) -> Any:
    return tomlkit.inline_table() if isinstance(parent, InlineTable) else tomlkit.table()


def _walk(doc: tomlkit.TOMLDocument, parts: list[str], key: str, source: str) -> tuple[Any, bool]:
    """The table that holds the last part of ``key`` (creating missing tables on the way), and
    whether that table is new."""
    node: Any = doc
    created = False
    for depth, part in enumerate(parts[:-1]):
        created = part not in node
        if created:
            node[part] = _new_table(node)
            node = node[part]
            continue
        node = node[part]
        if isinstance(node, AoT) or not isinstance(node, _TABLES):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(
                [Problem(where, _plain(node), f"is a value, not a table; cannot set {key}", source)]
            )
    return node, created


def set_value(
    path: Path,
    key: str,
    raw_value: str,
    validate: Callable[[dict], None] | None = None,
) -> tuple[object, object]:
    """Set dotted ``key`` in the TOML file at ``path`` to ``raw_value``; returns (old, new).

    ``old`` is None when the key did not exist. ``validate`` receives the whole new config as a
    plain dict and raises ConfigError to refuse it; then nothing is written. A table value
    (``{type = "sma", window = 5}``) is written as a ``[section.key]`` table and replaces a
    table already there as a whole (one change, validated as one).
    """
    return set_item(path, key, parse_value(raw_value), validate, shown=raw_value)


def _check_key(key: str, shown: object, path: Path) -> list[str]:
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(
            [Problem(key, shown, "expected a dotted key such as processing.ema_window", str(path))]
        )
    return parts


def inline_table(value: dict) -> InlineTable:
    """A plain dict as a TOML inline table (``{a = 1, b = {c = "x"}}``), nested ones too."""
    table = tomlkit.inline_table()
    for name, item in value.items():
        table[name] = inline_table(item) if isinstance(item, dict) else item
    return table


def _as_table(value: InlineTable) -> Table:
    """``{a = 1, topics = {x = "y"}}`` as a ``[section]`` table (nested tables stay inline),
    followed by a blank line like the tables around it."""
    table = tomlkit.table()
    for name, item in value.unwrap().items():
        table[name] = inline_table(item) if isinstance(item, dict) else item
    table.add(tomlkit.nl())
    return table


def set_item(
    path: Path,
    key: str,
    item: Item,
    validate: Callable[[dict], None] | None = None,
    shown: object = None,
) -> tuple[object, object]:
    """:func:`set_value` with the value already a tomlkit item (e.g. a whole stage's table)."""
    path = Path(path)
    shown = _plain(item) if shown is None else shown
    parts = _check_key(key, shown, path)
    text, doc = _read_document(path)
    table, created = _walk(doc, parts, key, str(path))
    last = parts[-1]
    old = _plain(table[last]) if last in table else None
    is_table = isinstance(item, InlineTable)
    if isinstance(table.get(last), Table | AoT) and not is_table:
        raise ConfigError([Problem(key, old, "is a table; set one of its keys instead", str(path))])
    if is_table and not isinstance(table, InlineTable):
        item = _as_table(item)
        if created and isinstance(table, Table):
            table._is_super_table = True  # [stages.x] alone, no empty [stages] header
            created = False
    table[last] = item
    if created and isinstance(table, Table):
        table.add(tomlkit.nl())  # a new table: a blank line before whatever follows, like others
    new_plain = _write_validated(path, text, doc, key, shown, validate)
    node: Any = new_plain
    for part in parts:
        node = node[part]
    return old, node


def remove_key(
    path: Path, key: str, validate: Callable[[dict], None] | None = None
) -> tuple[object, dict]:
    """Remove dotted ``key`` (a value, or a table such as ``stages.mid``) from the file at
    ``path``; returns (old value, new config). Validated as a whole before anything is written."""
    path = Path(path)
    parts = _check_key(key, MISSING, path)
    text, doc = _read_document(path)
    node: Any = doc
    for depth, part in enumerate(parts):
        if not isinstance(node, _TABLES) or part not in node:
            where = ".".join(parts[:depth]) or "the file"
            known = sorted(node) if isinstance(node, _TABLES) else []
            raise ConfigError(
                [Problem(key, MISSING, f"not in {where}; its keys are {known}", str(path))]
            )
        if depth < len(parts) - 1:
            node = node[part]
    old = _plain(node[parts[-1]])
    del node[parts[-1]]
    return old, _write_validated(path, text, doc, key, MISSING, validate)


def _write_validated(
    path: Path,
    text: str,
    doc: tomlkit.TOMLDocument,
    key: str,
    shown: object,
    validate: Callable[[dict], None] | None,
) -> dict:
    new_text = tomlkit.dumps(doc)
    if new_text.endswith("\n\n") and not text.endswith("\n\n"):
        new_text = new_text.rstrip("\n") + "\n"
    try:
        new_plain = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as exc:  # tomlkit produced something tomllib refuses
        raise ConfigError([Problem(key, shown, f"cannot be written: {exc}", str(path))]) from exc
    if validate is not None:
        validate(new_plain)
    if new_text != text:
        write_atomic(path, new_text.encode("utf-8"))
    return new_plain


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
