"""Built-in plugin: registers the record catalog (trades, quotes, book updates, ...)."""

from hftagg.hookspecs import hookimpl
from hftagg.records.catalog import BUILTIN_SCHEMAS


@hookimpl
def hftagg_register_schemas(register):
    for schema in BUILTIN_SCHEMAS:
        register(schema)
