"""Exceptions raised by hftagg.

Every error derives from one root, so ``except HftaggError`` catches anything hftagg raises
on purpose. Library exceptions are translated at the boundary (``raise ConfigError(...) from exc``).

    HftaggError
    ├── ConfigError          a config, or the graph it describes, is wrong (a list of Problems:
    │                        bad keys and values, unknown topics, schema mismatches, cycles)
    ├── PluginError          a plugin failed to import or registered something invalid
    ├── SchemaError          an unknown schema, or a dtype that does not match its schema
    ├── BusError             misuse of a ring (wrong dtype, unknown reader)
    │   └── BusTimeout       a blocking ring operation ran out of time
    ├── FrameError           a wire frame is malformed (bad magic, size, schema id, ...)
    ├── TransportError       a network transport could not open, send or receive
    ├── StageFailed          (hftagg.runtime) a stage raised; the pipeline stopped
    └── ApplyError           (hftagg.runtime.apply) a live change could not be applied; the
                             pipeline runs on with its previous config

Messages name the thing (file, key, stage id, plugin, topic), the value found, and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BusError",
    "BusTimeout",
    "ConfigError",
    "FrameError",
    "HftaggError",
    "PluginError",
    "Problem",
    "SchemaError",
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


class BusError(HftaggError):
    """A ring or reader was used wrongly."""


class BusTimeout(BusError):
    """A blocking ring operation did not complete within its timeout."""


class FrameError(HftaggError):
    """A wire frame is malformed."""


class TransportError(HftaggError):
    """A transport could not open, send or receive."""
