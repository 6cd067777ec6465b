"""Plugin discovery from built-ins, entry points and plugins/; broken plugins are skipped."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from hftagg import hookspecs
from hftagg.plugins.manager import load_plugins

from .conftest import PYTHON, ROOT

STAGE_PLUGIN = """
from hftagg import Params, Port, Stage, hookimpl


class {cls}(Stage):
    type_name = "{name}"
    inputs = {{"input": Port("trade", "md.trades")}}
    outputs = {{"output": Port("indicator", "ind.{name}")}}

    def process(self, batch):
        return None


@hookimpl
def hftagg_register_stage_types(register):
    register({cls})
"""


def make_entry_point_dist(root: Path) -> None:
    """A real installed distribution (dist-info on sys.path) with an ``hftagg`` entry point."""
    pkg = root / "hftagg_ep_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(STAGE_PLUGIN.format(cls="EpStage", name="ep_stage"))
    info = root / "hftagg_ep_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hftagg-ep-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hftagg]\nep_demo = hftagg_ep_demo\n")


@pytest.fixture
def plugin_world(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_entry_point_dist(site)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "good_stage.py").write_text(STAGE_PLUGIN.format(cls="Good", name="good_stage"))
    (plugins / "broken.py").write_text("import numpy\nraise RuntimeError('boom at import')\n")
    (plugins / "_private.py").write_text("raise SystemExit('must not be imported')\n")
    pkg = plugins / "pkg_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .impl import *  # noqa\n")
    (pkg / "impl.py").write_text(STAGE_PLUGIN.format(cls="PkgStage", name="pkg_stage"))
    (tmp_path / "config.toml").write_text(
        '[data_sources.sim]\ntype = "simulator"\nrate = 20000\n'
        '[stages.g]\ntype = "good_stage"\n[stages.e]\ntype = "ep_stage"\n'
        '[stages.p]\ntype = "pkg_stage"\n'
        f'[delivery]\ntarget = "ipc://{tmp_path}/out.ipc"\n'
    )
    # keep the caller's PYTHONPATH after the demo distribution, so the hftagg under test is the
    # one the suite imports (a worktree), not whichever one the virtualenv has installed
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), *inherited]))
    return tmp_path, env


@pytest.mark.slow
def test_plugins_json_lists_all_three_origins_and_the_broken_file(plugin_world):
    root, env = plugin_world
    out = subprocess.run(
        [PYTHON, "-m", "hftagg", "plugins", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    records = {r["name"]: r for r in json.loads(out.stdout)}
    assert records["hftagg.builtins.core.indicators.stages"]["origin"] == "built-in"
    assert (
        "ema (core)" in records["hftagg.builtins.core.indicators.stages"]["provides"]["stage_types"]
    )
    assert "trade@2" in records["hftagg.builtins.records"]["provides"]["schemas"]
    assert records["hftagg.builtins.delivery.pynng.transport"]["provides"] == {
        "transports": ["pynng"]
    }
    assert records["ep_demo"]["origin"] == "entry point"
    assert records["ep_demo"]["location"] == "hftagg-ep-demo: hftagg_ep_demo"
    assert records["ep_demo"]["provides"] == {"stage_types": ["ep_stage (core)"]}
    assert records["good_stage"]["origin"] == "file"
    assert records["good_stage"]["location"] == str(root / "plugins" / "good_stage.py")
    assert records["pkg_plugin"]["provides"] == {"stage_types": ["pkg_stage (core)"]}
    assert "RuntimeError: boom at import" in records["broken"]["error"]
    assert "Traceback" in records["broken"]["error"]
    assert "_private" not in records
    assert all(r["error"] is None for name, r in records.items() if name != "broken")


@pytest.mark.slow
def test_plugins_text_output_shows_origin_and_error(plugin_world):
    root, env = plugin_world
    out = subprocess.run(
        [PYTHON, "-m", "hftagg", "plugins"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert f"good_stage  [file] {root / 'plugins' / 'good_stage.py'}  ok" in out.stdout
    assert "ep_demo  [entry point] hftagg-ep-demo: hftagg_ep_demo  ok" in out.stdout
    assert "broken  [file]" in out.stdout and "FAILED" in out.stdout
    assert "    | RuntimeError: boom at import" in out.stdout


@pytest.mark.slow
def test_pipeline_runs_with_a_broken_plugin_next_to_good_ones(plugin_world):
    root, env = plugin_world
    out = subprocess.run(
        [PYTHON, "-m", "hftagg", "run", "--duration", "1.5", "--quiet"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "plugin 'broken'" in out.stderr and "RuntimeError: boom at import" in out.stderr
    summary = out.stdout.split("hftagg summary")[1].splitlines()
    for stage in ("g", "e", "p"):
        line = next(x for x in summary if x.strip().startswith(stage + " "))
        assert int(line.split()[2].replace(",", "")) > 0  # each plugin stage processed trades


def test_duplicate_stage_type_is_an_error_naming_both_plugins(tmp_path):
    (tmp_path / "a_first.py").write_text(STAGE_PLUGIN.format(cls="A", name="same"))
    (tmp_path / "b_second.py").write_text(STAGE_PLUGIN.format(cls="B", name="same"))
    host = load_plugins([tmp_path], entry_points=False)
    failed = {r.name: r.error for r in host.failed}
    assert list(failed) == ["a_first", "b_second"]  # neither wins by its file name
    for error in failed.values():
        assert (
            f"stage type 'same' is registered by plugin 'a_first' ({tmp_path / 'a_first.py'}) "
            f"and plugin 'b_second' ({tmp_path / 'b_second.py'}); none of them is loaded"
        ) in error
    assert "same" not in host.stage_origin


def test_stage_type_with_a_dot_is_rejected(tmp_path):
    (tmp_path / "dotted.py").write_text(STAGE_PLUGIN.format(cls="D", name="a.b"))
    host = load_plugins([tmp_path], entry_points=False)
    assert "has type_name 'a.b'; set a non-empty type_name without dots" in host.failed[0].error
    assert "a.b" not in host.stage_types


def test_builtins_register_through_the_same_hooks_as_third_parties():
    host = load_plugins([], entry_points=False)
    for name in ("simulator", "ema", "publisher"):
        assert host.stage_origin[name].startswith("hftagg.builtins.")
    impls = host.pm.hook.hftagg_register_stage_types.get_hookimpls()
    assert {i.plugin_name for i in impls} >= {"hftagg.builtins.core.indicators.stages"}


def test_every_hookspec_is_documented_and_prefixed():
    specs = [getattr(hookspecs, n) for n in dir(hookspecs) if n.startswith("hftagg_")]
    assert len(specs) >= 5
    for spec in specs:
        doc = textwrap.dedent(spec.__doc__ or "")
        assert len(doc.split()) >= 15, f"{spec.__name__} needs a docstring saying when it is called"
        assert "Called" in doc, f"{spec.__name__}: say when it is called"
    names = [
        n for n in vars(hookspecs) if callable(getattr(hookspecs, n)) and n.startswith("hftagg")
    ]
    assert all(n.startswith("hftagg_") for n in names)


def test_hooks_are_not_called_per_batch():
    """The hot path must not go through pluggy: count hook calls during a run."""
    from hftagg.builtins.core.indicators.stages import Ema
    from hftagg.records import TRADE
    from hftagg.testing import TestingSink, TestingSource, run_pipeline

    host = load_plugins([], entry_points=False)
    calls = []
    undo = host.pm.add_hookcall_monitoring(lambda name, *_: calls.append(name), lambda *_: None)
    batches = [TRADE.empty(10) for _ in range(50)]
    run_pipeline([TestingSource(batches), Ema(window=3), TestingSink([])], host=host, threaded=True)
    undo()
    # the lifecycle hooks run (so the monitor sees this host), once each -- nothing per batch
    assert sorted(calls) == ["hftagg_pipeline_started", "hftagg_pipeline_stopping"]


def test_example_plugin_copied_and_edited_shows_up(tmp_path):
    """What a user does: copy plugins/example_*.py, rename its stage, restart."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    source = (ROOT / "plugins" / "example_midprice.py").read_text()
    edited = source.replace('"example_midprice"', '"my_mid"').replace("(bid + ask) / 2", "bid")
    (plugins / "my_mid.py").write_text(edited)
    host = load_plugins([plugins], entry_points=False)
    record = next(r for r in host.records if r.name == "my_mid")
    assert record.error is None and record.provides == {"stage_types": ["my_mid (analytics)"]}
