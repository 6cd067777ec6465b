"""FIX and SBE over WebSocket: the raw message bytes go to the existing protocol decoders.

- ``data_format = "fix"``: every message's bytes (text or binary frames) are FIX 4.4 market
  data (35=W / 35=X), joined in arrival order and fed to the compiled
  :class:`~hftagg.builtins.protocols.fix.decoder.MarketDataDecoder` once per batch; Symbol (55)
  maps to instrument ids through the instrument registry (``fix_symbols`` at ``venue``).
- ``data_format = "sbe"``: binary frames carry framed SBE messages (``sbe_framing``: length2 or
  sofh) of ``sbe_schema``; each connection's bytes are one byte stream (a frame may span
  messages) cut into ``raw_chunk`` records and handed to an embedded ``sbe_decode`` stage.
"""

from __future__ import annotations

import numpy as np

from hftagg.builtins.sources.websocket.connection import MessageBatch
from hftagg.records.catalog import RAW_CHUNK, RAW_CHUNK_BYTES
from hftagg.stages import StageContext

__all__ = ["FixFormat", "SbeFormat"]


class FixFormat:
    ports = ("trades", "book")

    def __init__(self, ctx: StageContext, venue: str, symbols: list[str], dictionary: str):
        from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder
        from hftagg.builtins.protocols.fix.stages import open_dictionary

        ids = ctx.instruments.ids_for(venue, symbols).tolist() if symbols else []
        dictionary = open_dictionary(dictionary, "websocket")
        self.decoder = MarketDataDecoder(
            dict(zip(symbols, ids, strict=True)), dictionary=dictionary
        )

    def decode(self, batch: MessageBatch) -> dict[str, np.ndarray]:
        out = self.decoder.feed(b"".join(batch.messages), ts_recv=int(batch.ts_recv[-1]))
        return {"trades": out.trades, "book": out.book, "dead_letters": out.dead_letters}


class SbeFormat:
    ports = ("trades", "book", "mbp10")

    def __init__(self, ctx: StageContext, stage_id: str, schema: str, framing: str):
        from hftagg.builtins.protocols.sbe.stages import SbeDecode

        self.stage = SbeDecode(stage_id=f"{stage_id}_sbe", schema=schema, framing=framing)
        problems = self.stage.check(ctx)
        if problems:
            raise ValueError(f"websocket source {stage_id!r}: sbe_schema: {problems[0][1]}")
        self.stage.open(ctx)
        self.seq = 0

    def decode(self, batch: MessageBatch) -> dict[str, np.ndarray]:
        chunks = []
        conn = batch.connection if len(batch.connection) else np.zeros(len(batch), np.uint32)
        edges = np.flatnonzero(np.diff(conn.astype(np.int64))) + 1
        for run in np.split(np.arange(len(batch)), edges):
            data = np.frombuffer(b"".join(batch.messages[i] for i in run.tolist()), np.uint8)
            chunks.append(self._chunks(data, int(conn[run[0]]), int(batch.ts_recv[run[-1]])))
        out = self.stage.process(np.concatenate(chunks))
        return {k: v for k, v in out.items() if len(v) or k != "dead_letters"}

    def _chunks(self, data: np.ndarray, stream: int, ts_recv: int) -> np.ndarray:
        n = max(1, -(-len(data) // RAW_CHUNK_BYTES))
        out = np.zeros(n, RAW_CHUNK.dtype)
        for k in range(n):
            piece = data[k * RAW_CHUNK_BYTES : (k + 1) * RAW_CHUNK_BYTES]
            out["data"][k, : len(piece)] = piece
            out["length"][k] = len(piece)
        out["flags"] = 0  # pieces of the connection's byte stream
        out["instrument_id"] = stream
        out["ts_recv"] = out["ts_event"] = ts_recv
        out["seq"] = np.arange(self.seq, self.seq + n, dtype=np.uint64)
        self.seq += n
        return out
