"""No plugin can take the pipeline down: sys.exit() and hangs at import, duplicate names, bad
output dtypes; registration goes through pluggy; schemas come and go with their plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hftagg.errors import PluginError
from hftagg.plugins.manager import load_plugins
from hftagg.runtime.assemble import assemble, plugin_dirs
from hftagg.runtime.pipeline import StageFailed
from hftagg.runtime.reload import Reloader

from .conftest import PYTHON
from .test_plugins import STAGE_PLUGIN

GATE = "hftagg_test_import_gate"  # a threading.Event in sys.modules that a hung import waits on

HANGING_PLUGIN = f"""
import sys
sys.modules[{GATE!r}].wait(60)
{STAGE_PLUGIN.format(cls="Late", name="late_stage")}
"""

SCHEMA_PLUGIN = """
from hftagg import Schema, hookimpl, make_dtype

@hookimpl
def hftagg_register_schemas(register):
    register(Schema("thing", 1, make_dtype([{fields}])))
"""

CONFIG = """\
[runtime]
plugin_paths = ["plugins"]
[data_sources.sim]
type = "simulator"
rate = 2000
[processing]
ema_window = {window}
[delivery]
enabled = false
"""


@pytest.fixture
def gate():
    event = threading.Event()
    sys.modules[GATE] = event
    yield event
    event.set()
    for thread in threading.enumerate():
        if thread.name.startswith("hftagg-import"):
            thread.join(10)
    sys.modules.pop(GATE, None)


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in (env or os.environ).items() if not k.startswith("HFTAGG__")}
    return subprocess.run(
        [PYTHON, "-m", "hftagg", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- import: sys.exit(), BaseException, hangs ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import sys\nsys.exit(3)\n", "called sys.exit(3) while being imported"),
        ("raise KeyboardInterrupt\n", "raised KeyboardInterrupt while being imported"),
        ("class Stop(BaseException): pass\nraise Stop()\n", "raised Stop while being imported"),
    ],
)
def test_plugin_ending_its_import_with_a_base_exception_is_skipped_and_named(
    tmp_path, body, expected
):
    (tmp_path / "quitter.py").write_text(body)
    (tmp_path / "good_stage.py").write_text(STAGE_PLUGIN.format(cls="Good", name="good_stage"))

    host = load_plugins([tmp_path], entry_points=False)

    failed = {r.name: r for r in host.failed}
    assert list(failed) == ["quitter"]
    assert expected in failed["quitter"].last_error_line
    assert f"plugin 'quitter' ({tmp_path / 'quitter.py'})" in failed["quitter"].last_error_line
    assert "good_stage" in host.stage_types


@pytest.mark.slow
def test_run_and_validate_report_a_plugin_that_exits_at_import_and_go_on(tmp_path):
    """Before: both exited 3 with no message at all."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "quitter.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "config.toml").write_text(CONFIG.format(window=5))

    validate = cli("config", "validate", cwd=tmp_path)
    run = cli("run", "--duration", "1", "--quiet", "--no-watch", cwd=tmp_path)

    for out in (validate, run):
        assert out.returncode == 0, out.stderr
        assert "plugin 'quitter'" in out.stderr and "sys.exit(3)" in out.stderr
    assert "valid, 2 stages" in validate.stdout
    assert "hftagg summary" in run.stdout


def test_hanging_import_is_timed_out_skipped_and_not_retried_until_the_file_changes(
    tmp_path, gate, monkeypatch
):
    monkeypatch.setenv("HFTAGG_PLUGIN_IMPORT_TIMEOUT_SECS", "0.3")
    hanging = tmp_path / "hangs.py"
    hanging.write_text(HANGING_PLUGIN)
    (tmp_path / "good_stage.py").write_text(STAGE_PLUGIN.format(cls="Good", name="good_stage"))

    host = load_plugins([tmp_path], entry_points=False)

    record = host.record("hangs")
    assert "did not finish importing within 0.3 s and was skipped" in record.last_error_line
    assert "good_stage" in host.stage_types  # the others loaded

    # a reload of the unchanged file does not import it again (no second stuck thread)
    threads = [t for t in threading.enumerate() if t.name.startswith("hftagg-import")]
    again = host.load_file(hanging)
    assert "hung at import before; it is retried when the file changes" in again.error
    assert [t for t in threading.enumerate() if t.name.startswith("hftagg-import")] == threads

    # once the file changes it is imported again
    hanging.write_text(STAGE_PLUGIN.format(cls="Fixed", name="fixed_stage"))
    assert host.load_file(hanging).error is None
    assert host.stage_origin["fixed_stage"] == "hangs"

    # the abandoned import finishing later registers nothing
    gate.set()
    for thread in threads:
        thread.join(10)
    assert "late_stage" not in host.stage_types


def test_watcher_survives_a_plugin_that_exits_and_later_edits_still_apply(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(window=5))
    assembled = assemble(config, environ={})
    pipeline = assembled.pipeline()
    reloader = Reloader(
        pipeline,
        assembled.host,
        config,
        plugin_dirs=plugin_dirs(assembled.spec.raw, config),
        environ={},
    )
    pipeline.start()
    reloader.start()
    try:
        (plugins / "quitter.py").write_text("import sys\nsys.exit(2)\n")
        deadline = time.monotonic() + 10
        while not reloader.history and time.monotonic() < deadline:
            time.sleep(0.01)
        (plugins / "raiser.py").write_text(
            "from hftagg import hookimpl\n\n@hookimpl\ndef hftagg_register_stage_types(register):"
            "\n    raise SystemExit(4)\n"
        )
        while len(reloader.history) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        config.write_text(CONFIG.format(window=9))
        while len(reloader.history) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        reloader.stop()
        pipeline.stop()

    first, second, edit = reloader.history[:3]
    assert not first.accepted and "called sys.exit(2) while being imported" in first.problems[0]
    assert "it was skipped" in first.problems[0]
    assert not second.accepted and "sys.exit(4) in a registration hook" in second.problems[0]
    assert edit.accepted and edit.changes == ["ema: window 5 -> 9 (live)"]


# -- duplicate names, independent of file names -------------------------------------------------


@pytest.mark.parametrize("names", [("alpha", "zulu"), ("zulu", "alpha")])
def test_same_stage_type_in_two_files_fails_both_whatever_their_names(tmp_path, names):
    legit, other = names
    (tmp_path / f"{legit}.py").write_text(STAGE_PLUGIN.format(cls="A", name="mid"))
    (tmp_path / f"{other}.py").write_text(STAGE_PLUGIN.format(cls="B", name="mid"))

    host = load_plugins([tmp_path], entry_points=False)

    assert sorted(r.name for r in host.failed) == ["alpha", "zulu"]
    for record in host.failed:
        assert "stage type 'mid' is registered by plugin 'alpha'" in record.last_error_line
        assert str(tmp_path / "zulu.py") in record.last_error_line
    with pytest.raises(PluginError) as err:
        host.stage_type("mid")
    assert "is registered by plugin 'alpha'" in str(err.value)
    assert "rename or remove all but one" in str(err.value)


def test_a_plugin_file_cannot_take_a_built_in_stage_type(tmp_path):
    (tmp_path / "aaa_ema.py").write_text(STAGE_PLUGIN.format(cls="Ema", name="ema"))

    host = load_plugins([tmp_path], entry_points=False)

    owner = host.stage_origin["ema"]
    assert owner.startswith("hftagg.builtins.")
    assert (
        f"registers stage type 'ema', already registered by plugin {owner!r}"
        in host.record("aaa_ema").last_error_line
    )


def test_same_file_name_in_two_plugin_folders_loads_neither(tmp_path):
    for folder, type_name in (("one", "first_mid"), ("two", "second_mid")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "mid.py").write_text(STAGE_PLUGIN.format(cls="M", name=type_name))

    host = load_plugins([tmp_path / "one", tmp_path / "two"], entry_points=False)

    assert [r.name for r in host.failed] == ["mid", "mid"]
    assert "plugin name 'mid' is used by" in host.failed[0].last_error_line
    assert not {"first_mid", "second_mid"} & set(host.stage_types)


@pytest.mark.slow
def test_failed_plugins_are_reported_even_when_the_config_is_invalid(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mid.py").write_text("raise RuntimeError('mid is broken')\n")
    (tmp_path / "config.toml").write_text(
        CONFIG.format(window=5) + '[stages.m]\ntype = "mid"\n[stages.n]\ntype = "nope"\n'
    )

    out = cli("config", "validate", cwd=tmp_path)

    assert out.returncode == 1
    assert f"plugin 'mid' ({plugins / 'mid.py'}) failed to load, skipped: RuntimeError" in (
        out.stderr
    )
    assert "stages.m.type = 'mid': unknown stage type" in out.stderr
    assert "1 plugin(s) failed to load and may provide it: plugin 'mid'" in out.stderr


# -- a stage with the wrong output dtype --------------------------------------------------------

WRONG_DTYPE_PLUGIN = """
import numpy as np
from hftagg import Port, Stage, hookimpl


class Doubler(Stage):
    type_name = "doubler"
    inputs = {"input": Port("trade", "md.trades")}
    outputs = {"output": Port("indicator", "ind.doubled")}

    def process(self, batch):
        return np.zeros(len(batch), dtype=[("value", "<f8")])


@hookimpl
def hftagg_register_stage_types(register):
    register(Doubler)
"""


def test_stage_returning_the_wrong_dtype_is_named_with_its_plugin(tmp_path):
    from hftagg.records import TRADE
    from hftagg.testing import TestingSink, TestingSource, run_pipeline

    (tmp_path / "doubling.py").write_text(WRONG_DTYPE_PLUGIN)
    host = load_plugins([tmp_path], entry_points=False)
    doubler = host.stage_type("doubler")(stage_id="dbl")

    with pytest.raises(StageFailed) as err:
        run_pipeline([TestingSource([TRADE.empty(3)]), doubler, TestingSink([])], host=host)

    message = str(err.value)
    assert (
        f"stage 'dbl' (type 'doubler', from plugin 'doubling' ({tmp_path / 'doubling.py'})) "
        f"returned a batch of dtype"
    ) in message
    assert "on output port 'output', which carries schema indicator@1 to topic" in message
    assert "ring" not in message.split("stage 'dbl'")[0]


# -- registration through pluggy -----------------------------------------------------------------


def test_registration_hooks_are_called_through_pluggy_and_traced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HFTAGG_TRACE_PLUGINS", "1")
    (tmp_path / "good_stage.py").write_text(STAGE_PLUGIN.format(cls="Good", name="good_stage"))

    host = load_plugins([tmp_path], entry_points=False)

    trace = capsys.readouterr().err
    assert "hftagg_register_stage_types [hook]" in trace
    assert "<register(stage type) for plugin 'good_stage'>" in trace
    assert "<register(schema) for plugin 'hftagg.builtins.records'>" in trace
    assert host.stage_origin["good_stage"] == "good_stage"


def test_third_party_kernel_warmup_is_registered_next_to_the_built_in_ones(tmp_path):
    (tmp_path / "fast.py").write_text(
        "from hftagg import hookimpl\nCALLS = []\n\n"
        "def warm():\n    CALLS.append(1)\n\n"
        "@hookimpl\ndef hftagg_register_kernel_warmups(register):\n    register(warm)\n"
    )

    host = load_plugins([tmp_path], entry_points=False)

    from hftagg.kernels import warm_modules

    assert set(warm_modules()) < set(host.kernel_warmups)  # every built-in one, and the plugin's
    warmup = host.kernel_warmups["hftagg_plugins.fast.warm"]
    warmup.warm()
    assert sys.modules["hftagg_plugins.fast"].CALLS == [1]
    assert host.record("fast").provides == {"kernel_warmups": ["hftagg_plugins.fast.warm"]}


# -- schemas take part in reload and rollback ----------------------------------------------------


def test_plugin_schemas_follow_reload_rollback_and_removal(tmp_path):
    plugin = tmp_path / "things.py"
    plugin.write_text(SCHEMA_PLUGIN.format(fields='("a", "<f8")'))
    host = load_plugins([tmp_path], entry_points=False)
    assert host.schemas.get("thing@1").dtype.names[-1] == "a"

    # a reloaded plugin does not clash with its own old schema
    plugin.write_text(SCHEMA_PLUGIN.format(fields='("b", "<i8")'))
    assert host.load_file(plugin).error is None
    assert host.schemas.get("thing").dtype.names[-1] == "b"

    # a broken new version leaves the previous schema in place
    plugin.write_text(SCHEMA_PLUGIN.format(fields='("c", "<i8")') + "\nraise ValueError('no')\n")
    assert "ValueError: no" in host.load_file(plugin).error
    assert host.schemas.get("thing").dtype.names[-1] == "b"

    # a removed plugin's schemas go
    plugin.unlink()
    host.remove_file(plugin)
    assert "thing" not in host.schemas
    assert np.dtype(host.schemas.get("trade").dtype)  # the built-ins' stay
