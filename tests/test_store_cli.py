"""``hftagg store ls`` on a store written here, and the default config's store stage end to end:
``hftagg run`` (a subprocess, on a copy of config.toml), then ``store ls`` and ``hftagg.read``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import hftagg
from hftagg.builtins.storage.store.stage import Store, StoreParams
from hftagg.cli import main
from hftagg.records.catalog import TRADE
from hftagg.stages import StageContext

from .conftest import ROOT, free_port, run_cli


def _write_trades(root, n=5_000):
    records = TRADE.empty(n)
    records["ts_event"] = 1_780_000_000_000_000_000 + np.arange(n) * 1_000_000
    records["instrument_id"] = np.arange(n) % 3 + 7
    store = Store(StoreParams(path=str(root), topics=["md.trades"], archive=False))
    store.open(StageContext(topic_schemas={"md.trades": TRADE}))
    store.write(records[:4_000], "md.trades", 0)
    store._seal(store._topics["md.trades"])
    store.write(records[4_000:], "md.trades", 4_000)  # left live: shown as live
    return store, records


def test_store_ls_lists_topics_records_range_instruments_bytes_and_segments(tmp_path, capsys):
    store, records = _write_trades(tmp_path / "st")
    try:
        code = main(["store", "ls", "--path", str(tmp_path / "st")])
        table = capsys.readouterr().out
        main(["store", "ls", "--path", str(tmp_path / "st"), "--json"])
        listing = json.loads(capsys.readouterr().out)
    finally:
        store.close()

    row = next(line for line in table.splitlines() if line.startswith("md.trades"))
    assert code == 0 and "trade@2" in row and "5,000" in row and "1/1" in row
    assert (
        "2026-05-28 20:26:40.000000000Z" in row and "3 (MSFT, EURUSD, 9)" in row
    )  # symbols the registry knows
    (topic,) = listing["topics"]
    assert topic["records"] == 5_000 and topic["instruments"] == [7, 8, 9]
    assert topic["symbols"] == ["MSFT", "EURUSD", "9"]
    assert topic["segments_live"] == 1 and topic["segments_sealed"] == 1
    assert topic["ts_max"] == int(records["ts_event"][-1]) and topic["bytes"] > 5_000 * 48


def test_store_ls_without_a_store_says_how_to_make_one(tmp_path, capsys):
    code = main(["store", "ls", "--path", str(tmp_path / "nothing")])

    assert code == 1 and "run a pipeline with a 'store' stage first" in capsys.readouterr().err


@pytest.mark.slow
def test_default_config_stores_market_data_that_ls_and_read_show(tmp_path):
    text = (ROOT / "config.toml").read_text()
    text = text.replace("tcp://127.0.0.1:5555", f"tcp://127.0.0.1:{free_port()}")
    text = text.replace("prometheus = true", "prometheus = false")
    (tmp_path / "config.toml").write_text(text)
    shutil.copytree(ROOT / "plugins", tmp_path / "plugins")
    shutil.copytree(ROOT / "protocols", tmp_path / "protocols")

    run = run_cli("run", "--duration", "4", "--summary-json", "s.json", cwd=tmp_path, timeout=600)
    ls = run_cli("store", "ls", "--json", cwd=tmp_path)
    trades = hftagg.read("md.trades", path=tmp_path / "storage")
    start = int(trades["ts_event"][len(trades) // 2])
    later = hftagg.read("md.trades", start=start, instruments=[trades["instrument_id"][0]],
                        path=tmp_path / "storage")  # fmt: skip

    assert run.returncode == 0, run.stderr
    stored = {t["topic"]: t["records"] for t in json.loads(ls.stdout)["topics"]}
    assert set(stored) == {"md.trades", "md.book", "ind.ema", "ind.mid", "ind.spread"}
    summary = json.loads((tmp_path / "s.json").read_text())
    assert sum(stored.values()) == summary["stages"]["store"]["records_in"] > 0
    assert len(trades) == stored["md.trades"] > 0
    assert len(later) > 0 and (later["ts_event"] >= start).all()
    assert (later["instrument_id"] == trades["instrument_id"][0]).all()
    assert trades.to_pandas()["ts_event"].dt.tz is not None
