"""Built-in plugin: the ``fix_md`` source, a FIX 4.4 market-data session feeding the fast decoder.

The source runs an initiator session (:mod:`hftagg.builtins.protocols.fix.session`) on its own asyncio
loop in a background thread: it logs on, subscribes with a MarketDataRequest (35=V, 263=1) for
``symbols``, and hands the raw bytes of every 35=W/35=X (and of garbled input) to the pipeline
thread, where ``next_batch`` decodes them in one compiled pass per call into ``book_update``,
``trade`` and ``dead_letter`` batches. On disconnect it reconnects after ``reconnect_secs``;
with ``store_path`` set, sequence numbers survive restarts and gaps are recovered by resend.
On close it unsubscribes (263=2) and logs out.

``dictionary`` (default ``fix/FIX44.xml``, relative to ``protocols/``) is the QuickFIX-format
data dictionary the decoder takes its tag numbers and entry types from and, with ``validate``,
the session checks application messages against (QuickFIX's rules and Reject reasons; off by
default because QuickFIX's FIX 4.4 dictionary lacks RptSeq in X entries and MDPriceLevel).

The password is never a parameter: ``password_env`` names the environment variable holding it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import warnings
from typing import Literal

import numpy as np

from hftagg.builtins.protocols.fix import messages
from hftagg.builtins.protocols.fix.decoder import MarketDataDecoder
from hftagg.builtins.protocols.fix.dictionary import DEFAULT_DICTIONARY
from hftagg.builtins.protocols.fix.session import Application, Session, SessionSettings, connect
from hftagg.builtins.protocols.fix.stages import dictionary_problems, open_dictionary
from hftagg.builtins.protocols.fix.store import FileStore, MemoryStore
from hftagg.config.paths import config_relative
from hftagg.hookspecs import hookimpl
from hftagg.stages import Params, Port, SourceStage, StageContext, restart

__all__ = ["FixMarketData", "FixMarketDataParams"]

log = logging.getLogger("hftagg.fix")


# ``validate`` is the parameter's name in config (QuickFIX's word); it shadows pydantic's
# deprecated ``BaseModel.validate()`` classmethod, which nothing here uses.
warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)


class FixMarketDataParams(Params):
    host: str = restart("127.0.0.1", description="FIX acceptor host")
    port: int = restart(9878, ge=1, le=65535)
    sender_comp_id: str = restart("HFTAGG", min_length=1, description="our SenderCompID (49)")
    target_comp_id: str = restart("MD", min_length=1, description="their CompID (56)")
    symbols: dict[str, int] = restart(
        {}, description="Symbol (55) to subscribe -> instrument id to pin (0: the registry's id)"
    )
    instrument_key: Literal["symbol", "security_id"] = restart(
        "symbol", description="registry spelling from Symbol (55) or SecurityID (48) text"
    )
    venue: str = restart("", description="registry venue of the symbols (empty: target_comp_id)")
    heartbeat_secs: int = restart(30, ge=1, le=3600, description="HeartBtInt (108)")
    username: str = restart("", description="Username (553), empty for none")
    password_env: str = restart("", description="environment variable holding Password (554)")
    store_path: str = restart(
        "", description="file store directory (relative to the config file); empty: in memory"
    )
    reset_on_logon: bool = restart(False, description="ResetSeqNumFlag (141=Y) on Logon")
    market_depth: int = restart(0, ge=0, description="MarketDepth (264), 0 = full book")
    reconnect_secs: float = restart(5.0, ge=0.05, le=3600)
    begin_string: str = restart("FIX.4.4")
    dictionary: str = restart(
        DEFAULT_DICTIONARY, description="QuickFIX XML data dictionary, relative to protocols/"
    )
    validate: bool = restart(
        False, description="Reject messages (application and admin) the dictionary does not allow"
    )
    logon_timeout_secs: float = restart(
        10.0, gt=0, le=3600, description="seconds to wait for the Logon answer"
    )
    max_latency_secs: float = restart(
        120.0, ge=0, description="SendingTime tolerance against our clock (0: no check)"
    )
    max_queued_messages: int = restart(
        10_000, ge=1, description="out-of-order messages held for a gap; more: Logout"
    )


class _Feed(Application):
    """Session callbacks: collect W/X and garbled bytes for the pipeline thread."""

    def __init__(self, source: FixMarketData) -> None:
        self.source = source

    def on_logon(self, session: Session) -> None:
        p = self.source.params
        symbols = list(p.symbols)
        msg_type, body = messages.market_data_request(self.source.req_id, symbols,
                                                      depth=p.market_depth)  # fmt: skip
        asyncio.ensure_future(session.send(msg_type, body))

    def on_message(self, session: Session, message, raw: bytes) -> None:
        if message.get(35) in (b"W", b"X"):
            self.source._push(raw)
        elif message.get(35) == b"Y":
            log.warning("FIX market data request rejected: %s", message.get(58))

    def on_garbled(self, session: Session, reason: int, raw: bytes) -> None:
        self.source._push(raw)


class FixMarketData(SourceStage):
    """A FIX market-data session (initiator) decoded into book updates and trades."""

    type_name = "fix_md"
    Params = FixMarketDataParams
    outputs = {
        "book": Port("book_update", "md.book", "market-by-price updates from 35=W/35=X"),
        "trades": Port("trade", "md.trades", "trade entries (269=2)"),
        "dead_letters": Port("dead_letter", "dead_letters.fix_md", "garbled or unusable FIX input"),
    }

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        """The dictionary and the password variable, checked without connecting."""
        p = self.params
        problems = dictionary_problems(p.dictionary, self.stage_id)
        if p.password_env and p.password_env not in os.environ:
            problems.append(("password_env", f"this environment variable (the password) is "
                                             f"not set; export {p.password_env}=... before "
                                             f"starting"))  # fmt: skip
        return problems

    def open(self, ctx: StageContext) -> None:
        p = self.params
        self.req_id = f"{self.stage_id}-1"
        self.settings = SessionSettings(
            p.sender_comp_id, p.target_comp_id, begin_string=p.begin_string,
            heartbeat_secs=p.heartbeat_secs, reset_on_logon=p.reset_on_logon,
            username=p.username or None, password_env=p.password_env or None,
            dictionary=p.dictionary, validate=p.validate,
            logon_timeout_secs=p.logon_timeout_secs, max_latency_secs=p.max_latency_secs,
            max_queued_messages=p.max_queued_messages,
        )  # fmt: skip
        self.settings.password()  # fail now, naming the variable, if it is not set
        dictionary = open_dictionary(p.dictionary, self.stage_id)
        # the venue's own SenderCompID (our TargetCompID) names it in the registry by default
        self._decoder = MarketDataDecoder(p.symbols, instrument_key=p.instrument_key,
                                          begin_string=p.begin_string, dictionary=dictionary,
                                          registry=ctx.instruments,
                                          venue=p.venue or p.target_comp_id)  # fmt: skip
        self._store: MemoryStore = (FileStore(config_relative(p.store_path),
                                              self.settings.session_id)
                                    if p.store_path else MemoryStore())  # fmt: skip
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        self._received_ns = 0
        self.session: Session | None = None
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._shutdown_task: asyncio.Future | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"fix_md:{self.stage_id}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    # -- session thread ----------------------------------------------------------------------

    def _push(self, raw: bytes) -> None:
        with self._lock:
            self._pending.append(raw)
            self._received_ns = time.time_ns()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._session_loop())

    async def _session_loop(self) -> None:
        p = self.params
        while not self._stop.is_set():
            try:
                self.session = await connect(p.host, p.port, self.settings, _Feed(self),
                                             self._store)  # fmt: skip
                self.connected.set()
                await self.session.wait_closed()
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("fix_md %s: %s; retrying in %gs", self.stage_id, exc, p.reconnect_secs)
            self.connected.clear()
            waited = 0.0
            while waited < p.reconnect_secs and not self._stop.is_set():
                await asyncio.sleep(0.05)
                waited += 0.05
        if self._shutdown_task is not None:
            await self._shutdown_task

    def _begin_shutdown(self) -> None:
        """On the session loop: no more reconnects; unsubscribe and log out."""
        self._stop.set()
        self._shutdown_task = asyncio.ensure_future(self._shutdown())

    async def _shutdown(self) -> None:
        session = self.session
        if session is not None and session.active:
            msg_type, body = messages.market_data_request(self.req_id, list(self.params.symbols),
                                                          subscribe=False)  # fmt: skip
            await session.send(msg_type, body)
            await session.logout("fix_md closing", timeout=2.0)

    # -- SourceStage -------------------------------------------------------------------------

    def next_batch(self) -> dict[str, np.ndarray] | None:
        with self._lock:
            if not self._pending:
                return None
            raw, self._pending = b"".join(self._pending), []
            ts_recv = self._received_ns
        out = self._decoder.feed(raw, ts_recv=ts_recv)
        return {"book": out.book, "trades": out.trades, "dead_letters": out.dead_letters}

    @property
    def counters(self) -> dict[str, int]:
        counters = dict(self._decoder.counters)
        if self.session is not None:
            counters.update({f"session_{k}": v for k, v in self.session.counters.items()})
        return counters

    def snapshot(self) -> dict:
        return {"decoder": self._decoder.snapshot()}

    def restore(self, state: dict) -> None:
        self._decoder.restore(state["decoder"])

    def close(self) -> None:
        if not hasattr(self, "_thread"):
            return
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._begin_shutdown)
        else:
            self._stop.set()
        self._thread.join(timeout=5.0)
        self._store.close()


@hookimpl
def hftagg_register_stage_types(register):
    register(FixMarketData)
