"""The instrument registry: canonical symbols, venue spellings, stable ids and definitions.

See :mod:`hftagg.instruments.ids` for how ids are made, :mod:`~hftagg.instruments.registry`
for the bulk look-ups sources use, :mod:`~hftagg.instruments.files` for where instruments
are loaded from (built-ins, ``instruments.toml``, ``[instruments]``).
"""

from hftagg.instruments.definition import DEFINITION_FIELDS, Instrument
from hftagg.instruments.files import (
    FILE_NAME,
    builtin_instruments,
    default_registry,
    instruments_file,
    load_registry,
    save_instruments,
    set_default_registry,
)
from hftagg.instruments.ids import hash_id, normalize_symbol, normalize_venue
from hftagg.instruments.registry import InstrumentRegistry

__all__ = [
    "DEFINITION_FIELDS",
    "FILE_NAME",
    "Instrument",
    "InstrumentRegistry",
    "builtin_instruments",
    "default_registry",
    "hash_id",
    "instruments_file",
    "load_registry",
    "normalize_symbol",
    "normalize_venue",
    "save_instruments",
    "set_default_registry",
]
