"""One source of truth for live vs restart: what ``hftagg config show --effective`` prints for a
key is what the reloader does when that key changes on a running pipeline.

For every key of the shipped config (every default included), the test writes a config with that
one value changed to another valid value and asks the reloader for its plan against a pipeline
built from the original (built, not started: planning opens nothing). ``live`` must be a plan
that keeps or reconfigures every stage and refuses nothing; ``restart`` must rebuild a stage or
be refused as needing a restart.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import tomlkit

from hftagg.builtins.protocols import find_definition
from hftagg.cli.config import effective_config
from hftagg.errors import ConfigError
from hftagg.runtime.assemble import assemble
from hftagg.runtime.reload import Reloader
from hftagg.telemetry.core import Telemetry

from .conftest import ROOT


def _set(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    doc = tomlkit.parse(tomlkit.dumps(raw))
    node: Any = doc
    *parents, last = key.split(".")
    for part in parents:
        if part not in node:
            node[part] = tomlkit.table()
        node = node[part]
    node[last] = value
    return doc


def _bump_port(text: str) -> str:
    head, _, port = text.rpartition(":")
    return f"{head}:{int(port) + 1}"


def candidates(key: str, value: Any) -> list[Any]:
    """Other values for ``key``, most likely valid first."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2, value // 2]
    if isinstance(value, float):
        return [value * 0.5, value * 2, value + 1.0, 0.5]
    if isinstance(value, list):
        return [value[:-1], value + ["extra"]] if value else [["x"], ["delivery"]]
    if isinstance(value, dict) and not value:  # runtime.waits, runtime.cpus: per thread
        return [{"core": "yielding"}, {"core": [0]}]
    if isinstance(value, str):
        out = []
        if value.rpartition(":")[2].isdigit():
            out.append(_bump_port(value))
        out += ["sma", "console", "memory", "push", "sofh", "simulated", "records", "svc"]
        out += ["yielding", "inline"]  # runtime.wait, runtime.threading
        out += ["every_batch", "12h"]  # the store's fsync and retention
        return [c for c in out if c != value] + [value + "x"]
    return []


TOPIC_KEYS = (".topics.", ".topic_prefix", "processing.ema_input", "processing.ema_output")


def _renamed(node: Any, old: str, new: str) -> Any:
    """Every string naming topic ``old`` (or a topic under prefix ``old``) renamed to ``new``."""
    if isinstance(node, dict):
        return {k: _renamed(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed(v, old, new) for v in node]
    if isinstance(node, str) and (node == old or node.startswith(old + ".")):
        return new + node[len(old) :]
    return node


def variants(root, key: str, raw: dict) -> list[dict]:
    """Whole configs that differ from ``raw`` in ``key``: a topic is renamed for its producer
    and consumers alike, so the graph stays valid; other keys get another value."""
    value = raw_value(raw, key)
    if key.endswith(".schema"):  # the same schema from another file: it must exist and parse
        copy = root / "schema-copy.xml"
        shutil.copy(find_definition(value), copy)
        return [_set(raw, key, str(copy))]
    if key == "instruments.file":  # another instruments file: it must exist
        (root / "instruments2.toml").write_text("# no instruments\n")
        return [_set(raw, key, "instruments2.toml")]
    if key == "instruments.define":
        return [_set(raw, key, [{"symbol": "TESTX", "venue": "test", "tick_size": "0.5"}])]
    if any(part in key for part in TOPIC_KEYS) and isinstance(value, str):
        return [_set(_renamed(raw, value, value + "2"), key, value + "2")]
    return [_set(raw, key, v) for v in candidates(key, value)]


def reloader_verdict(root, key: str, raw: dict, reloader: Reloader) -> str | None:
    """``live``/``restart`` as the reloader decides for the first valid other value, or None."""
    config = root / "config.toml"
    for variant in variants(root, key, raw):
        config.write_text(tomlkit.dumps(variant))
        try:
            _, changes = reloader.plan()
        except ConfigError as exc:
            if any("cannot change while running" in str(p) for p in exc.problems):
                return "restart"
            continue  # not a valid value for this key: try the next one
        acted = [c for c in changes if c.action != "keep"]
        if not acted and key.split(".")[0] not in ("runtime", "telemetry"):
            continue
        if any(c.action in ("replace", "add", "remove") for c in acted):
            return "restart"
        return "live"
    return None


def raw_value(raw: dict, key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node


@pytest.fixture
def root(tmp_path):
    shutil.copy(ROOT / "config.toml", tmp_path / "config.toml")
    shutil.copytree(ROOT / "plugins", tmp_path / "plugins")
    return tmp_path


def test_config_show_and_the_reloader_agree_on_every_key(root):
    config = root / "config.toml"
    rows = effective_config(config, environ={})
    # a default of None (unset) cannot be written in TOML; setting such a key is a change
    # of the key it stands in for (runtime.ring_capacity for ring_bytes), compared there
    rows = {k: row for k, row in rows.items() if row["value"] is not None}
    merged = {}
    for key, row in rows.items():
        _set_plain(merged, key, row["value"])
    config.write_text(tomlkit.dumps(merged))  # every default written out, so each can change
    assembled = assemble(config, environ={})
    pipeline = assembled.pipeline(telemetry=Telemetry(assembled.spec.telemetry))
    reloader = Reloader(pipeline, assembled.host, config, environ={})
    disagree, untested = {}, []
    for key, row in rows.items():
        verdict = reloader_verdict(root, key, merged, reloader)
        if verdict is None:
            untested.append(key)
        elif verdict != row["mode"]:
            disagree[key] = (row["mode"], verdict)
    assert disagree == {}
    assert len(rows) > 50 and all(row["mode"] in ("live", "restart") for row in rows.values())
    # left: keys that wire the graph, where no one-key change keeps this graph valid (a stage's
    # type, a topic whose producer's name is not in the file, the only supported format); each
    # rebuilds its stage, and config show says restart
    wiring = ("type", "fields", "format", "enabled", "use_mock_data", "ema_input", "method")
    assert all(k.rsplit(".")[-1] in wiring or ".topics." in k for k in untested), "\n".join(
        untested
    )
    assert all(rows[k]["mode"] == "restart" for k in untested)
    assert len(rows) - len(untested) > 45  # compared, not skipped


def _set_plain(out: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def test_config_params_prints_the_same_marks_for_every_section_key(root):
    from hftagg.cli.config_params import describe_sections

    rows = effective_config(root / "config.toml", environ={})
    printed = {
        f"{section}.{p['name']}": "live" if p["live"] else "restart"
        for section, described in describe_sections().items()
        for p in described["params"]
    }
    shown = {k: row["mode"] for k, row in rows.items() if k.split(".")[0] in describe_sections()}
    assert shown and all(printed[key] == mode for key, mode in shown.items())
    assert printed["runtime.drain_timeout_secs"] == "live"
    assert printed["telemetry.sample_ratio"] == "live"
