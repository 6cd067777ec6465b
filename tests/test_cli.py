"""The ``hftagg`` command as a user meets it: suggestions, checked values, one ``-c/--config``,
``--version``, config edits (a whole stage at once, override warnings), ``params``, ``init``.

These call ``hftagg.cli.main`` in this process (the same code the console script runs); the
subprocess runs of the command are in the test files of each feature.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

import pytest

import hftagg
from hftagg.cli import build_parser, main
from hftagg.cli.init import write_starter
from hftagg.records import TRADE

from .conftest import free_port
from .consul_fake import FakeConsul

CONFIG = """\
[data_sources.sim]
type = "simulator"
rate = 1000

[processing]
ema_window = 25   # a comment that stays

[delivery]
target = "tcp://127.0.0.1:{port}"
topics = ["ind.ema"]
"""


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A valid config.toml in the current folder, and no HFTAGG__ or Consul variables."""
    for name in list(os.environ):
        if name.startswith("HFTAGG__") or name.startswith("CONSUL_HTTP"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(port=free_port()))
    return path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``hftagg ARGS``; (exit code, stdout, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's errors, --help and --version
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# -- parsing --------------------------------------------------------------------------------------


def test_mistyped_command_suggests_the_closest(capsys):
    code, _, err = cli(capsys, "rn")

    assert code == 2
    assert "invalid choice: 'rn'" in err and "did you mean 'run'?" in err


@pytest.mark.parametrize("args", [[], ["config"]])
def test_a_missing_command_shows_the_commands_there_are(capsys, args):
    code, _, err = cli(capsys, *args)

    assert code == 2
    assert "give a COMMAND" in err
    assert "validate" in err if args else "init" in err and "graph" in err


def test_mistyped_subcommand_suggests_the_closest(capsys):
    code, _, err = cli(capsys, "config", "valdate")

    assert code == 2
    assert "did you mean 'validate'?" in err


def test_mistyped_flag_is_named_by_its_command_with_a_suggestion(capsys):
    code, _, err = cli(capsys, "run", "--duraton", "3")

    assert code == 2
    assert "usage: hftagg run" in err  # the command's own usage, not the top-level one
    assert "--duraton -> did you mean --duration?" in err


def test_mistyped_choice_suggests_the_closest(capsys):
    code, _, err = cli(capsys, "tail", "md.trades", "--pattern", "psh")

    assert code == 2
    assert "did you mean 'push'?" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--duration", "-1"], "--duration: expected a number of seconds > 0, got '-1'"),
        (["run", "--duration", "soon"], "--duration: expected a number of seconds, got 'soon'"),
        (["run", "--status-interval", "0"], "--status-interval: expected a number of seconds > 0"),
        (["top", "--iterations", "-2"], "--iterations: expected a whole number >= 0, got '-2'"),
        (["tail", "x", "--timeout", "-5"], "--timeout: expected a number of seconds > 0"),
    ],
)
def test_bad_values_are_refused_before_anything_runs(capsys, args, message):
    code, out, err = cli(capsys, *args)

    assert code == 2
    assert message in err
    assert out == ""


@pytest.mark.parametrize("command", [["run", "--summary-json"], ["graph", "-o"]])
def test_an_output_file_in_a_missing_folder_is_refused_before_anything_runs(
    capsys, tmp_path, command
):
    target = tmp_path / "nope" / "out.json"

    code, out, err = cli(capsys, *command, str(target))

    assert code == 2
    assert f"folder '{target.parent}' of '{target}' does not exist" in err
    assert out == ""


def test_a_file_system_error_is_one_line_not_a_traceback(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    code, _, err = cli(capsys, "init", str(blocker / "project"))

    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"hftagg: {blocker / 'project'}")


def test_missing_plugin_dir_is_refused(capsys, tmp_path):
    missing = tmp_path / "nope"

    code, out, err = cli(capsys, "plugins", "--plugin-dir", str(missing))

    assert code == 2
    assert f"--plugin-dir: '{missing}' does not exist" in err
    assert out == ""


def test_version_names_hftagg_and_its_key_libraries(capsys):
    code, out, _ = cli(capsys, "--version")

    assert code == 0
    assert out.startswith(f"hftagg {hftagg.__version__} (Python 3.")
    assert "numpy " in out and "numba " in out


def _leaves(parser: argparse.ArgumentParser, name: str = "hftagg"):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
    for action in subs:
        for sub_name, sub in action.choices.items():
            yield from _leaves(sub, f"{name} {sub_name}")


def test_every_command_that_reads_a_config_takes_the_same_dash_c_option():
    no_config = {"hftagg init", "hftagg warm"}
    leaves = dict(_leaves(build_parser()))

    assert {"hftagg run", "hftagg config add-stage", "hftagg tail"} <= set(leaves)
    for name, parser in leaves.items():
        flags = {s for a in parser._actions for s in a.option_strings}
        if name not in no_config:
            assert {"-c", "--config"} <= flags, name


def test_config_given_before_the_command_is_used(capsys, config, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace("ema_window = 25", "ema_window = 0"))

    code, _, err = cli(capsys, "-c", str(other), "config", "validate")

    assert code == 1
    assert "other.toml: processing.ema_window = 0" in err


# -- config set / add-stage / remove -------------------------------------------------------------


def test_set_warns_when_the_environment_overrides_the_key(capsys, config, monkeypatch):
    monkeypatch.setenv("HFTAGG__PROCESSING__EMA_WINDOW", "50")

    code, out, err = cli(capsys, "config", "set", "processing.ema_window", "30")

    assert code == 0
    assert "processing.ema_window = 30" in out
    assert "ema_window = 30   # a comment that stays" in config.read_text()
    assert "env HFTAGG__PROCESSING__EMA_WINDOW overrides processing.ema_window = 50" in err
    assert "unset it" in err


def test_set_says_nothing_when_no_layer_overrides_the_key(capsys, config, monkeypatch):
    monkeypatch.setenv("HFTAGG__DATA_SOURCES__SIM__RATE", "5")

    code, _, err = cli(capsys, "config", "set", "processing.ema_window", "30")

    assert code == 0
    assert err == ""


def test_set_warns_when_consul_overrides_the_key(capsys, config, monkeypatch):
    consul = FakeConsul(free_port()).start()
    try:
        consul.put("hftagg/processing/ema_window", "40")
        monkeypatch.setenv("CONSUL_HTTP_ADDR", consul.address)

        code, _, err = cli(
            capsys, "config", "set", "processing.ema_window", "30", "-c", "config.toml"
        )
    finally:
        consul.stop()

    assert code == 0
    assert "consul overrides processing.ema_window = 40" in err
    assert "delete processing.ema_window from Consul KV" in err


def test_add_stage_writes_one_table_validated_as_one_change(capsys, config):
    code, out, err = cli(
        capsys, "config", "add-stage", "fast", "ema", "window=5", "topics.output=ind.ema5"
    )

    assert code == 0, err
    assert "added [stages.fast]" in out
    text = config.read_text()
    assert '[stages.fast]\ntype = "ema"\nwindow = 5\ntopics = {output = "ind.ema5"}\n' in text
    assert "# a comment that stays" in text
    assert cli(capsys, "config", "validate")[0] == 0


def test_add_stage_with_a_bad_parameter_leaves_the_file_untouched(capsys, config):
    before = config.read_bytes()

    code, _, err = cli(capsys, "config", "add-stage", "fast", "ema", "window=0")

    assert code == 1
    assert "stages.fast.window = 0: input should be greater than or equal to 1" in err
    assert config.read_bytes() == before


def test_add_stage_refuses_an_existing_id_unless_replace(capsys, config):
    assert cli(capsys, "config", "add-stage", "fast", "ema", "topics.output=ind.f")[0] == 0

    code, _, err = cli(capsys, "config", "add-stage", "fast", "sma", "window=3")
    assert code == 1 and "already exists; pass --replace" in err

    code, out, err = cli(capsys, "config", "add-stage", "fast", "sma", "window=3", "--replace")
    assert code == 0 and "replaced [stages.fast]" in out, err
    assert '[stages.fast]\ntype = "sma"\nwindow = 3\n' in config.read_text()


def test_set_a_table_value_writes_a_stage_and_remove_takes_it_out(capsys, config):
    original = config.read_text()

    code, out, _ = cli(capsys, "config", "set", "stages.slow", '{type = "sma", window = 50}')
    assert code == 0 and "a whole stage" in out
    assert '[stages.slow]\ntype = "sma"\nwindow = 50\n' in config.read_text()

    code, out, _ = cli(capsys, "config", "remove", "stages.slow")
    assert code == 0 and "removed stages.slow" in out
    assert config.read_text() == original


def test_remove_refuses_a_stage_that_others_read_from(capsys, config):
    assert cli(capsys, "config", "add-stage", "clean", "validate_trades")[0] == 0
    assert (
        cli(capsys, "config", "add-stage", "e2", "ema", "topics.input=md.trades_clean",
            "topics.output=ind.e2")[0] == 0
    )  # fmt: skip
    before = config.read_bytes()

    code, _, err = cli(capsys, "config", "remove", "stages.clean")

    assert code == 1
    assert "'md.trades_clean': no stage produces this topic" in err
    assert config.read_bytes() == before


# -- config params --------------------------------------------------------------------------------


def test_params_lists_ports_allowed_values_and_bounds(capsys, config):
    code, out, _ = cli(capsys, "config", "params", "ema")

    assert code == 0
    lines = out.splitlines()
    assert any(line.split()[:4] == ["input", "input", "<-", "md.trades"] for line in lines)
    assert any(line.split()[:4] == ["output", "output", "->", "ind.ema"] for line in lines)
    window = next(line for line in lines if line.split()[:1] == ["window"])
    assert ">= 1" in window and "default 20" in window and "live" in window
    seed = next(line for line in lines if line.split()[:1] == ["seed"])
    assert "'first' | 'sma'" in seed and "restart" in seed


def test_params_takes_several_types_in_the_order_given(capsys, config):
    code, out, _ = cli(capsys, "config", "params", "sma", "ema")

    assert code == 0
    titles = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert titles[-2:] == ["sma", "ema"]


def test_params_json_is_structured(capsys, config):
    import json

    code, out, _ = cli(capsys, "config", "params", "ema", "--json")

    assert code == 0
    [ema] = json.loads(out)
    assert ema["inputs"] == [
        {"port": "input", "schema": "trade", "topic": "md.trades", "doc": ema["inputs"][0]["doc"]}
    ]
    seed = next(p for p in ema["params"] if p["name"] == "seed")
    assert seed["choices"] == ["first", "sma"] and seed["live"] is False


# -- init -----------------------------------------------------------------------------------------


def test_init_writes_a_starter_that_validates_and_refuses_to_overwrite(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)

    code, out, _ = cli(capsys, "init", "proj")
    assert code == 0 and "wrote proj/config.toml" in out

    code, out, _ = cli(capsys, "config", "validate", "proj/config.toml")
    assert code == 0, out
    assert "my_stage (my_stage, core): md.trades -> ind.my_stage" in out

    (tmp_path / "proj" / "config.toml").write_text("# mine\n")
    code, _, err = cli(capsys, "init", "proj")
    assert code == 1 and "not overwriting" in err
    assert (tmp_path / "proj" / "config.toml").read_text() == "# mine\n"


def test_plugin_template_stage_processes_trades(tmp_path):
    from hftagg.testing import TestingSink, TestingSource, run_pipeline

    [_, plugin] = write_starter(tmp_path)
    spec = importlib.util.spec_from_file_location("hftagg_test_my_stage", plugin)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trades = TRADE.empty(3)
    trades["seq"] = [1, 2, 3]
    trades["price"] = [100_000_000_000, 101_000_000_000, 102_500_000_000]
    out = []

    run_pipeline([TestingSource([trades]), module.MyStage(multiplier=2.0), TestingSink(out)])

    [batch] = out
    assert batch["value"].tolist() == [200.0, 202.0, 205.0]
    assert batch["seq"].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["config", "validate", "missing.toml"], "missing.toml: config file not found"),
        (["config", "validate", "folder"], "is a directory"),
        (["config", "validate", "latin1.toml"], "is not UTF-8"),
        (["config", "params", "emma"], "unknown stage type 'emma' (did you mean 'ema'?)"),
        (["config", "set", "processing.ema_window", "3", "-c", "missing.toml"], "not found"),
        (["config", "remove", "stages.nope"], "stages.nope"),
        (["graph", "-c", "missing.toml"], "missing.toml: config file not found"),
        (["tail", "ind.ema", "-c", "missing.toml"], "missing.toml: config file not found"),
    ],
)
def test_user_mistakes_are_named_in_a_line_never_a_traceback(capsys, config, args, names):
    (config.parent / "folder").mkdir()
    (config.parent / "latin1.toml").write_bytes(b"# caf\xe9\n")

    code, _, err = cli(capsys, *args)

    assert code == 1
    assert names in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        (
            "processing.ema_windw",
            "processing.ema_windw = 3: unknown key (did you mean 'ema_window'?)",
        ),
        ("procesing.ema_window", "unknown section (did you mean 'processing'?)"),
        ("data_sources.sim.rat", "unknown key (did you mean 'rate'?)"),
    ],
)
def test_a_misspelt_config_key_gets_a_suggestion(capsys, config, key, hint):
    before = config.read_bytes()

    code, _, err = cli(capsys, "config", "set", key, "3")

    assert code == 1
    assert hint in err
    assert config.read_bytes() == before


def test_remove_warns_when_the_environment_still_sets_the_key(capsys, config, monkeypatch):
    monkeypatch.setenv("HFTAGG__PROCESSING__EMA_WINDOW", "50")

    code, _, err = cli(capsys, "config", "remove", "processing.ema_window")

    assert code == 0
    assert "no longer sets processing.ema_window" in err
    assert "env HFTAGG__PROCESSING__EMA_WINDOW overrides processing.ema_window = 50" in err
