"""`hftagg tail` in a subprocess against a real pynng publisher in this process."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest

from hftagg.bus.frame import FrameEncoder
from hftagg.plugins.manager import load_plugins
from hftagg.records import INDICATOR, QUOTE, TRADE
from hftagg.records.fixed import QTY_UNITS

from .conftest import hftagg_cmd

TS = 1_796_203_172_217_493_439  # 2026-12-02T09:19:32.217493439Z


@pytest.fixture
def push(address):
    publisher = (
        load_plugins([], entry_points=False)
        .transports["pynng"]
        .publisher(address, pattern="push", buffer_frames=64)
    )
    yield publisher
    publisher.close()


def test_format_records_shows_symbols_of_known_ids_only():
    from hftagg.cli.tail import format_records
    from hftagg.instruments import InstrumentRegistry

    registry = InstrumentRegistry()
    btc = registry.define("BTCUSD", "binance", venue_symbol="BTCUSDT")
    batch = TRADE.empty(3)
    batch["instrument_id"] = [btc.instrument_id, 12345, btc.instrument_id]
    text = format_records("md.trades", batch, "text", registry)
    assert f"instrument_id={btc.instrument_id} symbol=BTCUSD venue=binance side=" in text[0]
    assert "instrument_id=12345 side=" in text[1] and "symbol" not in text[1]
    rows = [json.loads(line) for line in format_records("md.trades", batch, "json", registry)]
    assert [r["symbol"] for r in rows] == ["BTCUSD", None, "BTCUSD"]
    assert format_records("md.trades", batch)[0].count("symbol") == 0  # no registry: ids only


def test_tail_instruments_reload_when_the_file_changes(tmp_path, monkeypatch):
    import argparse

    from hftagg.cli.tail import _Instruments
    from hftagg.instruments import hash_id

    (tmp_path / "config.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    errors: list[str] = []
    symbols = _Instruments(argparse.Namespace(config=None), errors.append, every_secs=0)
    assert symbols.current().get(hash_id("AAPL", "xnas")) is None

    (tmp_path / "instruments.toml").write_text('[[instrument]]\nsymbol = "AAPL"\nvenue = "xnas"\n')

    assert symbols.current().symbol(hash_id("AAPL", "xnas")) == "AAPL" and not errors
    (tmp_path / "instruments.toml").write_text("[[instrument]]\nsymbol = 1\n")  # broken
    assert symbols.current().symbol(hash_id("AAPL", "xnas")) == "AAPL"  # the last good one
    assert len(errors) == 1 and "instruments not loaded" in errors[0]


def trade_frame(offset: int) -> bytes:
    batch = TRADE.empty(2)
    batch["ts_event"] = TS
    batch["seq"] = [offset, offset + 1]
    batch["instrument_id"] = 7
    batch["side"] = ord("B")
    batch["price"] = [100_250_000_000, 100_000_000_001]  # 100.25 and 100.000000001
    batch["size"] = 3 * (QTY_UNITS if batch["size"].dtype == np.int64 else 1)  # 3 units
    return next(FrameEncoder("md.trades", TRADE, session_id=42).encode(batch, offset))


def ema_frame() -> bytes:
    batch = INDICATOR.empty(1)
    batch["ts_event"] = TS
    batch["value"] = 99.5
    return next(FrameEncoder("ind.ema", INDICATOR).encode(batch, 0))


def start_tail(address: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        hftagg_cmd("tail", "md.trades", "ind.ema", "--address", address, "--pattern", "push")
        + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stderr.readline()
    assert line.startswith(f"hftagg tail: waiting for md.trades, ind.ema at {address}"), line
    return proc


def send_mixed(push) -> None:
    not_utf8 = bytearray(ema_frame())
    not_utf8[4:6] = b"\xff\xfe"
    other = next(FrameEncoder("md.quotes", QUOTE).encode(QUOTE.empty(1), 0))
    for data in (b"", bytes(not_utf8), other, trade_frame(0), ema_frame()):
        push.send(data)


@pytest.mark.slow
def test_tail_prints_several_topics_readably_and_reports_what_it_skipped(address, push):
    tail = start_tail(address, "--count", "3", "--timeout", "30")
    send_mixed(push)
    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 0, err
    lines = out.splitlines()
    assert lines == [
        "md.trades ts_event=2026-12-02T09:19:32.217493439Z ts_recv=1970-01-01T00:00:00.000000000Z "
        "seq=0 instrument_id=7 symbol=MSFT venue=sim side=B flags=0 price=100.25 size=3",
        "md.trades ts_event=2026-12-02T09:19:32.217493439Z ts_recv=1970-01-01T00:00:00.000000000Z "
        "seq=1 instrument_id=7 symbol=MSFT venue=sim side=B flags=0 price=100.000000001 size=3",
        "ind.ema ts_event=2026-12-02T09:19:32.217493439Z ts_recv=1970-01-01T00:00:00.000000000Z "
        "seq=0 instrument_id=0 value=99.5",
    ]
    assert "skipped a frame it cannot decode (truncated)" in err
    assert "skipped a frame it cannot decode (topic): topic field" in err
    assert "2 frames could not be decoded and were skipped (topic 1, truncated 1)" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_tail_json_gives_exact_decimals_and_times(address, push):
    tail = start_tail(address, "--count", "2", "--timeout", "30", "--format", "json")
    push.send(trade_frame(0))
    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["price"] for r in rows] == ["100.25", "100.000000001"]
    assert rows[0]["topic"] == "md.trades" and rows[0]["side"] == "B"
    assert (rows[0]["symbol"], rows[0]["venue"]) == ("MSFT", "sim")  # the built-in instrument 7
    assert rows[0]["ts_event"] == "2026-12-02T09:19:32.217493439Z"
    assert rows[0]["ts_event_ns"] == TS and np.int64(rows[1]["seq"]) == 1


@pytest.mark.slow
def test_tail_stops_cleanly_on_ctrl_c_and_says_what_it_saw(address, push):
    tail = start_tail(address)
    push.send(trade_frame(0))
    push.send(trade_frame(10))  # records 2..9 never sent
    assert tail.stdout.readline().startswith("md.trades ")
    time.sleep(0.5)
    tail.send_signal(signal.SIGINT)
    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "8 records were lost between frames" in err


def aged_ema_frame(offset: int, age_ns: int, n: int = 100) -> bytes:
    batch = INDICATOR.empty(n)
    batch["seq"] = np.arange(offset, offset + n)
    batch["ts_recv"] = time.time_ns() - age_ns
    return next(FrameEncoder("ind.ema", INDICATOR, session_id=5).encode(batch, offset))


@pytest.mark.slow
def test_tail_latency_prints_live_lines_and_the_totals(address, push):
    tail = start_tail(address, "--latency", "--interval", "0.2", "--count", "200")
    push.send(aged_ema_frame(0, 30_000_000))  # received by "the pipeline" 30 ms ago
    live = tail.stdout.readline()
    push.send(aged_ema_frame(100, 30_000_000))
    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 0, err
    assert live.startswith("latency last 0.2s: ts_recv->here p50 "), live
    assert "(n=100)" in live and "pynng hop p99 " in live
    (total,) = out.splitlines()[-1:]
    assert total.startswith("latency total over 2 frames: ts_recv->here p50 "), total
    assert "(n=200)" in total
    p50 = total.split("p50 ")[1].split("  ")[0]  # e.g. "31.6 ms": at least the 30 ms age
    value, unit = p50.split()
    assert unit == "ms" and 30 <= float(value) < 1000, total
    assert not any(line.startswith("ind.ema ") for line in out.splitlines())  # no records
