"""Record schemas (numpy structured dtypes with a name and a version) and the built-in catalog."""

from hftagg.records.catalog import (
    ALERT,
    BAR,
    BOOK_UPDATE,
    BUILTIN_SCHEMAS,
    DEAD_LETTER,
    FILL,
    INDICATOR,
    MBP10,
    ORDER,
    QUOTE,
    RAW_CHUNK,
    RAW_CHUNK_BYTES,
    SIGNAL,
    TRADE,
    Action,
    Side,
)
from hftagg.records.schema import HEADER_FIELDS, PRICE_SCALE, Schema, SchemaRegistry, make_dtype

__all__ = [
    "ALERT", "BAR", "BOOK_UPDATE", "BUILTIN_SCHEMAS", "DEAD_LETTER", "FILL", "HEADER_FIELDS",
    "INDICATOR", "MBP10", "ORDER", "PRICE_SCALE", "QUOTE", "RAW_CHUNK", "RAW_CHUNK_BYTES", "SIGNAL", "TRADE", "Action",
    "Schema", "SchemaRegistry", "Side", "make_dtype",
]
