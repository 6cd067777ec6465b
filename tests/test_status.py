"""Status output of ``hftagg run``: a table redrawn in place on a terminal, plain lines otherwise.

The terminal case runs ``hftagg run`` on a real pseudo-terminal; the pipeline includes the SBE
encoder and decoder, whose row must show raw chunks in and the (many more) records out.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from .conftest import hftagg_cmd

CONFIG = """
[runtime]
plugin_paths = []
status_interval_secs = 0.3

[data_sources.sim]
type = "simulator"
fields = ["trades", "book"]
topic_prefix = "sim"
rate = 50000

[stages.encode]
type = "sbe_encode"
topics = { trades = "sim.trades", book = "sim.book", output = "raw.sbe" }

[stages.decode]
type = "sbe_decode"
topics = { input = "raw.sbe" }

[delivery]
enabled = false

[telemetry]
prometheus = false
"""

HEADER = re.compile(r"^stage\s+in/s\s+out/s\s+batch\s+backlog\s+drops\s+dead\s+p99\s*$")


def rate(text: str) -> float:
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(text[-1], 1.0)
    return float(text.rstrip("kMG")) * scale


def tables_in(text: str) -> list[dict[str, list[str]]]:
    """The status tables drawn so far: per table, stage -> its row's cells."""
    tables = []
    for frame in text.split("\x1b[J"):  # each redraw: cursor up over the last one, clear below
        lines = frame.splitlines()
        start = next((i for i, x in enumerate(lines) if HEADER.match(x)), None)
        if start is None:
            continue
        rows = {}
        for line in lines[start + 1 :]:
            if not line.strip() or line.startswith(("hftagg", " ")):
                break  # the end of the table (the summary follows the last one)
            rows[line.split()[0]] = line.split()
        tables.append(rows)
    return tables


def decoding(tables: list[dict]) -> list[list[str]]:
    return [t["decode"] for t in tables if "decode" in t and rate(t["decode"][1]) > 0]


def run_on_a_terminal(tmp_path) -> str:
    """``hftagg run`` on a pseudo-terminal until the decoder has shown some work (its kernels
    may compile first), then Ctrl-C; returns everything it wrote."""
    (tmp_path / "config.toml").write_text(CONFIG)
    main, child = pty.openpty()
    proc = subprocess.Popen(
        hftagg_cmd("run", "--config", "config.toml"),
        cwd=tmp_path,
        stdout=child,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 180
    stopping = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
            text = b"".join(chunks).decode("utf-8", "replace")
            if not stopping and len(decoding(tables_in(text))) >= 3:
                proc.send_signal(signal.SIGINT)  # once: Ctrl-C drains and exits 0
                stopping = True
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.mark.slow
def test_on_a_terminal_status_is_a_table_redrawn_in_place_with_decoder_records_out(tmp_path):
    text = run_on_a_terminal(tmp_path)
    tables = tables_in(text)
    assert len(tables) >= 3 and text.count("\x1b[J") >= len(tables) - 1  # drawn over each other
    for rows in tables:
        assert {"sim", "encode", "decode", "ema"} <= set(rows), rows
        assert rows["sim"][1] == "-" and rows["ema"][2] != "-"  # a source reads nothing
    # the decoder reads raw chunks and emits records: both are shown, records out >> chunks in
    # (how many records a chunk holds depends on how busy the machine is: 10x held on a quiet
    # one, 9.8x was seen under load; a table showing chunks for both would give 1x)
    busy = decoding(tables)
    assert len(busy) >= 3
    assert all(rate(r[2]) > 3 * rate(r[1]) for r in busy), busy
    assert "hftagg summary" in text
    # and the summary says what the decoder emitted, not only the chunks it read
    decode = re.search(r"^  decode\s+sbe_decode\s+([\d,]+) records .* out ([\d,]+)", text, re.M)
    assert decode, text
    chunks, records = (int(g.replace(",", "")) for g in decode.groups())
    assert records > 3 * chunks > 0


@pytest.mark.slow
def test_off_a_terminal_status_is_one_plain_line_per_interval(tmp_path):
    (tmp_path / "config.toml").write_text(CONFIG.replace("rate = 50000", "rate = 5000"))
    result = subprocess.run(
        hftagg_cmd("run", "--config", "config.toml", "--duration", "1.2"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    status = [x for x in result.stdout.splitlines() if x.startswith("[")]
    assert len(status) >= 2
    assert all(" | decode " in x and " out " in x for x in status)
