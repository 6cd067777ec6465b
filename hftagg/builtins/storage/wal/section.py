"""Built-in plugin: the ``[durability]`` config section (the write-ahead log's settings).

The section stands for no stage: the runtime reads it (:mod:`hftagg.runtime.durability`) and
appends every source batch to the log when ``wal = true``. Registered here so that its keys are
checked, shown by ``hftagg config show`` and marked restart-only like any plugin's.
"""

from __future__ import annotations

from typing import Any

from hftagg.config.sections import ConfigSection
from hftagg.errors import Problem
from hftagg.hookspecs import hookimpl

__all__ = ["DURABILITY"]


def _no_stages(values: Any, source: str, problems: list[Problem]) -> list:
    return []


def _section() -> ConfigSection:
    from hftagg.runtime.durability import DurabilitySection

    return ConfigSection(
        "durability",
        _no_stages,
        model=DurabilitySection,
        doc="the write-ahead log: wal, path, fsync (none / interval_ms / every_batch), interval_ms",
    )


DURABILITY = _section()


@hookimpl
def hftagg_register_config_sections(register):
    register(DURABILITY)
