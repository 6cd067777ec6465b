"""FIX: validated framing, a compiled market-data decoder, a FIX 4.4 session layer and stores.

- :mod:`~hftagg.builtins.protocols.fix.decoder`: :class:`Framer` and :class:`MarketDataDecoder` (35=W/X
  to ``book_update``/``trade``/``dead_letter`` batches; kernels in :mod:`hftagg.builtins.protocols.fix.kernels`).
- :mod:`~hftagg.builtins.protocols.fix.session`: FIX 4.4 sessions over asyncio TCP (:func:`connect`,
  :class:`Acceptor`), with :mod:`~hftagg.builtins.protocols.fix.store` (memory or file stores).
- :mod:`~hftagg.builtins.protocols.fix.messages`: message building with simplefix.
- :mod:`~hftagg.builtins.protocols.fix.dictionary`: QuickFIX-format data dictionaries, data in
  ``protocols/fix/`` (:func:`load_dictionary`), and :mod:`~hftagg.builtins.protocols.fix.validate`,
  message validation with QuickFIX's rules and Reject reasons.

Dead-letter reason codes 0x0F00..0x0FFF belong to FIX (:data:`REASONS`).
"""

from hftagg.builtins.protocols.fix.decoder import Decoded, Framer, MarketDataDecoder, reason_name
from hftagg.builtins.protocols.fix.dictionary import Dictionary, load_dictionary
from hftagg.builtins.protocols.fix.kernels import REASONS
from hftagg.builtins.protocols.fix.messages import MdEntry, market_data_request
from hftagg.builtins.protocols.fix.session import (
    Acceptor,
    Application,
    RejectMessage,
    Session,
    SessionSettings,
    connect,
)
from hftagg.builtins.protocols.fix.store import FileStore, MemoryStore

__all__ = [
    "REASONS",
    "Acceptor",
    "Application",
    "Decoded",
    "Dictionary",
    "FileStore",
    "Framer",
    "MarketDataDecoder",
    "MdEntry",
    "MemoryStore",
    "RejectMessage",
    "Session",
    "SessionSettings",
    "connect",
    "load_dictionary",
    "market_data_request",
    "reason_name",
]
