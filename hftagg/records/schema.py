"""Schemas: named, versioned numpy structured dtypes, and the registry that finds them.

A schema's ``schema_id`` is a 32-bit fingerprint of its name, version and exact field layout,
so two processes agree on it without coordination and a layout change can never be decoded
with an old dtype by mistake.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from hftagg.errors import SchemaError

__all__ = ["HEADER_FIELDS", "PRICE_SCALE", "Schema", "SchemaRegistry", "make_dtype"]

#: Prices are int64 fixed-point: 1 unit = 1e-9 (the DBN convention).
PRICE_SCALE = 1e-9

#: The header every market-data record starts with.
HEADER_FIELDS: list[tuple[str, str]] = [
    ("ts_event", "<i8"),  # venue time, UNIX ns
    ("ts_recv", "<i8"),  # local receive time, UNIX ns
    ("seq", "<u8"),  # per-stream, per-instrument sequence number
    ("instrument_id", "<u4"),
]


def make_dtype(fields: list[tuple], *, header: bool = True) -> np.dtype:
    """A C-aligned structured dtype with the common header first (unless ``header=False``)."""
    return np.dtype((HEADER_FIELDS if header else []) + list(fields), align=True)


@dataclass(frozen=True)
class Schema:
    """A record type: ``name`` (``"trade"``), ``version`` and its numpy ``dtype``."""

    name: str
    version: int
    dtype: np.dtype
    doc: str = ""
    schema_id: int = field(init=False)

    def __post_init__(self) -> None:
        if not self.name or "@" in self.name:
            raise SchemaError(
                f"schema name {self.name!r} is invalid: use a non-empty name without '@'"
            )
        if self.dtype.names is None:
            raise SchemaError(f"schema {self.name!r}: dtype {self.dtype} is not a structured dtype")
        descr = repr(self.dtype.descr) + f"/{self.dtype.itemsize}"
        fingerprint = zlib.crc32(f"{self.name}@{self.version}:{descr}".encode())
        object.__setattr__(self, "schema_id", fingerprint)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def empty(self, n: int = 0) -> np.ndarray:
        """A zeroed batch of ``n`` records of this schema."""
        return np.zeros(n, dtype=self.dtype)

    def __str__(self) -> str:
        return self.key


class SchemaRegistry:
    """Schemas by name (newest version wins for a bare name), by ``name@version`` and by id."""

    def __init__(self) -> None:
        self._by_key: dict[str, Schema] = {}
        self._by_id: dict[int, Schema] = {}
        self._latest: dict[str, Schema] = {}
        self.origin: dict[str, str] = {}

    def register(self, schema: Schema, origin: str = "") -> Schema:
        existing = self._by_key.get(schema.key)
        if existing is not None:
            if existing.dtype == schema.dtype:
                return existing
            raise SchemaError(
                f"schema {schema.key} from {origin or 'unknown'} conflicts with the one from "
                f"{self.origin.get(schema.key, 'unknown')}: same name and version, different "
                f"fields; bump the version of the new one"
            )
        self._by_key[schema.key] = schema
        self._by_id[schema.schema_id] = schema
        self.origin[schema.key] = origin
        latest = self._latest.get(schema.name)
        if latest is None or schema.version > latest.version:
            self._latest[schema.name] = schema
        return schema

    def get(self, name: str) -> Schema:
        """Look up ``"trade"`` (newest version) or ``"trade@2"``."""
        schema = self._by_key.get(name) if "@" in name else self._latest.get(name)
        if schema is None:
            known = ", ".join(sorted(self._by_key)) or "none"
            raise SchemaError(f"unknown schema {name!r}; registered schemas: {known}")
        return schema

    def by_id(self, schema_id: int) -> Schema:
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise SchemaError(
                f"unknown schema id 0x{schema_id:08x}: the sender uses a schema this process has "
                f"not registered (load the plugin that defines it)"
            ) from None

    def by_dtype(self, dtype: np.dtype) -> Schema:
        matches = [s for s in self._latest.values() if s.dtype == dtype]
        if not matches:
            matches = [s for s in self._by_key.values() if s.dtype == dtype]
        if not matches:
            raise SchemaError(f"no registered schema has dtype {dtype}; pass schema= explicitly")
        return matches[0]

    def __contains__(self, name: str) -> bool:
        return (name in self._by_key) if "@" in name else (name in self._latest)

    def __iter__(self):
        return iter(sorted(self._by_key.values(), key=lambda s: s.key))

    def __len__(self) -> int:
        return len(self._by_key)

    # -- used by the plugin host: a plugin's schemas come and go with it -----------------------

    def state(self) -> tuple:
        """An opaque copy of the registry's content, for :meth:`restore` (reload rollback)."""
        return dict(self._by_key), dict(self.origin)

    def restore(self, state: tuple) -> None:
        """Put back what :meth:`state` returned; the registry object itself stays the same."""
        by_key, origin = state
        self._by_key, self.origin = dict(by_key), dict(origin)
        self._reindex()

    def forget(self, origin: str, keep: dict[str, str] | None = None) -> list[str]:
        """Drop the schemas ``origin`` registered; returns their keys.

        ``keep`` maps a key to another plugin that registered the identical schema too: that key
        stays, owned by that plugin.
        """
        gone = [key for key, owner in self.origin.items() if owner == origin]
        for key in gone:
            if keep and key in keep:
                self.origin[key] = keep[key]
            else:
                del self._by_key[key], self.origin[key]
        self._reindex()
        return [k for k in gone if not (keep and k in keep)]

    def _reindex(self) -> None:
        self._by_id = {s.schema_id: s for s in self._by_key.values()}
        self._latest = {}
        for schema in self._by_key.values():
            latest = self._latest.get(schema.name)
            if latest is None or schema.version > latest.version:
                self._latest[schema.name] = schema
