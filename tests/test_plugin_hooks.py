"""Hooks that keep built-ins out of core code: plugin-owned config sections."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hftagg.config.layers import defaults_layer, liveness_of
from hftagg.errors import ConfigError
from hftagg.plugins.manager import load_plugins
from hftagg.runtime.assemble import assemble

ROOT = Path(__file__).resolve().parent.parent

ALERTS_PLUGIN = """
from hftagg import Port, Stage, hookimpl, live, restart
from hftagg.config.sections import ConfigSection
from hftagg.config.spec import StageSpec
from hftagg.stages import Params


class AlertsSection(Params):
    threshold: float = live(3.0, gt=0, description="z-score that raises an alert")
    input: str = restart("md.trades")


class Alerter(Stage):
    type_name = "alerter"

    class Params(Params):
        threshold: float = live(3.0, gt=0)

    inputs = {"input": Port("trade", "md.trades")}
    outputs = {"output": Port("indicator", "ind.alerts")}

    def process(self, batch):
        return None


def alerts_stages(section, source, problems):
    return [
        StageSpec(
            "alerts",
            "alerter",
            {"threshold": section.threshold},
            "alerts",
            topics={"input": section.input},
            param_keys={"threshold": "alerts.threshold"},
        )
    ]


@hookimpl
def hftagg_register_config_sections(register):
    register(ConfigSection("alerts", alerts_stages, AlertsSection, doc="alerting"))


@hookimpl
def hftagg_register_stage_types(register):
    register(Alerter)
"""

CONFIG = """\
[runtime]
plugin_paths = ["plugins"]
[data_sources.sim]
type = "simulator"
[processing]
ema_window = 7
use_mock_data = false
[alerts]
threshold = 4.5
[delivery]
enabled = false
"""


@pytest.fixture
def alerts_root(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "alerts.py").write_text(ALERTS_PLUGIN)
    (tmp_path / "config.toml").write_text(CONFIG)
    return tmp_path


def test_a_plugin_section_becomes_stages_with_its_defaults_and_marks(alerts_root):
    assembled = assemble(alerts_root / "config.toml", environ={})

    node = next(n for n in assembled.graph.nodes if n.id == "alerts")
    assert node.stage.params.threshold == 4.5
    assert assembled.host.record("alerts").provides["config_sections"] == ["[alerts]"]
    raw = {"alerts": {"threshold": 4.5}, "data_sources": {"sim": {"type": "simulator"}}}
    defaults = defaults_layer(raw, assembled.host)
    assert defaults["alerts"] == {"threshold": 3.0, "input": "md.trades"}
    assert defaults["processing"]["use_mock_data"] is False  # the core's key, where the seed put it
    modes = liveness_of(
        ["alerts.threshold", "alerts.input", "alerts.nope", "processing.use_mock_data"],
        raw,
        assembled.host,
    )
    assert modes == {
        "alerts.threshold": "live",
        "alerts.input": "restart",
        "alerts.nope": "unknown",
        "processing.use_mock_data": "restart",
    }


def test_a_section_nobody_owns_is_unknown_and_its_keys_are_checked_by_the_owner(alerts_root):
    (alerts_root / "plugins" / "alerts.py").unlink()
    with pytest.raises(ConfigError) as err:
        assemble(alerts_root / "config.toml", environ={})
    assert "alerts = {'threshold': 4.5}: unknown section; known sections: runtime" in str(err.value)

    (alerts_root / "plugins" / "alerts.py").write_text(ALERTS_PLUGIN)
    (alerts_root / "config.toml").write_text(CONFIG.replace("threshold = 4.5", "treshold = 4"))
    with pytest.raises(ConfigError) as err:
        assemble(alerts_root / "config.toml", environ={})
    assert "alerts.treshold = 4: unknown key; known keys: threshold, input" in str(err.value)


def test_seed_sections_belong_to_the_plugins_of_their_stages():
    host = load_plugins([], entry_points=False)

    assert host.table_origin("config_sections", "processing") == host.stage_origin["ema"]
    assert host.table_origin("config_sections", "delivery") == host.stage_origin["publisher"]


def test_a_plugin_cannot_take_a_core_section(tmp_path):
    (tmp_path / "grab.py").write_text(
        "from hftagg import hookimpl\nfrom hftagg.config.sections import ConfigSection\n"
        "@hookimpl\ndef hftagg_register_config_sections(register):\n"
        "    register(ConfigSection('runtime', lambda v, s, p: []))\n"
    )

    host = load_plugins([tmp_path], entry_points=False)

    assert "config section name 'runtime' is not allowed" in host.record("grab").error


def test_core_config_code_names_no_built_in_stage_or_section():
    """The seed's [processing] and [delivery] are mapped by their plugins, not by the core."""
    for module in ("spec.py", "layers.py"):
        tree = ast.parse((ROOT / "hftagg" / "config" / module).read_text())
        names = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        assert not names & {"ema", "publisher", "delivery"}, module
