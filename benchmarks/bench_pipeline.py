"""End to end: simulator (pre-generated batches) -> EMA -> pynng -> a subscriber process.

hftagg: the real runtime built from a config (rings, topological core pass, publisher sink),
``push`` pattern so nothing is dropped, records/s counted by the subscriber process between its
first and last frame. Baseline: the same work written the obvious way without hftagg -- a Python
loop per event updating a per-instrument EMA dict and sending one struct-packed message per event
over the same pynng socket type to the same kind of subscriber process.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.harness import Result

SUBSCRIBER = textwrap.dedent(
    """
    import json, sys, time, pynng
    from hftagg.bus.frame import decode_frame
    from hftagg.plugins.manager import load_plugins
    address, mode = sys.argv[1], sys.argv[2]
    schemas = load_plugins([], entry_points=False).schemas
    sock = pynng.Pull0(recv_buffer_size=8192)
    sock.dial(address, block=False)
    sock.recv_timeout = 2000
    print("ready", flush=True)
    records, first, last = 0, None, None
    while True:
        try:
            msg = sock.recv()
        except pynng.Timeout:
            if first is not None:
                break
            continue
        now = time.perf_counter()
        first = first or now
        last = now
        if mode == "frames":
            records += len(decode_frame(msg, schemas).records)
        else:
            records += 1
    print(json.dumps({"records": records, "secs": (last - first) if first else 0}), flush=True)
    """
)

CONFIG = """
[runtime]
ring_bytes = 67108864
max_batch = 65536
status_interval_secs = 100
plugin_paths = []

[data_sources.sim]
type = "simulator"
fields = ["trades"]
instruments = 16
rate = 0
trade_probability = 1.0
batch_records = 65536
pregenerate = 8

[processing]
ema_window = 20

[delivery]
target = "{address}"
pattern = "push"
topics = ["ind.ema"]
"""


def _address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _subscriber(address: str, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, address, mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])


def run_hftagg(seconds: float, telemetry=None, config: str = CONFIG) -> tuple[float, dict]:
    """Records/s the subscriber process received, and the pipeline's summary."""
    from hftagg.runtime.assemble import assemble

    address = _address()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(config.format(address=address))
        assembled = assemble(path, environ={})
        pipeline = assembled.pipeline(telemetry=telemetry)
        pipeline.open()  # listen before the subscriber dials
        sub = _subscriber(address, "frames")
        pipeline.start()
        time.sleep(seconds)
        summary = pipeline.stop()
    result = _finish(sub)
    return result["records"] / result["secs"], summary


def run_baseline(events: int) -> float:
    import numpy as np
    import pynng

    address = _address()
    sock = pynng.Push0(listen=address, send_buffer_size=8192)
    sub = _subscriber(address, "events")
    rng = np.random.default_rng(1)
    events_list = list(
        zip(
            rng.integers(0, 16, events).tolist(),
            (100 + rng.normal(0, 0.01, events)).tolist(),
            strict=True,
        )
    )
    alpha = 2 / 21
    ema: dict[int, float] = {}
    pack = struct.Struct("<Iqd").pack
    for seq, (iid, price) in enumerate(events_list):
        prev = ema.get(iid)
        value = price if prev is None else prev + alpha * (price - prev)
        ema[iid] = value
        sock.send(pack(iid, seq, value))
    result = _finish(sub)
    sock.close()
    return result["records"] / result["secs"]


def run(quick: bool) -> list[Result]:
    rate, summary = run_hftagg(2.0 if quick else 6.0)
    baseline = run_baseline(100_000 if quick else 300_000)
    ema = summary["stages"]["ema"]
    return [
        Result(
            name="pipeline",
            hftagg=rate,
            baseline=baseline,
            baseline_name="per-event Python loop + pynng msg",
            unit="rec/s",
            target=5e6,
            extra={
                "mean batch (ema)": round(ema["mean_batch"], 1),
                "records through ema": ema["records"],
            },
        )
    ]
