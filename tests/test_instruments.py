"""The instrument registry: stable ids, collisions, exact definitions, files, bulk look-ups."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from itertools import count

import numpy as np
import pytest

from hftagg.errors import InstrumentError
from hftagg.instruments import (
    Instrument,
    InstrumentRegistry,
    hash_id,
    load_registry,
    save_instruments,
)

PAIRS = [("BTCUSD", "binance"), ("ESZ6", "cme"), ("AAPL", "xnas"), ("XBT/USD", "kraken")]


def test_hash_id_is_the_documented_blake2b_prefix():
    import hashlib

    digest = hashlib.blake2b(b"hftagg-instrument-v1\x00binance\x00BTCUSD", digest_size=8).digest()
    assert hash_id("BTCUSD", "binance") == int.from_bytes(digest[:4], "little")
    assert hash_id("BTCUSD", "Binance") == hash_id("BTCUSD", "binance")  # venue case-folded
    assert hash_id("BTCUSD", "binance") != hash_id("BTCUSD", "kraken")
    assert hash_id("BTCUSD", "binance") == 4183621282  # pinned: a change breaks stored data


@pytest.mark.slow
def test_ids_are_the_same_in_another_process():
    code = f"from hftagg.instruments import hash_id\nprint(*[hash_id(s, v) for s, v in {PAIRS!r}])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", **__import__("os").environ},
    ).stdout.split()
    assert [int(x) for x in out] == [hash_id(s, v) for s, v in PAIRS]


def _colliding_pair(bits: int) -> tuple[str, str]:
    """Two symbols whose ``bits``-bit ids on venue 'test' are equal (a real birthday search)."""
    seen: dict[int, str] = {}
    for k in count():
        symbol = f"SYM{k}"
        value = hash_id(symbol, "test", bits)
        if value in seen:
            return seen[value], symbol
        seen[value] = symbol
    raise AssertionError("unreachable")


def test_a_real_collision_on_a_truncated_hash_is_refused_naming_both():
    first, second = _colliding_pair(16)
    registry = InstrumentRegistry(id_bits=16)
    registry.define(first, "test")
    with pytest.raises(InstrumentError) as info:
        registry.define(second, "test")
    text = str(info.value)
    assert first in text and second in text and "instrument_id = N" in text
    assert registry.symbol(hash_id(first, "test", 16)) == first  # the first one untouched
    # the fix the message names: pin the second to a free id
    pinned = registry.define(second, "test", instrument_id=7)
    assert pinned.pinned and registry.symbol(7) == second


def test_a_pinned_id_that_another_instrument_hashes_to_is_refused():
    registry = InstrumentRegistry()
    registry.define("ESZ6", "glbx.mdp3", instrument_id=hash_id("AAPL", "xnas"))
    with pytest.raises(InstrumentError, match="'AAPL' on 'xnas'.*'ESZ6' on 'glbx.mdp3'"):
        registry.define("AAPL", "xnas")


def test_one_venue_spelling_names_one_instrument():
    registry = InstrumentRegistry()
    registry.define("BTCUSD", "binance", venue_symbol="BTCUSDT")
    registry.define("BTCUSD", "kraken", venue_symbol="XBT/USD")
    assert registry.venue_symbol("BTCUSD", "kraken") == "XBT/USD"  # for subscribing
    assert registry.venue_symbol("ETHUSD", "kraken") == "ETHUSD"  # not defined: as written
    assert registry.ids_for("kraken", [b"XBT/USD"]).tolist() == [hash_id("BTCUSD", "kraken")]
    with pytest.raises(InstrumentError, match="spelling 'BTCUSDT' already means 'BTCUSD'"):
        registry.define("BTCUSDT", "binance")


def test_definitions_are_exact_and_checked():
    registry = InstrumentRegistry()
    inst = registry.define(
        "BTCUSD",
        "binance",
        venue_symbol="BTCUSDT",
        tick_size="0.01",
        lot_size=0.00001,
        multiplier="1",
        currency="usdt",
        expiry=None,
        asset_class="spot",
    )
    assert inst.tick_size == Decimal("0.01") and inst.tick_size_fixed == 10_000_000
    assert inst.lot_size == Decimal("0.00001") and inst.lot_size_fixed == 1000
    assert (inst.price_precision, inst.size_precision, inst.currency) == (2, 5, "USDT")
    fut = registry.define("ESZ6", "cme", tick_size="0.25", expiry="2026-12-18T14:30:00Z")
    assert fut.expiry_ns == 1_797_604_200_000_000_000
    with pytest.raises(InstrumentError, match="tick_size = '0.0000000001'.*1e-9"):
        registry.define("X", "cme", tick_size="0.0000000001")
    with pytest.raises(InstrumentError, match="lot_size = '-1'"):
        registry.define("X", "cme", lot_size="-1")
    with pytest.raises(InstrumentError, match="price_precision = 1 is coarser"):
        registry.define("X", "cme", tick_size="0.01", price_precision=1)
    with pytest.raises(InstrumentError, match="no time zone"):
        registry.define("X", "cme", expiry="2026-12-18T14:30:00")
    with pytest.raises(InstrumentError, match="unknown field"):
        registry.define("X", "cme", tick="0.01")
    assert "X" not in {i.symbol for i in registry}


def test_instruments_file_round_trip_keeps_comments(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("")
    registry = load_registry(config)
    defined = [
        registry.define(
            "BTCUSD",
            "binance",
            venue_symbol="BTCUSDT",
            tick_size="0.01",
            lot_size="0.00001",
            asset_class="spot",
            currency="USDT",
        ),
        registry.define(
            "ESZ6",
            "glbx.mdp3",
            instrument_id=42,
            tick_size="0.25",
            multiplier="50",
            expiry="2026-12-18",
            asset_class="future",
        ),
    ]
    path = tmp_path / "instruments.toml"
    save_instruments(path, defined)
    path.write_text(path.read_text() + "# my own note\n")
    changed = registry.define("BTCUSD", "binance", venue_symbol="BTCUSDT", tick_size="0.1")
    save_instruments(path, [changed])

    again = load_registry(config)
    assert again.get(42) == defined[1]
    assert again.get(changed.instrument_id) == changed
    assert "# my own note" in path.read_text()
    assert path.read_text().count("\n[[instrument]]") == 2
    assert 'multiplier = "50"' in path.read_text()
    assert again.symbol(4) == "ESZ6" and again.get(4).venue == "sim"  # built-ins still there


def test_config_section_defines_and_refuses(tmp_path):
    raw = {"instruments": {"builtin": False, "define": [{"symbol": "AAPL", "venue": "xnas"}]}}
    registry = load_registry(tmp_path / "config.toml", raw)
    assert [i.symbol for i in registry] == ["AAPL"]
    taken = hash_id("AAPL", "xnas")
    bad = {
        "instruments": {
            "define": [
                {"symbol": "AAPL", "venue": "xnas"},
                {"symbol": "ESZ6", "venue": "glbx.mdp3", "instrument_id": taken},
            ]
        }
    }
    with pytest.raises(InstrumentError, match=r"\[\[instruments.define\]\] #2.*'AAPL' on 'xnas'"):
        load_registry(tmp_path / "config.toml", bad)


def test_a_pinned_id_takes_over_a_simulator_default_instead_of_colliding():
    registry = load_registry(None, {"instruments": {}})
    registry.define("ESH1", "glbx.mdp3", instrument_id=4)  # a vendor's id: the sim's ESZ6 yields
    assert registry.label(4) == "ESH1@glbx.mdp3"
    assert registry.lookup("ESZ6", "sim") == [] and registry.symbol(1) == "BTCUSD"
    registry.define("ESZ6", "sim", instrument_id=5_000)  # the default may be defined again
    with pytest.raises(InstrumentError, match="collision"):  # but a real instrument does not yield
        registry.define("NQH1", "glbx.mdp3", instrument_id=4)


def test_bulk_lookup_matches_a_dict_per_record():
    registry = InstrumentRegistry()
    spellings = [f"S{k}USDT" for k in range(40)]
    for k, venue_symbol in enumerate(spellings[:30]):
        registry.define(f"S{k}USD", "binance", venue_symbol=venue_symbol)
    rng = np.random.default_rng(7)
    batch = np.array(spellings, dtype="S12")[rng.integers(0, 40, 20_000)]

    known = registry.ids_for("binance", batch, define=False)
    defined = registry.ids_for("binance", batch)

    reference = {s.encode(): hash_id(f"S{k}USD", "binance") for k, s in enumerate(spellings[:30])}
    assert known.dtype == np.uint32 and known.shape == batch.shape
    assert known.tolist() == [reference.get(bytes(s), 0) for s in batch]
    unknown = {s.encode(): hash_id(s, "binance") for s in spellings[30:]}
    assert defined.tolist() == [{**reference, **unknown}[bytes(s)] for s in batch]
    assert {i.symbol for i in registry.unsaved} >= set(spellings[30:])
    names = registry.symbols_for(defined)
    assert names[0] == registry.symbol(defined[0])
    assert registry.ids_for("binance", [b"S1USDT"] * 3).tolist() == [reference[b"S1USDT"]] * 3
    assert registry.ids_for("binance", ["S1USDT", "S2USDT"]).tolist() == [
        reference[b"S1USDT"],
        reference[b"S2USDT"],
    ]


def test_builtins_name_the_simulators_instruments():
    registry = load_registry(None, {"instruments": {}})
    assert [registry.label(i) for i in (1, 4, 6)] == ["BTCUSD@sim", "ESZ6@sim", "AAPL@sim"]
    assert registry.label(99) == "99"
    assert isinstance(registry.get(1), Instrument) and registry.get(1).tick_size == Decimal("0.01")


def test_bulk_lookup_of_thousands_of_distinct_symbols_of_any_width():
    rng = np.random.default_rng(11)
    names = sorted({f"{'X' * int(rng.integers(0, 14))}{k}" for k in range(3000)})
    registry = InstrumentRegistry()
    reference = {name: registry.define(name, "venue").instrument_id for name in names}
    batch = np.array(names, dtype=object)[rng.integers(0, len(names), 50_000)]

    ids = registry.ids_for("venue", batch, define=False)

    assert ids.tolist() == [reference[name] for name in batch]
    assert registry.symbols_for(ids).tolist() == batch.tolist()


def test_summary_counts_each_instrument_defined_while_running_once():
    registry = load_registry(None, {"instruments": {}})
    registry.ids_for("binance", [b"BTCUSDT", b"ETHUSDT"])
    registry.define("BTCUSDT", "binance", tick_size="0.01")  # redefined: still one
    registry.ids_for("binance", [b"BTCUSDT"])

    summary = registry.summary()

    assert summary == {
        "known": 10,
        "defined": 2,
        "examples": ["BTCUSDT@binance", "ETHUSDT@binance"],
    }


def test_first_sight_canonical_symbols_follow_venue_rules_without_merging_pairs():
    registry = InstrumentRegistry()
    kraken = registry.ids_for("kraken", ["XBT/USD", "XDG/EUR", "ETH/USD"]).tolist()
    coinbase = registry.ids_for("coinbase", ["BTC-USD"]).tolist()
    binance = registry.ids_for("binance", ["BTCUSDT", "BTCUSD"]).tolist()

    assert [registry.symbol(i) for i in kraken] == ["BTCUSD", "DOGEEUR", "ETHUSD"]
    assert kraken[0] == hash_id("BTCUSD", "kraken") and registry.get(kraken[0]).venue_symbol == (
        "XBT/USD"
    )
    assert registry.symbol(coinbase[0]) == "BTCUSD"
    assert [registry.symbol(i) for i in binance] == ["BTCUSDT", "BTCUSD"]  # USDT is not USD
    assert registry.venue_symbol("BTCUSD", "kraken") == "XBT/USD"


def test_an_alias_resolves_to_its_instrument_and_is_checked_for_collisions():
    registry = InstrumentRegistry()
    registry.define("MSFT", "xnas.itch", instrument_id=7119)
    registry.alias(6819, "MSFT", "xnas.itch")
    aapl = registry.define("AAPL", "xnas")

    assert registry.label(6819) == "MSFT@xnas.itch" and 6819 in registry
    assert registry.symbols_for(np.array([6819, 7119], np.uint32)).tolist() == ["MSFT"] * 2
    with pytest.raises(InstrumentError, match="collision"):
        registry.alias(aapl.instrument_id, "MSFT", "xnas.itch")
    with pytest.raises(InstrumentError, match="collision"):
        registry.define("NVDA", "xnas.itch", instrument_id=6819)
    assert registry.remove(6819).symbol == "MSFT" and 6819 not in registry
    assert registry.symbol(7119) == "MSFT"


def test_stages_get_this_processs_registry_unless_given_one():
    from hftagg.instruments import default_registry, set_default_registry
    from hftagg.stages import StageContext

    mine = InstrumentRegistry()
    set_default_registry(mine)
    try:
        assert StageContext().instruments is mine is default_registry()
        other = InstrumentRegistry()
        assert StageContext(instruments=other).instruments is other
    finally:
        set_default_registry(None)
    assert default_registry().symbol(1) == "BTCUSD"  # loaded afresh: the built-ins
