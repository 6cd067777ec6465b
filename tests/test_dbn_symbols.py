"""DBN symbol mappings feed the instrument registry (metadata and SymbolMappingMsg records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hftagg.builtins.protocols.dbn import DbnDecoder, Reason
from hftagg.builtins.protocols.dbn.layouts import LAYOUTS, RType
from hftagg.builtins.protocols.dbn.replay import DbnReplay
from hftagg.builtins.protocols.dbn.symbols import mapping_records, symbol_mapping_dtype
from hftagg.instruments import load_registry
from hftagg.stages import StageContext

databento_dbn = pytest.importorskip("databento_dbn", reason="builds the reference records")
zstandard = pytest.importorskip("zstandard", reason="zstandard reads the .dbn.zst test files")

DATA = Path(__file__).parents[1].parent / "shared" / "data" / "dbn"
TRADES = DATA / "test_data.trades.v3.dbn.zst"
pytestmark = pytest.mark.skipif(not TRADES.exists(), reason=f"no DBN test data at {DATA}")
_TRADE = LAYOUTS[(RType.MBP_0, 3)]


def _mapping(instrument_id: int, raw: str, subscribed: str = "ES.c.0") -> bytes:
    return bytes(
        databento_dbn.SymbolMappingMsg(
            publisher_id=1,
            instrument_id=instrument_id,
            ts_event=10,
            stype_in=databento_dbn.SType.CONTINUOUS,
            stype_in_symbol=subscribed,
            stype_out=databento_dbn.SType.RAW_SYMBOL,
            stype_out_symbol=raw,
            start_ts=1,
            end_ts=2,
        )  # fmt: skip
    )


def _live_stream(tmp_path: Path, *mappings: bytes) -> Path:
    """The shared trades file's metadata and records with SymbolMappingMsg records between."""
    raw = zstandard.ZstdDecompressor().stream_reader(TRADES.open("rb")).read()
    body = len(raw) - 2 * _TRADE.itemsize
    first, second = raw[body : body + _TRADE.itemsize], raw[body + _TRADE.itemsize :]
    path = tmp_path / "live.dbn"
    path.write_bytes(raw[:body] + mappings[0] + first + b"".join(mappings[1:]) + second)
    return path


def _replay(path: Path, registry) -> tuple[DbnReplay, dict[str, int]]:
    stage = DbnReplay(path=str(path))
    stage.open(StageContext(instruments=registry))
    seen: dict[str, int] = {}
    for _ in range(100):
        out = stage.next_batch()
        if out is None and stage.exhausted:
            break
        for port, batch in (out or {}).items():
            seen[port] = seen.get(port, 0) + len(batch)
    stage.close()
    return stage, seen


def test_symbol_mapping_layouts_match_databento():
    v1 = databento_dbn.SymbolMappingMsgV1(
        publisher_id=1, instrument_id=77, ts_event=5, stype_in_symbol="ES.FUT",
        stype_out_symbol="ESZ6", start_ts=1, end_ts=2,
    )  # fmt: skip
    rec1 = np.frombuffer(bytes(v1), dtype=symbol_mapping_dtype(1))
    rec2 = np.frombuffer(_mapping(5602, "ESH7"), dtype=symbol_mapping_dtype(2))
    ids, names = mapping_records(rec1)
    assert (ids.tolist(), names) == ([77], ["ESZ6"])
    assert mapping_records(rec2)[1] == ["ESH7"] and int(rec2["instrument_id"][0]) == 5602


def test_metadata_mappings_name_the_files_instruments():
    registry = load_registry(None, {"instruments": {}})
    stage, seen = _replay(TRADES, registry)
    assert registry.label(5482) == "ESH1@glbx.mdp3" and registry.get(5482).pinned
    assert seen["trades"] == 2 and "dead_letters" not in seen
    assert stage.counters["symbol_mappings"] == 1 and stage.counters["symbol_conflicts"] == 0


def test_live_symbol_mappings_are_registered_not_dead_lettered(tmp_path):
    path = _live_stream(tmp_path, _mapping(5602, "ESZ6"), _mapping(42_001, "NQZ6", "NQ.c.0"))
    registry = load_registry(None, {"instruments": {}})

    stage, seen = _replay(path, registry)

    assert seen.get("trades") == 2 and "dead_letters" not in seen
    assert [registry.label(i) for i in (5602, 42_001)] == ["ESZ6@glbx.mdp3", "NQZ6@glbx.mdp3"]
    assert stage.counters["symbol_mappings"] == 3  # the metadata's ESH1 and the two records


def test_a_later_mapping_of_the_same_id_wins(tmp_path):
    path = _live_stream(tmp_path, _mapping(5602, "ESZ6"), _mapping(5602, "ESH7"))
    registry = load_registry(None, {"instruments": {}})

    stage, _ = _replay(path, registry)

    assert registry.label(5602) == "ESH7@glbx.mdp3" and registry.lookup("ESZ6", "glbx.mdp3") == []
    assert stage.counters["symbol_conflicts"] == 0


def test_a_mapping_to_an_id_another_instrument_holds_is_counted_not_fatal(tmp_path):
    registry = load_registry(None, {"instruments": {}})
    aapl = registry.define("AAPL", "xnas")
    path = _live_stream(tmp_path, _mapping(aapl.instrument_id, "ESZ6"))

    stage, seen = _replay(path, registry)

    assert seen.get("trades") == 2 and registry.label(aapl.instrument_id) == "AAPL@xnas"
    assert stage.counters["symbol_conflicts"] == 1


def test_a_decoder_without_a_registry_still_dead_letters_mapping_records(tmp_path):
    path = _live_stream(tmp_path, _mapping(5602, "ESZ6"))
    decoder = DbnDecoder(name="live.dbn")
    decoder.feed(path.read_bytes())
    decoder.finish()
    out = decoder.take(10)
    assert len(out["trades"]) == 2
    assert out["dead_letters"]["reason"].tolist() == [Reason.UNMAPPED_RTYPE]


@pytest.mark.slow
def test_hftagg_run_summary_names_the_instruments_a_dbn_file_defined(tmp_path):
    from .conftest import run_cli

    (tmp_path / "config.toml").write_text(
        f'[data_sources.replay]\ntype = "dbn_replay"\npath = "{TRADES}"\n\n'
        "[processing]\nuse_mock_data = false\n\n[delivery]\nenabled = false\n"
    )
    done = run_cli("run", "--duration", "3", "--quiet", "--summary-json", "s.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "instruments: 9 known; 1 defined by sources while running (ESH1@glbx.mdp3)" in (
        done.stdout
    )
    summary = __import__("json").loads((tmp_path / "s.json").read_text())
    assert summary["instruments"] == {"known": 9, "defined": 1, "examples": ["ESH1@glbx.mdp3"]}


def test_a_symbol_with_a_new_id_each_day_shows_under_every_id():
    definitions = DATA / "test_data.definition.v3.dbn.zst"
    registry = load_registry(None, {"instruments": {}})

    _replay(definitions, registry)

    from hftagg.builtins.protocols.dbn import read_metadata

    ids = {int(iv[2]) for iv in read_metadata(definitions).mappings["MSFT"]}
    assert len(ids) > 30 and {registry.label(i) for i in ids} == {"MSFT@xnas.itch"}
    newest = int(max(read_metadata(definitions).mappings["MSFT"])[2])
    assert registry.id_of("MSFT", "xnas.itch") == newest


def test_definition_records_define_the_instruments():
    definitions = DATA / "test_data.definition.v3.dbn.zst"
    registry = load_registry(None, {"instruments": {}})

    stage, seen = _replay(definitions, registry)

    msft = registry.get(6819)
    assert seen["definitions"] == 2 and stage.counters["definitions"] == 2
    assert (msft.symbol, msft.asset_class, str(msft.lot_size)) == ("MSFT", "equity", "100")
    assert msft.lot_size_fixed == 100 * 10**8 and msft.tick_size is None  # DBN: undefined
