"""Built-in plugin: the ``[instruments]`` config section (where the instrument registry loads).

The section stands for no stage: ``hftagg run`` loads the registry from it
(:func:`hftagg.instruments.load_registry`) and hands it to every stage as
``StageContext.instruments``. Registered here so that its keys are checked (``config validate``
also loads the instruments file and the inline definitions, so a bad tick size or an id
collision is found before anything runs) and shown by ``hftagg config show``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hftagg.config.sections import ConfigSection
from hftagg.errors import MISSING, InstrumentError, Problem
from hftagg.hookspecs import hookimpl
from hftagg.instruments.files import InstrumentsSection, load_registry

__all__ = ["INSTRUMENTS"]


def _check(values: Any, source: str, problems: list[Problem]) -> list:
    table = values.model_dump(exclude_unset=True) if values is not None else {}
    config = Path(source) if source and Path(source).is_file() else None
    try:
        load_registry(config, {"instruments": table})
    except InstrumentError as exc:
        problems.append(Problem("instruments", MISSING, str(exc), source))
    return []


INSTRUMENTS = ConfigSection(
    "instruments",
    _check,
    model=InstrumentsSection,
    doc="the instrument registry: file (instruments.toml), builtin, [[instruments.define]]",
)


@hookimpl
def hftagg_register_config_sections(register):
    register(INSTRUMENTS)
