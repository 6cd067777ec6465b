"""Built-in plugin: the ``fix`` codec family and the ``fix_decode`` protocol stage.

``fix_decode`` reads ``raw_chunk`` records holding a FIX byte stream (pieces split anywhere, or
whole datagrams when the chunk's flags bit 0 is set), keeps one decoder per stream
(``instrument_id`` of the chunk), and emits ``book_update``, ``trade`` and ``dead_letter``
batches. The ``fix_md`` source (:mod:`hftagg.builtins.protocols.fix.source`) runs a FIX session and
decodes in the same way.

FIX dictionaries are data: ``dictionary = "fix/FIX44.xml"`` (the default) is resolved against
the repository's ``protocols/`` folder (an absolute path is used as is), so a venue's
QuickFIX-format dictionary dropped there (its own MDEntryPx tag, extra MDEntryType values) is
usable from config with no code.

Instrument ids come from the instrument registry (``StageContext.instruments``): the distinct
Symbol (55) values (SecurityID (48) text with ``instrument_key = "security_id"``) of each chunk
are mapped in bulk by ``ids_for(venue, values)`` (``venue`` param, default ``"fix"``; ``fix_md``
defaults to the session's TargetCompID, the venue's own SenderCompID), so ``tail`` and
``store ls`` show the FIX symbols. The raw sources feeding this stage label chunks with their
stream id only: mapping to instruments is the decoder's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hftagg.builtins.protocols import fix
from hftagg.builtins.protocols.fix.dictionary import DEFAULT_DICTIONARY, Dictionary, load_dictionary
from hftagg.errors import ConfigError, Problem, SchemaError
from hftagg.hookspecs import hookimpl
from hftagg.records.catalog import BOOK_UPDATE, DEAD_LETTER, TRADE
from hftagg.stages import Params, Port, Stage, restart

__all__ = ["FIX_FAMILY", "FixCodecFamily", "FixDecode", "FixDecodeParams", "open_dictionary"]


def dictionary_problems(path: str, stage_id: str) -> list[tuple[str, str]]:
    """``open_dictionary``'s refusal, as a ``Stage.check`` problem (reading the file only)."""
    try:
        open_dictionary(path, stage_id)
    except ConfigError as exc:
        return [("dictionary", p.expected) for p in exc.problems]
    return []


def open_dictionary(path: str, stage_id: str) -> Dictionary:
    """Load a stage's ``dictionary``; a missing or broken file is a config error naming both."""
    try:
        return load_dictionary(path)
    except SchemaError as exc:
        raise ConfigError([Problem(f"dictionary (stage {stage_id!r})", path,
                                   str(exc))]) from exc  # fmt: skip


@dataclass(frozen=True)
class FixCodecFamily:
    """The FIX tag=value codec family.

    ``market_data_decoder(symbols, instrument_key=, begin_string=, source_id=)`` is an
    incremental :class:`hftagg.builtins.protocols.fix.MarketDataDecoder` (``feed`` bytes -> book, trades,
    dead letters); ``framer()`` a validated :class:`hftagg.builtins.protocols.fix.Framer`;
    ``reasons`` the dead-letter reason codes. Sessions: :mod:`hftagg.builtins.protocols.fix.session`.
    """

    name: str = "fix"
    description: str = ("FIX tag=value: validated framing, compiled 35=W/X market-data decoder, "
                        "FIX 4.4 sessions")  # fmt: skip
    begin_strings: tuple[str, ...] = ("FIX.4.2", "FIX.4.4", "FIXT.1.1")

    def market_data_decoder(self, symbols=None, **kwargs) -> fix.MarketDataDecoder:
        return fix.MarketDataDecoder(symbols, **kwargs)

    def framer(self, begin_string: str = "FIX.4.4") -> fix.Framer:
        return fix.Framer(begin_string)

    @property
    def reasons(self) -> dict[int, tuple[str, str]]:
        return dict(fix.REASONS)


FIX_FAMILY = FixCodecFamily()


class FixDecodeParams(Params):
    symbols: dict[str, int] = restart(
        {}, description="Symbol (55) -> instrument id to pin (0: the registry's id); optional"
    )
    instrument_key: Literal["symbol", "security_id"] = restart(
        "symbol", description="registry spelling from Symbol (55) or SecurityID (48) text"
    )
    venue: str = restart("fix", min_length=1, description="registry venue of the symbols")
    begin_string: str = restart("FIX.4.4", description="expected BeginString (8=)")
    max_body_bytes: int = restart(1 << 20, ge=64, le=1 << 30, description="largest BodyLength")
    dictionary: str = restart(
        DEFAULT_DICTIONARY,
        description="QuickFIX XML data dictionary (MD tags, entry types), relative to protocols/",
    )


class FixDecode(Stage):
    """FIX market data (35=W/X) from raw byte chunks to book updates, trades and dead letters."""

    kind = "protocol"
    type_name = "fix_decode"
    Params = FixDecodeParams
    inputs = {"raw": Port("raw_chunk", "raw.fix", "FIX byte stream chunks")}
    outputs = {
        "book": Port("book_update", "md.book", "market-by-price updates from 35=W/35=X"),
        "trades": Port("trade", "md.trades", "trade entries (269=2) of 35=X"),
        "dead_letters": Port(
            "dead_letter", "dead_letters.fix_decode", "garbled or unusable FIX input"
        ),
    }

    def check(self, ctx) -> list[tuple[str, str]]:
        return dictionary_problems(self.params.dictionary, self.stage_id)

    def open(self, ctx) -> None:
        self._decoders: dict[int, fix.MarketDataDecoder] = {}
        self._dictionary = open_dictionary(self.params.dictionary, self.stage_id)
        self._instruments = ctx.instruments

    def _decoder(self, stream: int) -> fix.MarketDataDecoder:
        decoder = self._decoders.get(stream)
        if decoder is None:
            p = self.params
            decoder = self._decoders[stream] = fix.MarketDataDecoder(
                p.symbols, instrument_key=p.instrument_key, begin_string=p.begin_string,
                source_id=stream, max_body=p.max_body_bytes, dictionary=self._dictionary,
                registry=self._instruments, venue=p.venue,
            )  # fmt: skip
        return decoder

    def process(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {"book": [], "trades": [], "dead_letters": []}
        for rec in batch:
            out = self._decoder(int(rec["instrument_id"])).feed(
                rec["data"][: int(rec["length"])], ts_recv=int(rec["ts_recv"]),
                final=bool(rec["flags"] & 1),
            )  # fmt: skip
            for port, part in (("book", out.book), ("trades", out.trades),
                               ("dead_letters", out.dead_letters)):  # fmt: skip
                if len(part):
                    parts[port].append(part.copy())
        empty = {"book": BOOK_UPDATE, "trades": TRADE, "dead_letters": DEAD_LETTER}
        return {port: np.concatenate(p) if p else empty[port].empty(0) for port, p in parts.items()}

    @property
    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for decoder in self._decoders.values():
            for key, value in decoder.counters.items():
                total[key] = total.get(key, 0) + value
        return total

    def snapshot(self) -> dict:
        return {stream: d.snapshot() for stream, d in self._decoders.items()}

    def restore(self, state: dict) -> None:
        for stream, decoder_state in state.items():
            self._decoder(int(stream)).restore(decoder_state)


@hookimpl
def hftagg_register_codecs(register):
    register(FIX_FAMILY)


@hookimpl
def hftagg_register_stage_types(register):
    register(FixDecode)
