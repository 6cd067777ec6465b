"""FIX in pipelines: the ``fix`` codec family, ``fix_decode`` stage and ``fix_md`` source."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from hftagg.builtins.protocols.fix import kernels
from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.session import Acceptor, SessionSettings
from hftagg.builtins.protocols.fix.source import FixMarketData
from hftagg.builtins.protocols.fix.stages import FixDecode
from hftagg.config.spec import RuntimeSection
from hftagg.errors import ConfigError
from hftagg.plugins.manager import load_plugins
from hftagg.records.catalog import RAW_CHUNK, RAW_CHUNK_BYTES
from hftagg.runtime.graph import graph_from_stages
from hftagg.runtime.pipeline import Pipeline
from hftagg.testing import TestingSink, TestingSource, run_pipeline
from tests.test_fix_session import MdServer

from .compiled import entry_points, uncompiled

SYMBOLS = {"EURUSD": 1, "GBPUSD": 2}


def wire(msg_type, body, seq=1):
    return m.encode("FIX.4.4", msg_type, "MD", "HFT", seq, body)


def chunks(data: bytes, size: int, stream: int = 5) -> np.ndarray:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    batch = RAW_CHUNK.empty(len(pieces))
    for i, piece in enumerate(pieces):
        batch["data"][i, : len(piece)] = np.frombuffer(piece, np.uint8)
        batch["length"][i] = len(piece)
        batch["instrument_id"][i] = stream
        batch["ts_recv"][i] = 1_000 + i
    return batch


def test_plugins_register_the_fix_family_and_stage_types():
    host = load_plugins([], entry_points=False)
    assert "fix" in host.codecs and host.codecs["fix"].name == "fix"
    assert host.stage_types["fix_decode"] is FixDecode
    assert host.stage_types["fix_md"] is FixMarketData
    decoder = host.codecs["fix"].market_data_decoder(SYMBOLS)
    assert len(decoder.feed(wire(*m.incremental_refresh([
        m.MdEntry("0", "1.5", 2, symbol="EURUSD")]))).book) == 1  # fmt: skip


def test_kernel_warm_compiles_the_framing_and_decoding_kernels():
    kernels.warm()

    compiled = {name.rsplit(".", 1)[1]: d for name, d in entry_points([kernels]).items()}
    assert {"frame", "decode_md"} <= set(compiled)
    assert uncompiled([kernels]) == []


def test_fix_decode_stage_decodes_a_stream_split_into_raw_chunks():
    update = m.incremental_refresh([m.MdEntry("0", "1.25", 3, symbol="GBPUSD", action="0")])
    good = b"".join(wire(*update, seq=i) for i in range(1, 200))
    data = good + b"!!garbage!!" + good
    assert len(data) > 3 * RAW_CHUNK_BYTES
    book, dead = [], []
    run_pipeline([
        TestingSource([chunks(data, 1000)[:5], chunks(data, 1000)[5:]], schema="raw_chunk"),
        FixDecode(symbols=SYMBOLS),
        TestingSink(book, topic="md.book"),
        TestingSink(dead, stage_id="dead", topic="dead_letters.fix_decode"),
    ])  # fmt: skip
    book, dead = np.concatenate(book), np.concatenate(dead)
    assert len(book) == 398 and set(book["instrument_id"].tolist()) == {2}
    assert book["seq"].tolist() == list(range(1, 399))
    assert dead["reason"].tolist() == [kernels.GARBAGE] and dead["source_id"].tolist() == [5]


class _Server:
    """An hftagg acceptor serving market data on its own event loop thread."""

    def __init__(self) -> None:
        self.app = MdServer()
        self.loop = asyncio.new_event_loop()
        self.acceptor = Acceptor([SessionSettings("MD", "HFTAGG", heartbeat_secs=1)], self.app)
        self.port = 0
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.acceptor.start("127.0.0.1", 0))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def close(self):
        self.call(self.acceptor.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def md_server():
    server = _Server()
    yield server
    server.close()


def test_fix_md_source_subscribes_and_publishes_decoded_records(md_server, monkeypatch, tmp_path):
    monkeypatch.setenv("FIX_MD_PASSWORD", "pw")
    source = FixMarketData(port=md_server.port, sender_comp_id="HFTAGG", target_comp_id="MD",
                           # a long heartbeat: on a loaded machine a 1 s one can time out,
                           # reconnect and resubscribe, and the exact counts below would change
                           symbols=SYMBOLS, heartbeat_secs=30, password_env="FIX_MD_PASSWORD",
                           venue="fix",  # the ids SYMBOLS pins, as fix_decode's venue above
                           store_path=str(tmp_path / "store"), reconnect_secs=0.1)  # fmt: skip
    book, trades, dead = [], [], []
    stages = [source, TestingSink(book, topic="md.book"),
              TestingSink(trades, stage_id="trades", topic="md.trades"),
              TestingSink(dead, stage_id="dead", topic="dead_letters.fix_md")]  # fmt: skip
    host = load_plugins([], entry_points=False)
    pipeline = Pipeline(graph_from_stages(stages, host), RuntimeSection(drain_timeout_secs=5),
                        host=host)  # fmt: skip
    pipeline.start()
    try:
        deadline = time.monotonic() + 60  # generous: a cold numba cache compiles here
        while sum(len(b) for b in book) < 6 or not trades:
            assert time.monotonic() < deadline, "no market data from the fix_md source"
            time.sleep(0.02)
        session = md_server.acceptor.sessions[-1]
        garbled = wire(*m.incremental_refresh([m.MdEntry("0", "1", 1, symbol="EURUSD")]), 99)
        # a bad checksum on the wire: change its last digit (always setting it to 9 left one
        # message in ten intact, as SendingTime varies, and the test then waited in vain)
        digit = garbled[-2] - ord("0")
        bad = garbled[:-2] + str((digit + 1) % 10).encode() + b"\x01"
        md_server.call(_write(session, bad))
        while not dead:
            assert time.monotonic() < deadline, "no dead letter for a garbled message"
            time.sleep(0.02)
    finally:
        pipeline.stop()
    book = np.concatenate(book)
    assert book["action"].tobytes() == b"RAARAA"
    assert sorted(set(book["instrument_id"].tolist())) == [1, 2]
    assert np.concatenate(trades)["price"].tolist() == [100_250_000_000, 100_250_000_000]
    assert np.concatenate(dead)["reason"].tolist() == [kernels.BAD_CHECKSUM]
    assert md_server.app.subscribed == set()  # unsubscribed (263=2) on close
    assert source.counters["md_messages"] == 4


async def _write(session, raw):
    session._write(raw)


def test_fix_md_refuses_to_start_without_its_password_variable(monkeypatch):
    monkeypatch.delenv("FIX_MD_MISSING", raising=False)
    source = FixMarketData(password_env="FIX_MD_MISSING")
    with pytest.raises(ConfigError, match="FIX_MD_MISSING"):
        source.open(None)
