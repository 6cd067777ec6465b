"""``hftagg symbols list|show|add`` against a real instruments file next to a config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hftagg.cli import main
from hftagg.instruments import hash_id, load_registry
from tests.test_query import store  # noqa: F401 - the fixture: a store with md.trades


@pytest.fixture
def folder(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text("# empty: built-in defaults\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_add_then_show_and_list(folder, capsys):
    rc = main(["symbols", "add", "BTCUSD", "--venue", "binance", "--venue-symbol", "BTCUSDT",
               "--tick-size", "0.01", "--lot-size", "0.00001", "--asset-class", "spot"])  # fmt: skip
    out = capsys.readouterr().out
    assert (
        rc == 0 and f"added BTCUSD on binance: instrument_id {hash_id('BTCUSD', 'binance')}" in out
    )

    assert main(["symbols", "show", "BTCUSDT", "--venue", "binance"]) == 0
    shown = capsys.readouterr().out
    assert "venue symbol     BTCUSDT" in shown and "10000000 price units" in shown

    assert main(["symbols", "list", "--venue", "binance", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["symbol"], r["venue_symbol"], r["tick_size"]) for r in rows] == [
        ("BTCUSD", "BTCUSDT", "0.01")
    ]
    assert main(["symbols", "list", "BTC*"]) == 0
    table = capsys.readouterr().out
    assert "binance" in table and "sim" in table and "2 of 9 instruments" in table

    # an update keeps the fields not given
    assert main(["symbols", "add", "BTCUSD", "--venue", "binance", "--currency", "usdt"]) == 0
    inst = load_registry(folder / "config.toml").get(hash_id("BTCUSD", "binance"))
    assert (inst.currency, str(inst.tick_size), inst.venue_symbol) == ("USDT", "0.01", "BTCUSDT")


def test_add_refuses_a_collision_and_a_bad_tick_without_writing(folder, capsys):
    assert main(["symbols", "add", "AAPL", "--venue", "xnas"]) == 0
    taken = hash_id("AAPL", "xnas")
    rc = main(["symbols", "add", "ESZ6", "--venue", "glbx.mdp3", "--instrument-id", str(taken)])
    err = capsys.readouterr().err
    assert rc == 1 and f"instrument_id {taken} collision" in err and "'AAPL' on 'xnas'" in err
    rc = main(["symbols", "add", "X", "--venue", "cme", "--tick-size", "0.0000000001"])
    assert rc == 1 and "tick_size" in capsys.readouterr().err
    assert "ESZ6" not in (folder / "instruments.toml").read_text()
    assert 'symbol = "X"' not in (folder / "instruments.toml").read_text()


def test_show_unknown_symbol_suggests(folder, capsys):
    assert main(["symbols", "show", "BTCUSX"]) == 1
    err = capsys.readouterr().err
    assert "no instrument 'BTCUSX'" in err and "did you mean BTCUSD" in err


def test_show_by_id_and_list_filters(folder, capsys):
    assert main(["symbols", "show", "4"]) == 0
    assert "ESZ6" in capsys.readouterr().out
    assert main(["symbols", "list", "--asset-class", "future", "--json"]) == 0
    assert sorted(r["symbol"] for r in json.loads(capsys.readouterr().out)) == ["ESZ6", "NQZ6"]


def test_config_validate_finds_a_bad_instrument_definition(folder, capsys):
    (folder / "config.toml").write_text(
        '[[instruments.define]]\nsymbol = "BTCUSD"\nvenue = "binance"\ntick_size = "0.0000000001"\n'
    )
    assert main(["config", "validate"]) == 1
    err = capsys.readouterr().err
    assert "[[instruments.define]] #1" in err and "tick_size = '0.0000000001'" in err
    (folder / "config.toml").write_text('[instruments]\nfile = "missing.toml"\n')
    assert main(["config", "validate"]) == 1
    assert "missing.toml" in capsys.readouterr().err


def test_query_joins_the_instruments_table_for_symbols(store, capsys):  # noqa: F811
    root, every = store
    sql = (
        "SELECT i.symbol, i.venue, i.tick_size, count(*) AS n FROM md_trades t "
        "JOIN instruments i USING (instrument_id) GROUP BY ALL ORDER BY n DESC, 1"
    )
    assert main(["query", sql, "--path", str(root), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)

    registry = load_registry(None, {})
    ids, counts = np.unique(every["instrument_id"], return_counts=True)
    expected = sorted(
        ((registry.symbol(i), int(n)) for i, n in zip(ids, counts, strict=True) if i in registry),
        key=lambda r: (-r[1], r[0]),
    )
    assert [(r["symbol"], r["n"]) for r in rows] == expected and expected
    assert {(r["venue"], str(r["tick_size"])) for r in rows} == {("sim", "0.01")}


DBN_DATA = __import__("pathlib").Path(__file__).parents[1].parent / "shared" / "data" / "dbn"


@pytest.mark.skipif(not DBN_DATA.is_dir(), reason="no shared DBN test data")
def test_import_stores_dbn_mappings_and_definitions_with_aliases(folder, capsys):
    pytest.importorskip("zstandard")
    files = [str(DBN_DATA / "test_data.definition.v3.dbn.zst"), str(DBN_DATA / "*.trades.*")]
    assert main(["symbols", "import", *files]) == 0
    out = capsys.readouterr().out
    assert "62 symbol mappings, 2 definitions, 0 refused" in out and "2 instruments written" in out

    again = load_registry(folder / "config.toml")  # another process would read the same
    assert {again.label(i) for i in (6819, 6830, 7119)} == {"MSFT@xnas.itch"}
    assert again.label(5482) == "ESH1@glbx.mdp3" and str(again.get(6819).lot_size) == "100"
    assert main(["symbols", "show", "MSFT", "--venue", "xnas.itch"]) == 0
    shown = capsys.readouterr().out
    assert "instrument_id   7119 (pinned)" in shown and "earlier ids" in shown and "6819" in shown
