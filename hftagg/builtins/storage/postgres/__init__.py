"""Built-in plugin: the ``postgres`` storage sink (binary COPY; TimescaleDB hypertables or native
daily partitions) and the table layout and migrations behind ``hftagg store migrate``."""

from __future__ import annotations

from hftagg.hookspecs import hookimpl

__all__: list[str] = []


@hookimpl
def hftagg_register_stage_types(register):
    from hftagg.builtins.storage.postgres.sink import PostgresSink

    register(PostgresSink)
