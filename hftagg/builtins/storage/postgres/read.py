"""Reading a table back as records: one binary ``COPY ... TO STDOUT``, parsed with numpy."""

from __future__ import annotations

import numpy as np
import psycopg
from psycopg import sql

from hftagg.builtins.storage.postgres.layout import TableLayout
from hftagg.records.schema import Schema

__all__ = ["read_table"]


def read_table(
    conn: psycopg.Connection,
    table: str,
    schema: Schema,
    *,
    db_schema: str = "public",
    topic: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every row of ``db_schema.table`` (only ``topic``'s stream when given), in (stream,
    offset) order: ``(records, stream_offsets)``; records are of ``schema``'s dtype."""
    layout = TableLayout(schema)
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in layout.column_names)
    query = sql.SQL("SELECT {} FROM {}.{}").format(
        cols, sql.Identifier(db_schema), sql.Identifier(table)
    )
    if topic is not None:
        query += sql.SQL(
            " WHERE stream = (SELECT stream FROM {}.hftagg_streams WHERE topic = {})"
        ).format(sql.Identifier(db_schema), sql.Literal(topic))
    query += sql.SQL(" ORDER BY stream, stream_offset")
    data = bytearray()
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)) as copy:
            for block in copy:
                data += block
    records, _streams, offsets = layout.decode(bytes(data))
    return records, offsets
