"""Protocol definitions: shipped inside the package, found through runtime.protocol_paths first.

A relative ``schema``/``dictionary`` is looked up in the config's protocol folders, then the
config's own folder, then the package's built-in definitions; a wheel install needs no checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

import hftagg
from hftagg.builtins.protocols import (
    BUILTIN_DEFINITIONS,
    find_definition,
    protocol_dirs,
    search_path,
    set_search_path,
)
from hftagg.builtins.protocols.fix.dictionary import load_dictionary
from hftagg.errors import SchemaError

REPO = Path(hftagg.__file__).resolve().parents[1]
SBE = "sbe/hftagg-md.xml"


@pytest.fixture(autouse=True)
def _restore_search_path():
    before = search_path()[:-1]
    yield
    set_search_path(before)


def test_a_config_without_protocol_folders_uses_the_built_in_definitions(tmp_path):
    set_search_path(protocol_dirs({}, tmp_path / "config.toml"))

    assert find_definition(SBE) == BUILTIN_DEFINITIONS / SBE
    assert load_dictionary("fix/FIX44.xml").messages  # the built-in QuickFIX dictionary


def test_the_users_protocol_folder_comes_first_relative_to_the_config_file(tmp_path):
    own = tmp_path / "defs" / SBE
    own.parent.mkdir(parents=True)
    shutil.copy(BUILTIN_DEFINITIONS / SBE, own)
    beside = tmp_path / "mine.xml"
    beside.write_text("<x/>")

    set_search_path(protocol_dirs({"runtime": {"protocol_paths": ["defs"]}}, tmp_path / "c.toml"))

    assert find_definition(SBE) == own
    assert find_definition("mine.xml") == beside  # the config's own folder, second


def test_a_missing_definition_names_the_path_and_every_folder_searched(tmp_path):
    set_search_path(protocol_dirs({}, tmp_path / "config.toml"))

    with pytest.raises(SchemaError) as info:
        find_definition("sbe/nope.xml", "SBE schema")

    message = str(info.value)
    assert "SBE schema 'sbe/nope.xml' not found in" in message
    assert str(tmp_path / "protocols") in message and str(BUILTIN_DEFINITIONS) in message


def test_every_shipped_definition_is_package_data():
    """A wheel must carry the definitions: every non-Python file under hftagg/builtins/protocols matches
    a package-data pattern in pyproject.toml."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["hftagg.builtins.protocols"]
    shipped = [
        p.relative_to(BUILTIN_DEFINITIONS).as_posix()
        for p in BUILTIN_DEFINITIONS.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc", ".nbi", ".nbc")
    ]
    assert SBE in shipped and "fix/FIX44.xml" in shipped
    assert [f for f in shipped if not any(fnmatch(f, pat) for pat in patterns)] == []


@pytest.mark.slow
def test_the_default_sbe_pipeline_runs_from_a_folder_with_no_protocols(tmp_path):
    shutil.copytree(REPO / "plugins", tmp_path / "plugins")
    config = (REPO / "config.toml").read_text().replace("prometheus = true", "prometheus = false")
    (tmp_path / "config.toml").write_text(config.replace("tcp://127.0.0.1:5555", "ipc://out"))
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )

    run = subprocess.run(
        [sys.executable, "-m", "hftagg", "run", "--duration", "1", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "protocols").exists()


@pytest.mark.slow
def test_config_validate_names_every_referenced_file_it_cannot_read(tmp_path):
    (tmp_path / "data" / "folder.dbn").mkdir(parents=True)
    (tmp_path / "config.toml").write_text(
        '[data_sources.replay]\ntype = "dbn_replay"\npath = "data/missing.dbn.zst"\n\n'
        '[data_sources.replay2]\ntype = "dbn_replay"\npath = "data/folder.dbn"\n\n'
        '[stages.decode]\ntype = "sbe_decode"\nschema = "sbe/nope.xml"\n\n'
        "[delivery]\nenabled = false\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )

    run = subprocess.run(
        [sys.executable, "-m", "hftagg", "config", "validate", "config.toml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert run.returncode == 1
    err = run.stderr
    assert f"replay.path = 'data/missing.dbn.zst': cannot read {tmp_path}/data/missing" in err
    assert f"replay2.path = 'data/folder.dbn': cannot read {tmp_path}/data/folder.dbn" in err
    assert "decode.schema = 'sbe/nope.xml'" in err and "not found in" in err
