"""``hftagg config validate`` runs every check that opening the stages would run, without opening
anything: a config it accepts starts. Each problem names the key, the value and the fix.

Each case below was accepted by ``config validate`` and then failed (or silently misbehaved) when
the pipeline started.
"""

from __future__ import annotations

import socket

import pytest

from hftagg.errors import ConfigError
from hftagg.plugins.manager import load_plugins
from hftagg.runtime.assemble import assemble

from .conftest import ROOT, free_port, run_cli

SIM = '[data_sources.sim]\ntype = "simulator"\n'
SBE = '[stages.enc]\ntype = "sbe_encode"\nschema = "{schema}"\n'


@pytest.fixture(scope="module")
def host():
    return load_plugins([ROOT / "plugins"], entry_points=False)


def problems(text: str, host, tmp_path, environ=None) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        assemble(path, environ or {}, host=host)
    return [str(p).removeprefix(f"{path}: ") for p in info.value.problems]


CASES = {
    "delivery on 0.0.0.0": (
        SIM + '[delivery]\ntarget = "tcp://0.0.0.0:5555"\n',
        "delivery.target = 'tcp://0.0.0.0:5555': listens beyond loopback (host '0.0.0.0'); use "
        "127.0.0.1 (or ipc://), or set delivery.allow_remote = true to expose it on purpose",
    ),
    "delivery garbage URL": (
        SIM + '[delivery]\ntarget = "localhost5555"\n',
        "delivery.target = 'localhost5555': expected a URL, e.g. tcp://127.0.0.1:5555 or "
        "ipc:///tmp/hftagg.ipc",
    ),
    "delivery bad port": (
        SIM + '[delivery]\ntarget = "tcp://127.0.0.1:70000"\n',
        "delivery.target = 'tcp://127.0.0.1:70000': port '70000' is not a port number 0-65535 (0: any free one)",
    ),
    "delivery unknown scheme": (
        SIM + '[delivery]\ntarget = "http://127.0.0.1:5555"\n',
        "delivery.target = 'http://127.0.0.1:5555': scheme 'http' is not one of tcp,",
    ),
    "delivery unknown transport": (
        SIM + '[delivery]\nmethod = "zmq"\n',
        "delivery.method = 'zmq': no such transport; registered: pynng",
    ),
    "delivery unknown pattern": (
        SIM + '[delivery]\npattern = "pair"\n',
        "delivery.pattern = 'pair': transport 'pynng' supports pub, push",
    ),
    "metrics on 0.0.0.0": (
        SIM + '[telemetry]\nprometheus_address = "0.0.0.0:9464"\n',
        "telemetry.prometheus_address = '0.0.0.0:9464': listens beyond loopback (host "
        "'0.0.0.0'); use 127.0.0.1, or set telemetry.allow_remote = true",
    ),
    "metrics bad port": (
        SIM + '[telemetry]\nprometheus_address = "127.0.0.1:http"\n',
        "telemetry.prometheus_address = '127.0.0.1:http': port 'http' is not a port number",
    ),
    "missing schema file": (
        SIM + SBE.format(schema="sbe/missing.xml"),
        "stages.enc.schema = 'sbe/missing.xml': SBE schema 'sbe/missing.xml' not found in ",
    ),
    "enabled as a string": (
        SIM + '[stages.mid]\ntype = "example_midprice"\nenabled = "no"\n',
        "stages.mid.enabled = 'no': expected true or false (a TOML boolean, unquoted)",
    ),
    "tick below the price scale": (
        SIM + "tick_size = 1e-12\n",
        "data_sources.sim.tick_size = 1e-12: a tick below 1e-9 (the price scale) rounds to 0 "
        "and every price would be 0; use at least 1e-9",
    ),
    "start price past int64": (
        SIM + "start_price = 1e300\n",
        "data_sources.sim.start_price = 1e+300: prices are int64 at a 1e-9 scale (at most about "
        "9.2e9); use at most 1e+09",
    ),
    "ring too large for memory": (
        "[runtime]\nring_bytes = 17179869184\n" + SIM,
        "runtime.ring_bytes = 17179869184: 2 topic rings need 22.0 GiB",
    ),
    "NaN": (
        "[runtime]\nstatus_interval_secs = nan\n" + SIM,
        "runtime.status_interval_secs = nan: input should be a finite number",
    ),
    "misspelt source under use_mock_data": (
        '[data_sources.feed]\ntype = "dbn_replai"\npath = "x.dbn"\n'
        "[processing]\nuse_mock_data = true\n",
        "data_sources.feed.type = 'dbn_replai': unknown stage type (did you mean 'dbn_replay'?)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validation_finds_what_opening_would_refuse(case, host, tmp_path):
    text, expected = CASES[case]
    found = problems(text, host, tmp_path)
    assert any(line.startswith(expected) for line in found), found
    assert len(found) == 1, found  # one mistake, one line: no knock-on noise


def test_a_schema_that_is_not_xml_names_the_file(host, tmp_path):
    bad = tmp_path / "broken.xml"
    bad.write_text("this is not XML\n")
    found = problems(SIM + SBE.format(schema=bad), host, tmp_path)
    assert found == [
        f"stages.enc.schema = '{bad}': {bad} is not a usable SBE XML schema: cannot read SBE "
        f"schema '{bad}': syntax error: line 1, column 0"
    ]


def test_an_environment_variable_is_blamed_not_the_file(host, tmp_path):
    found = problems(SIM, host, tmp_path, environ={"HFTAGG__RUNTIME__MAX_BATCH": "many"})
    assert found == [
        "env HFTAGG__RUNTIME__MAX_BATCH: runtime.max_batch = 'many': input should be a valid "
        "integer"
    ]


@pytest.mark.slow
def test_validate_opens_no_socket_and_the_config_it_accepts_starts(tmp_path):
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        '[data_sources.feed]\ntype = "dbn_replay"\npath = "data/*.dbn.zst"\n'
        "[processing]\nuse_mock_data = true\n"
        f'[delivery]\ntarget = "tcp://127.0.0.1:{port}"\n[telemetry]\nprometheus = false\n'
    )
    note = (
        "data_sources.feed: processing.use_mock_data = true runs the simulator instead of type "
        "'dbn_replay' (its parameters path are not used)"
    )
    with socket.socket() as holder:  # validation must not need the port free
        holder.bind(("127.0.0.1", port))
        valid = run_cli("config", "validate", str(config), cwd=tmp_path)
    ran = run_cli("run", "--config", str(config), "--duration", "1", "--quiet", cwd=tmp_path)
    assert valid.returncode == 0, valid.stderr
    assert ran.returncode == 0, ran.stderr
    assert "hftagg summary" in ran.stdout
    assert f"note: {note}" in valid.stdout  # both say what use_mock_data replaced
    assert f"hftagg: note: {note}" in ran.stdout
