"""Benchmark output: readable units, progress on stderr, README commands that work as pasted."""

from __future__ import annotations

import io
import re
import shlex

import pytest

from benchmarks.__main__ import Progress, available, build_parser
from benchmarks.harness import Result, format_quantity, format_result

from .conftest import ROOT


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (11_400_000.0, "ns", "11.40 ms"),  # was "11.40 Mns"
        (213_550_000.0, "ns", "213.55 ms"),
        (850.0, "ns", "850.00 ns"),
        (54_000.0, "ns", "54.00 us"),
        (2_500.0, "ms", "2.50 s"),
        (0.5, "ms", "500.00 us"),
        (592_120_000.0, "el/s", "592.12 Mel/s"),
        (12_380.0, "msg/s", "12.38 kmsg/s"),
        (5.0, "rec/s", "5.00 rec/s"),
    ],
)
def test_quantities_are_shown_in_readable_units(value, unit, text):
    assert format_quantity(value, unit) == text


def test_a_latency_result_never_shows_a_prefixed_time_unit():
    result = Result(
        "e2e p99", 11_400_000.0, 594_820_000.0, "subscriber", "ns", lower_is_better=True
    )

    line = format_result(result)

    assert "hftagg 11.40 ms" in line and "subscriber 594.82 ms" in line
    assert not re.search(r"[kMG]ns\b", line)
    assert "ratio 52.2x" in line


def test_details_show_counts_with_separators_and_rates_with_prefixes():
    result = Result(
        "ema",
        5e8,
        1e8,
        "pandas",
        "el/s",
        extra={"records": 10_000_000, "talib el/s": 356_100_000.0},
    )

    lines = format_result(result).splitlines()

    assert lines[1].strip() == "records: 10,000,000"
    assert lines[2].strip() == "talib el/s: 356.10 M"


def test_progress_names_each_benchmark_its_position_and_time():
    stream = io.StringIO()  # not a terminal: one line at the start and one at the end
    progress = Progress(2, stream)

    t0 = progress.start(1, "ring")
    progress.finish(1, "ring", t0, "2 result(s)")
    t0 = progress.start(2, "ema")
    progress.finish(2, "ema", t0, "FAILED")

    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/2] ring: running"
    assert re.fullmatch(r"\[1/2\] ring: 2 result\(s\) in \d+\.\ds", lines[1])
    assert lines[2] == "[2/2] ema: running"
    assert re.fullmatch(r"\[2/2\] ema: FAILED in \d+\.\ds", lines[3])


def _benchmark_commands() -> list[str]:
    commands = []
    for doc in ("README.md", "BENCHMARKS.md"):
        for match in re.finditer(
            r"[^\s`]*python[^\s`]* -m benchmarks[^`\n#]*", (ROOT / doc).read_text()
        ):
            commands.append(match.group(0).strip())
    return commands


def test_documented_benchmark_commands_work_as_pasted():
    commands = _benchmark_commands()
    parser = build_parser(available())

    assert len(commands) >= 5
    for command in commands:
        words = shlex.split(command)
        assert words[:3] == [".venv/bin/python", "-m", "benchmarks"], command
        if "[NAME" in command:  # the synopsis line
            continue
        args = parser.parse_args(words[3:])
        assert set(args.names) <= set(available()), command
