"""``hftagg config set``: one value changes, every other byte of the file stays."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from hftagg.cli.config import full_validator
from hftagg.config.edit import parse_value, set_value
from hftagg.errors import ConfigError

from .conftest import ROOT, run_cli

ODD = """\
# top comment

[runtime]
max_batch   =   4096     # odd spacing, inline comment
status_interval_secs = 1.0


[data_sources.sim]
type = "simulator"
rate = 1000   # events per second

# a comment between tables
[processing]
ema_window = 20              # live: edit while running
use_mock_data = true

[stages.mid]
type = "example_midprice"

[delivery]
target = "tcp://127.0.0.1:5999"
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(ODD)
    shutil.copytree(ROOT / "plugins", tmp_path / "plugins")
    return path


def test_set_replaces_only_the_value_and_keeps_the_inline_comment(config):
    old, new = set_value(config, "processing.ema_window", "30", full_validator(config))

    assert (old, new) == (20, 30)
    expected = ODD.replace("ema_window = 20 ", "ema_window = 30 ")
    assert config.read_text() == expected


def test_set_keeps_odd_spacing_around_other_keys(config):
    set_value(config, "data_sources.sim.rate", "5000")

    assert config.read_text() == ODD.replace("rate = 1000 ", "rate = 5000 ")
    assert "max_batch   =   4096     # odd spacing" in config.read_text()


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("30", 30),
        ("true", True),
        ('"x"', "x"),
        ("[1, 2]", [1, 2]),
        ("{a = 1}", {"a": 1}),
        ("plain words", "plain words"),
        ("2.5", 2.5),
    ],
)
def test_value_is_read_as_toml_else_as_a_string(raw, value):
    item = parse_value(raw)
    assert getattr(item, "unwrap", lambda: item)() == value


def test_invalid_value_raises_and_leaves_the_file_untouched(config):
    before, mtime = config.read_bytes(), config.stat().st_mtime_ns

    with pytest.raises(ConfigError) as info:
        set_value(config, "processing.ema_window", "0", full_validator(config))

    assert "processing.ema_window = 0" in str(info.value)
    assert config.read_bytes() == before
    assert config.stat().st_mtime_ns == mtime


def test_unknown_key_is_refused(config):
    before = config.read_bytes()

    with pytest.raises(ConfigError, match="stages.mid.bsp"):
        set_value(config, "stages.mid.bsp", "true", full_validator(config))

    assert config.read_bytes() == before


def test_new_key_is_added_to_its_existing_table(config):
    old, new = set_value(config, "stages.mid.bps", "true", full_validator(config))

    assert (old, new) == (None, True)
    text = config.read_text()
    assert 'type = "example_midprice"\nbps = true\n' in text
    assert text.replace("bps = true\n", "") == ODD


def test_new_table_is_created(config):
    set_value(config, "stages.ema2.type", '"ema"', None)
    set_value(config, "stages.ema2.window", "5")

    text = config.read_text()
    assert '[stages.ema2]\ntype = "ema"\nwindow = 5\n' in text
    assert text.startswith(ODD.split("[delivery]")[0])


def test_new_section_is_created(config):
    set_value(config, "runtime.drain_timeout_secs", "2.0", full_validator(config))
    set_value(config, "stages.x.type", '"ema"')

    assert "status_interval_secs = 1.0\ndrain_timeout_secs = 2.0\n" in config.read_text()


def test_setting_below_a_value_is_refused(config):
    with pytest.raises(ConfigError, match="is a value, not a table"):
        set_value(config, "runtime.max_batch.x", "1")


def test_write_is_atomic_and_keeps_the_mode(config):
    os.chmod(config, 0o600)
    inode = config.stat().st_ino

    set_value(config, "processing.ema_window", "25", full_validator(config))

    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert config.stat().st_ino != inode  # replaced, not rewritten in place
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.toml", "plugins"]


def test_crlf_line_endings_are_kept(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(ODD.replace("\n", "\r\n").encode())

    set_value(path, "processing.ema_window", "31")

    assert (
        path.read_bytes()
        == ODD.replace("ema_window = 20 ", "ema_window = 31 ").replace("\n", "\r\n").encode()
    )


@pytest.mark.slow
def test_cli_set_prints_old_new_and_liveness(config):
    result = run_cli("config", "set", "processing.ema_window", "30", "--file", str(config))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{config}: processing.ema_window = 30    (was 20; live)"
    assert "ema_window = 30              # live" in config.read_text()


@pytest.mark.slow
def test_cli_set_invalid_value_exits_1_and_names_the_key(config):
    before = config.read_bytes()

    result = run_cli("config", "set", "processing.ema_window", "-1", "--file", str(config))

    assert result.returncode == 1
    assert "processing.ema_window = -1" in result.stderr
    assert f"{config}: not changed" in result.stderr
    assert config.read_bytes() == before
