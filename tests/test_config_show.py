"""``hftagg config show``: provenance of every effective value, live vs restart."""

from __future__ import annotations

import json
import shutil

import pytest

from hftagg.cli.config import effective_config
from hftagg.config.layers import merge_layers
from hftagg.config.load import env_overrides, named_layers, read_layers

from .conftest import ROOT, run_cli

CONFIG = """\
[data_sources.sim]
type = "simulator"
rate = 1000

[processing]
ema_window = 25

[stages.mid]
type = "example_midprice"

[delivery]
target = "tcp://127.0.0.1:5999"
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    shutil.copytree(ROOT / "plugins", tmp_path / "plugins")
    return path


def test_later_layers_win_and_provenance_follows():
    merged, sources = merge_layers(
        [("defaults", {"a": {"x": 1, "y": 2}}), ("file", {"a": {"y": 3}}), ("env", {"b": 4})]
    )

    assert merged == {"a": {"x": 1, "y": 3}, "b": 4}
    assert sources == {"a.x": "defaults", "a.y": "file", "b": "env"}


def test_a_value_replacing_a_table_forgets_the_table_keys():
    merged, sources = merge_layers([("one", {"a": {"x": 1}}), ("two", {"a": 5})])

    assert merged == {"a": 5}
    assert sources == {"a": "two"}


def test_consul_layer_sits_between_file_and_environment(config):
    consul = {"processing": {"ema_window": 40}, "data_sources": {"sim": {"rate": 7}}}
    environ = {"HFTAGG__DATA_SOURCES__SIM__RATE": "9"}

    raw = read_layers(config, environ, consul)
    names = [name for name, _ in named_layers(config, environ, consul)]

    assert raw["processing"]["ema_window"] == 40
    assert raw["data_sources"]["sim"]["rate"] == 9
    assert names == [str(config), "consul", "env HFTAGG__DATA_SOURCES__SIM__RATE"]


def test_read_layers_keeps_its_two_argument_form(config):
    assert read_layers(config, {"HFTAGG__PROCESSING__EMA_WINDOW": "3"})["processing"] == {
        "ema_window": 3
    }
    assert env_overrides({"HFTAGG__A__B": "x y", "OTHER": "1"}) == {"a": {"b": "x y"}}


def test_effective_values_name_defaults_file_and_env(config):
    environ = {"HFTAGG__DATA_SOURCES__SIM__RATE": "5000"}

    rows = effective_config(config, environ)

    assert rows["processing.ema_window"]["value"] == 25
    assert rows["processing.ema_window"]["source"] == str(config)
    assert rows["processing.ema_seed"] == {
        "value": "first",
        "source": "defaults",
        "mode": "restart",
        "live": False,
    }
    assert rows["data_sources.sim.rate"]["value"] == 5000
    assert rows["data_sources.sim.rate"]["source"] == "env HFTAGG__DATA_SOURCES__SIM__RATE"
    assert rows["data_sources.sim.trade_probability"]["source"] == "defaults"
    assert rows["delivery.allow_remote"]["source"] == "defaults"
    assert rows["stages.mid.bps"]["source"] == "defaults"


def test_live_and_restart_marking(config):
    rows = effective_config(config, {})

    modes = {key: row["mode"] for key, row in rows.items()}

    assert modes["processing.ema_window"] == "live"  # the ema stage's window
    assert modes["processing.ema_seed"] == "restart"
    assert modes["data_sources.sim.rate"] == "live"
    assert modes["data_sources.sim.seed"] == "restart"
    assert modes["data_sources.sim.type"] == "restart"
    assert modes["stages.mid.bps"] == "live"
    assert modes["runtime.status_interval_secs"] == "live"
    assert modes["runtime.ring_capacity"] == "restart"
    assert modes["delivery.target"] == "restart"


def test_consul_values_are_marked_consul(config):
    rows = effective_config(config, {}, {"processing": {"ema_window": 50}})

    assert rows["processing.ema_window"]["value"] == 50
    assert rows["processing.ema_window"]["source"] == "consul"


@pytest.mark.slow
def test_cli_show_effective_prints_one_line_per_key(config):
    result = run_cli("config", "show", "--effective", "--file", str(config))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    ema = [line for line in lines if line.startswith("processing.ema_window = ")]
    assert len(ema) == 1
    assert ema[0].split() == ["processing.ema_window", "=", "25", f"({config};", "live)"]
    assert any(line.endswith("(defaults; restart)") for line in lines)


@pytest.mark.slow
def test_cli_show_effective_json(config):
    result = run_cli("config", "show", "--effective", "--json", "--file", str(config))

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows["runtime.max_batch"] == {
        "value": 4096,
        "source": "defaults",
        "mode": "restart",
        "live": False,
    }


@pytest.mark.slow
def test_cli_show_without_effective_prints_the_file(config):
    text = run_cli("config", "show", "--file", str(config))
    as_json = run_cli("config", "show", "--json", "--file", str(config))

    assert text.stdout == CONFIG
    assert json.loads(as_json.stdout)["processing"] == {"ema_window": 25}
