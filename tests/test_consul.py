"""Consul KV config layer: initial read, blocking-query watch, outages, tokens."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from hftagg.config.consul import ConsulSource, layer_from_items
from hftagg.errors import ConfigError

from .conftest import free_port
from .consul_fake import FakeConsul


class Changes:
    """Collects on_change calls; ``wait_for(n)`` blocks until there are n of them."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self._cond = threading.Condition()

    def __call__(self, layer: dict) -> None:
        with self._cond:
            self.calls.append(layer)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 2.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.calls) >= count, timeout)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def fake():
    server = FakeConsul(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def watch(fake):
    sources: list[ConsulSource] = []

    def make(**kwargs) -> tuple[ConsulSource, Changes]:
        changes = Changes()
        kwargs.setdefault("wait", "1s")
        source = ConsulSource(fake.address, "hftagg/", changes, **kwargs)
        sources.append(source)
        return source, changes

    yield make
    for source in sources:
        source.stop()


def test_keys_map_to_nested_config_with_toml_values():
    items = [
        {"Key": "hftagg/processing/ema_window", "Value": b"30"},
        {"Key": "hftagg/data_sources/sim/fields", "Value": b'["trades"]'},
        {"Key": "hftagg/delivery/target", "Value": b"tcp://127.0.0.1:7000"},
        {"Key": "hftagg/stages/", "Value": None},
        {"Key": "other/x", "Value": b"1"},
    ]

    assert layer_from_items(items, "hftagg/") == {
        "processing": {"ema_window": 30},
        "data_sources": {"sim": {"fields": ["trades"]}},
        "delivery": {"target": "tcp://127.0.0.1:7000"},
    }


def test_initial_fetch_reads_the_prefix(fake, watch):
    fake.put("hftagg/processing/ema_window", "30")
    fake.put("other/processing/ema_window", "99")
    source, _ = watch()

    layer = source.fetch_once()

    assert layer == {"processing": {"ema_window": 30}}
    assert source.status == "connected"


def test_empty_prefix_is_an_empty_layer(fake, watch):
    source, _ = watch()

    assert source.fetch_once() == {}


def test_a_put_triggers_on_change_promptly(fake, watch):
    fake.put("hftagg/processing/ema_window", "30")
    source, changes = watch(wait="30s")
    source.fetch_once()
    source.start()
    time.sleep(0.1)  # let the watch block on the current index

    started = time.monotonic()
    fake.put("hftagg/data_sources/sim/rate", "5000")

    assert changes.wait_for(1, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert changes.calls == [
        {"processing": {"ema_window": 30}, "data_sources": {"sim": {"rate": 5000}}}
    ]


def test_unchanged_layer_does_not_trigger(fake, watch):
    fake.put("hftagg/processing/ema_window", "30")
    source, changes = watch(wait="200ms")
    source.fetch_once()
    source.start()

    fake.put("elsewhere/key", "1")  # index moves, our layer does not
    fake.put("hftagg/processing/ema_window", "30")  # same value rewritten
    time.sleep(0.8)  # several wait timeouts

    assert changes.calls == []


def test_start_without_fetch_reports_the_initial_layer(fake, watch):
    fake.put("hftagg/processing/ema_window", "12")
    source, changes = watch()

    source.start()

    assert changes.wait_for(1)
    assert changes.calls[0] == {"processing": {"ema_window": 12}}


def test_delete_removes_the_key(fake, watch):
    fake.put("hftagg/processing/ema_window", "30")
    fake.put("hftagg/processing/ema_seed", '"sma"')
    source, changes = watch()
    source.fetch_once()
    source.start()

    fake.delete("hftagg/processing/ema_seed")

    assert changes.wait_for(1)
    assert changes.calls[-1] == {"processing": {"ema_window": 30}}


def test_index_going_backwards_resets_the_watch(fake, watch):
    fake.put("hftagg/processing/ema_window", "30")
    for i in range(10):
        fake.put(f"other/{i}", "x")
    source, changes = watch(wait="200ms")
    source.fetch_once()
    source.start()

    fake.set_index(1)  # e.g. a snapshot restore
    fake.put("hftagg/processing/ema_window", "31")  # index 2: below what the watch holds

    assert changes.wait_for(1, timeout=3.0)
    assert changes.calls[-1] == {"processing": {"ema_window": 31}}


def test_outage_is_reported_and_the_watch_recovers_on_the_same_port(fake, watch):
    fake.put("hftagg/processing/ema_window", "30")
    source, changes = watch(wait="500ms")
    source.fetch_once()
    source.start()

    fake.stop()
    assert wait_until(lambda: source.status.startswith("unreachable: "))
    assert source.last_error is not None
    time.sleep(0.5)  # a few retries while down; the thread must survive them
    fake.put("hftagg/processing/ema_window", "40")  # changed while the agent was down
    fake.start()

    assert changes.wait_for(1, timeout=5.0)
    assert changes.calls[-1] == {"processing": {"ema_window": 40}}
    assert wait_until(lambda: source.status == "connected")


def test_unreachable_at_startup_raises_config_error_naming_the_address():
    address = f"127.0.0.1:{free_port()}"
    source = ConsulSource(address, "hftagg/", None)

    with pytest.raises(ConfigError, match=address):
        source.fetch_once()
    assert source.status.startswith("unreachable: ")


def test_token_is_sent_as_x_consul_token(fake, watch, monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
    explicit, _ = watch(token="s3cret")
    from_env, _ = watch()

    explicit.fetch_once()
    from_env.fetch_once()

    assert fake.tokens() == ["s3cret", "from-env"]


def test_stop_is_prompt(fake, watch):
    source, _ = watch(wait="30s")
    source.fetch_once()
    source.start()
    time.sleep(0.1)

    started = time.monotonic()
    source.stop()

    assert time.monotonic() - started < 1.5


@pytest.mark.skipif(
    not os.environ.get("CONSUL_HTTP_ADDR"),
    reason="Consul itself is not installable on these machines",
)
def test_against_a_real_consul_agent():
    import consul

    address = os.environ["CONSUL_HTTP_ADDR"]
    prefix = f"hftagg-test-{uuid.uuid4().hex[:8]}/"
    source = ConsulSource(address, prefix, changes := Changes(), wait="5s")
    client = source._connect()
    try:
        client.kv.put(f"{prefix}processing/ema_window", "30")
        assert source.fetch_once() == {"processing": {"ema_window": 30}}
        source.start()
        client.kv.put(f"{prefix}processing/ema_window", "31")
        assert changes.wait_for(1, timeout=5.0)
        assert changes.calls[-1] == {"processing": {"ema_window": 31}}
    finally:
        source.stop()
        consul.Consul(
            host=source._host, port=source._port, scheme=source._scheme, token=source.token
        ).kv.delete(prefix, recurse=True)
