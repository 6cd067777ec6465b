"""Config validation: every class of mistake gives one line naming key, value and expectation."""

from __future__ import annotations

import pytest

from hftagg.config.load import env_overrides, read_layers
from hftagg.config.spec import parse_spec
from hftagg.errors import ConfigError
from hftagg.plugins.manager import load_plugins
from hftagg.runtime.assemble import assemble
from hftagg.runtime.graph import build_graph

from .conftest import ROOT, run_cli

BASE = """
[data_sources.sim]
type = "simulator"
rate = 1000

[processing]
ema_window = 20

[delivery]
target = "tcp://127.0.0.1:5999"
"""


@pytest.fixture(scope="module")
def host():
    return load_plugins([ROOT / "plugins"], entry_points=False)


def problems_of(text: str, host, tmp_path) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        spec = parse_spec(
            read_layers(path, environ={}), str(path), strict=False, sections=host.config_sections
        )
        build_graph(spec, host)
    return [str(p) for p in info.value.problems]


def test_default_config_is_valid(host):
    assembled = assemble(ROOT / "config.toml", environ={}, host=host)
    ids = [n.id for n in assembled.graph.nodes]
    assert ids[0] == "sim" and ids[-1] == "delivery"
    assert sorted(ids) == ["delivery", "ema", "mid", "sbe_in", "sbe_out", "sim", "store"]
    # topological: the decoder feeds the EMA, whatever the order in the file
    core = [n.id for n in assembled.graph.core]
    assert core.index("sbe_out") < core.index("sbe_in") < core.index("ema")


def test_no_config_file_runs_on_embedded_defaults(host):
    assembled = assemble(None, environ={}, host=host)
    assert [n.stage.type_name for n in assembled.graph.nodes] == ["simulator", "ema", "publisher"]


def test_unknown_key_names_the_key_and_lists_known_ones(host, tmp_path):
    lines = problems_of(BASE + "\n[runtime]\nmax_bach = 10\n", host, tmp_path)
    assert len(lines) == 1
    assert (
        "runtime.max_bach = 10: unknown key (did you mean 'max_batch'?); "
        "known keys: status_interval_secs" in lines[0]
    )
    assert str(tmp_path / "config.toml") in lines[0]


def test_unknown_stage_parameter_names_the_source_key(host, tmp_path):
    lines = problems_of(BASE.replace("rate = 1000", "raet = 1000"), host, tmp_path)
    assert lines == [
        f"{tmp_path / 'config.toml'}: data_sources.sim.raet = 1000: unknown key "
        "(did you mean 'rate'?); "
        f"known keys: " + lines[0].split("known keys: ")[1]
    ]
    assert "rate" in lines[0].split("known keys: ")[1]


def test_wrong_type_says_what_was_expected(host, tmp_path):
    lines = problems_of(BASE.replace("ema_window = 20", 'ema_window = "20"'), host, tmp_path)
    assert len(lines) == 1
    assert "processing.ema_window = '20': input should be a valid integer" in lines[0]


def test_value_out_of_range_names_the_bound(host, tmp_path):
    lines = problems_of(BASE.replace("ema_window = 20", "ema_window = 0"), host, tmp_path)
    assert len(lines) == 1
    assert "processing.ema_window = 0: input should be greater than or equal to 1" in lines[0]


def test_unknown_stage_type_suggests_the_close_one(host, tmp_path):
    lines = problems_of(BASE + '\n[stages.x]\ntype = "example_midprise"\n', host, tmp_path)
    assert len(lines) == 1
    assert (
        "stages.x.type = 'example_midprise': unknown stage type (did you mean "
        "'example_midprice'?); known stage types:" in lines[0]
    )


def test_topic_nobody_produces_lists_produced_topics(host, tmp_path):
    text = BASE + '\n[stages.mid]\ntype = "example_midprice"\ntopics = { quotes = "md.quote" }\n'
    lines = problems_of(text, host, tmp_path)
    assert len(lines) == 1
    assert (
        "stages.mid input 'quotes' = 'md.quote': no stage produces this topic "
        "(did you mean 'md.quotes'?); produced topics: ind.ema, ind.mid, ind.spread, md.book, "
        "md.quotes, md.trades" in lines[0]
    )


def test_schema_mismatch_names_both_stages_and_schemas(host, tmp_path):
    text = BASE + '\n[stages.mid]\ntype = "example_midprice"\ntopics = { quotes = "md.trades" }\n'
    lines = problems_of(text, host, tmp_path)
    assert len(lines) == 1
    assert (
        "stages.mid input 'quotes' = 'md.trades': schema mismatch: stage 'mid' expects quote "
        "records but 'sim' produces trade@2" in lines[0]
    )


def test_cycle_is_reported_with_its_path(host, tmp_path):
    text = (
        BASE
        + """
[stages.a]
type = "example_midprice"
topics = { quotes = "x.b", mid = "x.a", spread = "x.a_spread" }

[stages.b]
type = "example_midprice"
topics = { quotes = "x.a", mid = "x.b", spread = "x.b_spread" }
"""
    )
    lines = problems_of(text, host, tmp_path)
    cycle = [line for line in lines if "cycle in the graph" in line]
    assert len(cycle) == 1
    assert (
        "stages = 'a -> b -> a': cycle in the graph" in cycle[0]
        or "stages = 'b -> a -> b': cycle in the graph" in cycle[0]
    )
    # the cycle's topics are ind.* -> quote schemas mismatch as well; both reported at once
    assert all("schema mismatch" in line or "cycle in the graph" in line for line in lines)


def test_topic_with_two_writers_is_rejected(host, tmp_path):
    text = BASE + '\n[stages.mid]\ntype = "example_midprice"\ntopics = { mid = "ind.ema" }\n'
    lines = problems_of(text, host, tmp_path)
    assert any(
        "stages.mid = 'ind.ema': topic is already produced by stage 'ema'" in x for x in lines
    )


def test_all_problems_are_reported_at_once(host, tmp_path):
    text = BASE.replace("ema_window = 20", "ema_window = -1").replace("rate = 1000", "rate = -5")
    text += '\n[stages.x]\ntype = "nope"\n[bogus]\nx = 1\n'
    lines = problems_of(text, host, tmp_path)
    assert len(lines) == 4
    keys = sorted(line.split(": ", 1)[1].split(" ")[0] for line in lines)
    assert keys == ["bogus", "data_sources.sim.rate", "processing.ema_window", "stages.x.type"]


def test_toml_syntax_error_names_file_and_line(host, tmp_path):
    lines = problems_of("[processing\nema_window = 3\n", host, tmp_path)
    assert len(lines) == 1
    assert "TOML syntax error" in lines[0] and "line 1" in lines[0]


def test_bad_delivery_value_is_keyed_under_delivery(host, tmp_path):
    lines = problems_of(
        BASE.replace('target = "tcp://127.0.0.1:5999"', "target = 5"), host, tmp_path
    )
    assert len(lines) == 1
    assert "delivery.target = 5: input should be a valid string" in lines[0]


def test_environment_overrides_file_values():
    env = {
        "HFTAGG__PROCESSING__EMA_WINDOW": "7",
        "HFTAGG__DATA_SOURCES__SIM__SEED": "3",
        "HFTAGG__DELIVERY__TARGET": "ipc:///tmp/x",
        "OTHER": "1",
    }
    assert env_overrides(env) == {
        "processing": {"ema_window": 7},
        "data_sources": {"sim": {"seed": 3}},
        "delivery": {"target": "ipc:///tmp/x"},
    }


def test_environment_override_reaches_the_stage(host, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE)
    assembled = assemble(path, environ={"HFTAGG__PROCESSING__EMA_WINDOW": "7"}, host=host)
    assert assembled.graph.node("ema").stage.params.window == 7


@pytest.mark.slow
def test_cli_validate_exits_0_for_valid_and_1_with_one_line_per_problem(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(BASE)
    ok = run_cli("config", "validate", str(good), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        BASE.replace("ema_window = 20", "ema_window = 0") + "\n[runtime]\nmax_bach = 1\n"
    )
    result = run_cli("config", "validate", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].endswith(
        "processing.ema_window = 0: input should be greater than or equal to 1"
    ) or lines[1].endswith("processing.ema_window = 0: input should be greater than or equal to 1")
    assert any("runtime.max_bach = 1: unknown key" in line for line in lines)
    assert lines[-1] == f"{bad}: invalid, 2 problem(s)"


@pytest.mark.slow
def test_use_mock_data_replaces_a_real_source_with_the_simulator_and_says_so(host, tmp_path):
    text = BASE.replace('type = "simulator"\nrate = 1000', 'type = "dbn_replay"\npath = "x.dbn"')
    path = tmp_path / "config.toml"
    path.write_text(text.replace("ema_window = 20", "ema_window = 20\nuse_mock_data = true"))
    assembled = assemble(path, environ={}, host=host)
    assert assembled.graph.node("sim").stage.type_name == "simulator"
    assert assembled.spec.notes == [
        "data_sources.sim: processing.use_mock_data = true runs the simulator instead of type "
        "'dbn_replay' (its parameters path are not used)"
    ]
    result = run_cli("config", "validate", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "use_mock_data = true runs the simulator instead of type 'dbn_replay'" in result.stdout


def test_use_mock_data_still_checks_the_source_it_replaces(host, tmp_path):
    text = BASE.replace('type = "simulator"\nrate = 1000', 'type = "fix_feed"\nhost = "x"')
    lines = problems_of(
        text.replace("ema_window = 20", "ema_window = 20\nuse_mock_data = true"), host, tmp_path
    )
    assert any(
        "data_sources.sim.type = 'fix_feed': unknown stage type (did you mean 'fix_md'?)" in x
        for x in lines
    ), lines
    replay = BASE.replace('type = "simulator"\nrate = 1000', 'type = "dbn_replay"\nspeed = -1')
    lines = problems_of(
        replay.replace("ema_window = 20", "ema_window = 20\nuse_mock_data = true"), host, tmp_path
    )
    assert any("data_sources.sim.path: required key is missing" in x for x in lines), lines
    assert any("data_sources.sim.speed = -1: input should be greater" in x for x in lines), lines


def test_use_mock_data_is_off_by_default(host, tmp_path):
    text = BASE.replace('type = "simulator"\nrate = 1000', 'type = "fix_feed"\nhost = "x"')
    lines = problems_of(text, host, tmp_path)
    assert any("data_sources.sim.type = 'fix_feed': unknown stage type" in x for x in lines)
