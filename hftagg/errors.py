"""Exceptions raised by hftagg.

Every error derives from one root, so ``except HftaggError`` catches anything hftagg raises
on purpose. Library exceptions are translated at the boundary (``raise ConfigError(...) from exc``).

    HftaggError
    ├── ConfigError          a config, or the graph it describes, is wrong (a list of Problems:
    │                        bad keys and values, unknown topics, schema mismatches, cycles)
    ├── PluginError          a plugin failed to import or registered something invalid
    ├── SchemaError          an unknown schema, or a dtype that does not match its schema
    ├── FixedPointError      a value cannot be represented in its fixed-point field (also a
    │                        ValueError)
    ├── BusError             misuse of a ring (wrong dtype, unknown reader)
    │   └── BusTimeout       a blocking ring operation ran out of time
    ├── FrameError           a wire frame is malformed (bad magic, size, schema id, ...)
    ├── DbnFormatError       a DBN stream's header or records break the format (also a
    │                        ValueError; ``reason`` is its dead-letter reason code)
    ├── TransportError       a network transport could not open, send or receive
    ├── StorageError         stored data cannot be written or read (a bad segment header, a
    │                        locked topic, a path that is not a store); names file and offset
    │   └── CatalogUnusable  the archive's DuckDB catalog file cannot be opened (corrupt);
    │                        the store rebuilds it from the Parquet files
    ├── InstrumentError      an instrument definition is invalid, or two instruments would
    │                        share an ``instrument_id`` (also a ValueError); names both
    ├── StageFailed          a stage raised while opening or processing; the pipeline stopped
    └── ApplyError           a live change could not be applied; the pipeline runs on with its
                             previous config

Every class is defined here and exported from ``hftagg`` (a test checks both). The one
exception class elsewhere is ``hftagg.builtins.protocols.fix.session.RejectMessage``: not an error but a
signal a FIX application handler raises to have the session answer with a Reject (35=3); the
session catches it and it never leaves the session.

Messages name the thing (file, key, stage id, plugin, topic), the value found, and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ApplyError",
    "BusError",
    "BusTimeout",
    "CatalogUnusable",
    "ConfigError",
    "DbnFormatError",
    "FixedPointError",
    "FrameError",
    "HftaggError",
    "InstrumentError",
    "PluginError",
    "Problem",
    "SchemaError",
    "StageFailed",
    "StorageError",
    "TransportError",
]


class HftaggError(Exception):
    """Root of every exception hftagg raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where it is, what was found, what is expected."""

    key: str
    value: object
    expected: str
    source: str = ""

    _MISSING = object()

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        if self.value is Problem._MISSING:
            return f"{where}{self.key}: {self.expected}"
        return f"{where}{self.key} = {self.value!r}: {self.expected}"


MISSING = Problem._MISSING


class ConfigError(HftaggError):
    """The configuration is invalid; ``problems`` lists every problem found, one per line."""

    def __init__(self, problems: list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem(key="config", value=MISSING, expected=problems)]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PluginError(HftaggError):
    """A plugin failed to import, or registered something invalid or duplicated."""


class SchemaError(HftaggError):
    """A schema is unknown, duplicated, or does not match the data given."""


class FixedPointError(HftaggError, ValueError):
    """A value cannot be represented in its fixed-point field."""


class BusError(HftaggError):
    """A ring or reader was used wrongly."""


class BusTimeout(BusError):
    """A blocking ring operation did not complete within its timeout."""


class FrameError(HftaggError):
    """A wire frame is malformed."""


class TransportError(HftaggError):
    """A transport could not open, send or receive."""


class StorageError(HftaggError):
    """Stored data cannot be written or read; the message names the file (and byte offset)."""


class CatalogUnusable(StorageError):
    """The archive's catalog file exists but DuckDB cannot open it (corrupt, truncated, not a
    DuckDB file); readers fall back to the Parquet files, the store rebuilds it at its start."""


class DbnFormatError(HftaggError, ValueError):
    """A DBN stream is not what DBN says it must be; ``reason`` is a dead-letter reason code."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InstrumentError(HftaggError, ValueError):
    """An instrument definition is invalid, or two instruments would share an id."""


class StageFailed(HftaggError):
    """A stage raised while opening or processing; the pipeline stopped."""


class ApplyError(HftaggError):
    """A live change could not be applied; the pipeline runs on as it was.

    ``retryable`` is true when nothing was wrong with the change itself, only the moment (a
    thread was still inside one batch); the reloader then tries again before giving up."""

    retryable = False
