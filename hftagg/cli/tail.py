"""``hftagg tail``: print the records a running pipeline delivers on one or more topics.

Human-readable by default, one line per record: ``TOPIC field=value ...`` with times as ISO 8601
UTC (nanoseconds), fixed-point prices and quantities as exact decimals, side/action codes as
letters, and after ``instrument_id`` its ``symbol`` and ``venue`` from the config's instrument
registry (:mod:`hftagg.instruments`; ids it does not know print alone). ``--format json``: one JSON object per line (times as ISO strings plus the raw ``_ns``,
fixed-point values as exact decimal strings), for ``jq`` and scripts.

``--latency``: instead of records, one line per ``--interval`` (default 1 s) with the delivery
latency this subscriber measures on its own clock -- ``ts_recv`` (when the pipeline received
each record) to the moment its frame arrived here: p50, p99, p99.9 and max, plus the pynng hop
alone (the frame's ``ts_send`` to arrival) -- and the totals when it stops. Records are not
printed then: formatting 100 k lines a second would be the latency it measures.

It says what it waits for, reports every frame it cannot decode (the first of each kind as it
happens, all of them at the end), what was lost between frames, duplicates and publisher
restarts, and stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np

from hftagg.cli.common import add_config_option, config_path, non_negative_int, positive_float
from hftagg.records.fixed import field_decimals, format_fixed

__all__ = ["add_parser", "cmd_tail", "format_records"]

TIME_FIELDS = frozenset({"ts_event", "ts_recv"})
CODE_FIELDS = frozenset({"side", "action"})


def _iso(values: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(values.astype("datetime64[ns]"), unit="ns"), "Z")


def _column(name: str, values: np.ndarray) -> list:
    """Display values of one field, one per record (a list for sub-array fields)."""
    dtype = values.dtype
    shape = values.shape[1:]
    flat = values.reshape(len(values), -1) if shape else values
    if shape and dtype == np.uint8:  # raw bytes (a raw_chunk's data)
        return [f"<{flat.shape[1]} bytes>"] * len(values)
    decimals = field_decimals(name, dtype)
    if decimals is not None:
        text = format_fixed(flat, decimals).astype(str)
    elif name in TIME_FIELDS and dtype == np.dtype("<i8"):
        text = _iso(flat)
    elif name in CODE_FIELDS and dtype == np.uint8:
        text = np.array([chr(c) if 32 < c < 127 else str(c) for c in flat.ravel()])
    elif dtype.kind == "S":
        return [v.rstrip(b"\0").decode("utf-8", "replace") for v in flat]
    elif dtype.kind == "V":
        return [f"<{dtype.itemsize} bytes>"] * len(values)
    elif dtype.kind == "f":
        return [float(v) for v in flat.ravel()] if not shape else flat.tolist()
    else:
        return flat.tolist()
    return text.reshape(len(values), -1).tolist() if shape else text.tolist()


def format_records(topic: str, batch: np.ndarray, fmt: str = "text", instruments=None) -> list[str]:
    """One line per record of ``batch``: ``text`` (``TOPIC k=v ...``) or ``json``.

    With an instrument registry, ``symbol`` and ``venue`` follow ``instrument_id`` (looked up
    once per distinct id in the batch); an id the registry does not know gets none in text and
    ``null`` in JSON."""
    names = list(batch.dtype.names or ())
    columns = {}
    for name in names:
        values = batch[name]
        if values.ndim == 1 and batch.dtype[name].shape:  # a sub-array field read per record
            values = np.stack(values)
        columns[name] = _column(name, values)
    if instruments is not None and "instrument_id" in columns:
        columns["symbol"], columns["venue"] = _symbols(instruments, batch["instrument_id"])
        at = names.index("instrument_id") + 1
        names[at:at] = ["symbol", "venue"]
    if fmt == "json":
        lines = []
        for i in range(len(batch)):
            row: dict = {"topic": topic}
            for name in names:
                row[name] = columns[name][i]
                if name in TIME_FIELDS:
                    row[f"{name}_ns"] = int(batch[name][i])
            lines.append(json.dumps(row))
        return lines
    return [
        f"{topic} "
        + " ".join(
            f"{name}={_text(columns[name][i])}" for name in names if columns[name][i] is not None
        )
        for i in range(len(batch))
    ]


def _symbols(instruments, ids: np.ndarray) -> tuple[list, list]:
    """Per record: the canonical symbol and venue of its id (``None`` where unknown)."""
    uniq, inverse = np.unique(ids, return_inverse=True)
    found = [instruments.get(int(i)) for i in uniq]
    symbols = np.array([None if f is None else f.symbol for f in found], dtype=object)
    venues = np.array([None if f is None else f.venue for f in found], dtype=object)
    return np.take(symbols, inverse).tolist(), np.take(venues, inverse).tolist()


def _text(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class _Reporter:
    """Tells the user, on stderr, about bad frames as they happen (once per kind)."""

    def __init__(self, sub, err: Callable[[str], None]) -> None:
        self.sub = sub
        self.err = err
        self.seen: set[str] = set()
        self.printed = 0

    def check(self) -> None:
        for kind in self.sub.bad_reasons:
            if kind not in self.seen:
                self.seen.add(kind)
                self.err(f"skipped a frame it cannot decode ({kind}): {self.sub.last_error}")

    def summary(self) -> list[str]:
        sub = self.sub
        lines = []
        if sub.bad_frames:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(sub.bad_reasons.items()))
            lines.append(f"{sub.bad_frames} frames could not be decoded and were skipped ({kinds})")
        if sub.gaps:
            lines.append(f"{sub.gaps} records were lost between frames")
        if sub.duplicates:
            lines.append(f"{sub.duplicates} records were received twice")
        if sub.restarts:
            lines.append(f"the publisher restarted {sub.restarts} time(s) (offsets started over)")
        if sub.dropped_connections:
            lines.append(
                f"the connection dropped {sub.dropped_connections} time(s) (a publisher that "
                f"stopped, or a frame over --max-frame-bytes {sub.max_frame_bytes})"
            )
        return lines


def _address(args: argparse.Namespace) -> tuple[str, int | None]:
    if args.address is not None and args.max_frame_bytes is not None:
        return args.address, args.max_frame_bytes
    from hftagg.config.load import read_layers
    from hftagg.errors import ConfigError

    try:
        delivery = read_layers(config_path(args.config)).get("delivery", {})
    except ConfigError:
        if args.address is None:  # the config was needed for the address: say what is wrong
            raise
        delivery = {}  # --address given: a broken config.toml here is not tail's business
    address = args.address or delivery.get("target", "tcp://127.0.0.1:5555")
    return address, args.max_frame_bytes or delivery.get("max_frame_bytes")


class _Instruments:
    """The config's instrument registry for the output, reloaded when the instruments file
    changes (checked at most every ``every_secs``), so ``hftagg symbols add`` in another
    terminal shows in a running tail."""

    def __init__(self, args: argparse.Namespace, err: Callable[[str], None], every_secs=2.0):
        from hftagg.config.load import read_layers
        from hftagg.instruments import instruments_file

        self._err = err
        self._every = every_secs
        self._config = config_path(args.config)
        try:
            self._raw = read_layers(self._config)
        except Exception:  # tail's address logic reports a broken config itself
            self._raw = {}
        self._file = instruments_file(self._config, self._raw.get("instruments"))
        self._stamp = self._mtime()
        self._checked = time.monotonic()
        self.registry = self._load()

    def _mtime(self) -> int | None:
        try:
            return self._file.stat().st_mtime_ns
        except OSError:
            return None

    def _load(self):
        from hftagg.errors import HftaggError
        from hftagg.instruments import load_registry

        try:
            return load_registry(self._config, self._raw)
        except HftaggError as exc:
            self._err(f"instruments not loaded (symbols of the last good load, else ids): {exc}")
            return None

    def current(self):
        now = time.monotonic()
        if now - self._checked >= self._every:
            self._checked = now
            stamp = self._mtime()
            if stamp != self._stamp:
                self._stamp = stamp
                self.registry = self._load() or self.registry
        return self.registry


def cmd_tail(args: argparse.Namespace) -> int:
    from hftagg.client import subscribe

    def err(text: str) -> None:
        print(f"hftagg tail: {text}", file=sys.stderr, flush=True)

    address, max_frame_bytes = _address(args)
    args.instruments = None if args.latency else _Instruments(args, err)
    topics = list(dict.fromkeys(args.topics))
    names = ", ".join(topics)
    options = {"pattern": args.pattern}
    if max_frame_bytes:
        options["max_frame_bytes"] = int(max_frame_bytes)
    reporter = None
    try:
        with subscribe(address, topics, **options) as sub:
            reporter = _Reporter(sub, err)
            err(f"waiting for {names} at {address} ({args.pattern}; Ctrl-C to stop)")
            try:
                if args.latency:
                    _print_latency(sub, reporter, args)
                else:
                    _print_frames(sub, reporter, args)
            finally:  # Ctrl-C included: say what was seen
                reporter.check()
                if args.latency:
                    _latency_total(sub)
                for line in reporter.summary():
                    err(line)
    except KeyboardInterrupt:
        return 0
    if args.timeout and reporter.printed == 0:
        err(
            f"nothing on {names if len(topics) > 1 else repr(topics[0])} at {address} within "
            f"{args.timeout}s (is the pipeline running and delivering that topic?)"
        )
        return 1
    return 0


def _print_frames(sub, reporter: _Reporter, args) -> None:
    """Print until --count, --timeout without data, or Ctrl-C."""
    poll = 1.0 if args.timeout is None else min(1.0, args.timeout)
    last = time.monotonic()
    while True:
        frame = sub.next_frame(poll)
        reporter.check()
        if frame is None:
            if args.timeout is not None and time.monotonic() - last >= args.timeout:
                return
            continue
        last = time.monotonic()
        batch = frame.records
        if args.count:
            batch = batch[: args.count - reporter.printed]
        lines = format_records(frame.topic, batch, args.format, args.instruments.current())
        if lines:
            print("\n".join(lines), flush=True)
        reporter.printed += len(lines)
        if args.count and reporter.printed >= args.count:
            return


def _latency_line(label: str, path: dict, hop: dict) -> str:
    from hftagg.client import format_latency, format_ns

    return (
        f"latency {label}: ts_recv->here {format_latency(path)} | "
        f"pynng hop p99 {format_ns(hop['p99_ns'])} max {format_ns(hop['max_ns'])}"
    )


def _print_latency(sub, reporter: _Reporter, args) -> None:
    """One line per --interval; stops on --count records, --timeout without data, or Ctrl-C."""
    interval = args.interval
    last_data = time.monotonic()
    next_line = last_data + interval
    while True:
        now = time.monotonic()
        frame = sub.next_frame(max(0.001, min(next_line - now, 1.0)))
        reporter.check()
        now = time.monotonic()
        if frame is not None:
            last_data = now
            reporter.printed += len(frame.records)
        if now >= next_line:
            path, hop = sub.latency.interval(), sub.transport_latency.interval()
            if path["count"] or path["unmeasured"]:
                print(_latency_line(f"last {interval:g}s", path, hop), flush=True)
            next_line = now + interval
        if args.count and reporter.printed >= args.count:
            return
        if args.timeout is not None and now - last_data >= args.timeout:
            return


def _latency_total(sub) -> None:
    path, hop = sub.latency.summary(), sub.transport_latency.summary()
    print(_latency_line(f"total over {sub.frames:,} frames", path, hop), flush=True)


def add_parser(sub) -> None:
    tail = sub.add_parser(
        "tail",
        help="print records a running pipeline delivers on TOPIC(s)",
        description="Prints one line per record: times in ISO 8601 UTC, prices and quantities "
        "as exact decimals. Reports undecodable frames, gaps, duplicates and publisher "
        "restarts on stderr. Ctrl-C stops it.",
    )
    tail.add_argument("topics", nargs="+", metavar="TOPIC", help="one or more topics")
    tail.add_argument("--address", help="publisher address (default: delivery.target of config)")
    add_config_option(tail, "its delivery.target is the default address")
    tail.add_argument("--pattern", default="pub", choices=["pub", "push"])
    tail.add_argument("--format", default="text", choices=["text", "json"], help="output format")
    tail.add_argument(
        "--count", type=non_negative_int, default=0, help="stop after N records (0: never)"
    )
    tail.add_argument(
        "--timeout", type=positive_float, metavar="SECS", help="give up after SECS without data"
    )
    tail.add_argument(
        "--latency",
        action="store_true",
        help="print delivery latency (ts_recv -> this process: p50/p99/p99.9/max) every "
        "--interval and at the end, instead of the records",
    )
    tail.add_argument(
        "--interval",
        type=positive_float,
        default=1.0,
        metavar="SECS",
        help="with --latency: seconds per line (default 1)",
    )
    tail.add_argument(
        "--max-frame-bytes",
        type=non_negative_int,
        help="largest frame to accept (default: delivery.max_frame_bytes of config, or 4 MiB)",
    )
    tail.set_defaults(func=cmd_tail)
