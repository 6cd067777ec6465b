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
    assert (
        "alerts.treshold = 4: unknown key (did you mean 'threshold'?); known keys: threshold, input"
        in str(err.value)
    )


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


# -- config sources --------------------------------------------------------------------------------

MEMORY_SOURCE_PLUGIN = """
from hftagg import hookimpl
from hftagg.config.sources import ConfigSourceType


class MemorySource:
    name = "memory"

    def __init__(self, window):
        self.window, self._layer, self.on_change, self.running = window, {}, None, False

    @property
    def layer(self):
        return dict(self._layer)

    def fetch_once(self):
        self._layer = {"processing": {"ema_window": self.window}}
        return self.layer

    def start(self):
        self.running = True

    def stop(self):
        self.running = False

    def push(self, layer):
        self._layer = layer
        self.on_change(dict(layer))


def open_memory(environ):
    return MemorySource(int(environ["MEMORY_WINDOW"])) if "MEMORY_WINDOW" in environ else None


@hookimpl
def hftagg_register_config_sources(register):
    register(ConfigSourceType("memory", open_memory, doc="a layer held in memory"))
"""


def test_a_third_party_config_source_is_a_layer_and_its_changes_apply_live(tmp_path):
    from hftagg.config.sources import open_config_sources, source_layers
    from hftagg.runtime.session import Session

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "memory.py").write_text(MEMORY_SOURCE_PLUGIN)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("[alerts]\nthreshold = 4.5\n", ""))
    host = load_plugins([tmp_path / "plugins"], entry_points=False)
    assert open_config_sources(host, {}) == []  # neither memory nor consul is configured here

    sources = open_config_sources(host, {"MEMORY_WINDOW": "9"})
    assembled = assemble(config, environ={}, host=host, remote=source_layers(sources))
    ema = next(n for n in assembled.graph.nodes if n.id == "ema")
    assert [s.name for s in sources] == ["memory"] and ema.stage.params.window == 9

    session = Session(assembled, config, sources=sources, environ={})
    session.start()
    try:
        sources[0].push({"processing": {"ema_window": 11}})
        sources[0].push({"processing": {"ema_window": 0}})
        assert sources[0].running
    finally:
        session.stop()
    applied, rejected = session.reloader.history[-2:]
    assert applied.source == "memory" and applied.changes == ["ema: window 9 -> 11 (live)"]
    assert not rejected.accepted
    assert "memory: processing.ema_window = 0: input should be greater than" in rejected.problems[0]
    assert not sources[0].running


def test_consul_is_a_built_in_plugin_not_core_code():
    host = load_plugins([], entry_points=False)

    assert host.table_origin("config_sources", "consul") == "hftagg.builtins.config_sources.consul"
    for module in ("cli/run.py", "runtime/session.py"):
        assert "ConsulSource" not in (ROOT / "hftagg" / module).read_text(), module


@pytest.mark.slow
def test_hftagg_run_takes_consul_through_the_config_source_hook(tmp_path):
    import os
    import signal
    import subprocess
    import threading
    import time

    from .conftest import hftagg_cmd
    from .consul_fake import FakeConsul

    fake = FakeConsul().start()
    fake.put("hftagg/processing/ema_window", "7")
    (tmp_path / "config.toml").write_text(CONFIG.replace("[alerts]\nthreshold = 4.5\n", ""))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HFTAGG__", "CONSUL_"))}
    env["CONSUL_HTTP_ADDR"] = fake.address
    proc = subprocess.Popen(
        hftagg_cmd("run", "--quiet", "--duration", "60"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 60
        while not any(text in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.02)

    try:
        wait_for("hftagg: running")
        fake.put("hftagg/processing/ema_window", "9")
        wait_for("consul: applied: ema: window 7 -> 9 (live)")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        reader.join(10)
        fake.stop()
    assert "config source 'consul': layer read, 1 key(s)" in "".join(lines)
    assert proc.returncode == 0, "".join(lines)


def test_config_show_and_set_read_every_config_source(tmp_path, capsys):
    from hftagg.cli.config import effective_config
    from hftagg.cli.config_edit import warn_if_overridden

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "memory.py").write_text(MEMORY_SOURCE_PLUGIN)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.replace("[alerts]\nthreshold = 4.5\n", ""))

    rows = effective_config(config, {"MEMORY_WINDOW": "13"}, sources=True)
    found = warn_if_overridden(config, "processing.ema_window", {"MEMORY_WINDOW": "13"})

    assert rows["processing.ema_window"]["value"] == 13
    assert rows["processing.ema_window"]["source"] == "memory"
    err = capsys.readouterr().err
    assert found == 1
    assert "memory overrides processing.ema_window = 13" in err
    assert "remove processing.ema_window from the memory config source" in err
