"""The stage API every built-in and third-party stage implements.

A stage type declares its ``kind``, its ``type_name`` (what config calls it), a typed ``Params``
model, and the topics it consumes and produces as named ports. The runtime calls stage objects
directly once per batch; no plugin hook sits on the hot path.

Three shapes:

- ``Stage`` (core/analytics/protocol): ``process(batch)`` or ``process(batch, port)`` returns the
  output batch (one output port), a dict ``{port: batch}`` (several), or ``None``.
- ``SourceStage``: ``next_batch()`` never blocks and returns ``None`` when nothing is ready;
  ``next_awake()`` says when to ask again (Bytewax's partition interface).
- ``SinkStage``: ``write(batch, port)`` does I/O in the sink's own thread.

Durability (``[durability] wal = true``, :mod:`hftagg.runtime.durability`): offsets are then
stable across restarts (``StageContext.durable_offsets``). A sink takes part by returning from
``committed()`` the next offset it still needs per port; after a crash the runtime replays the
write-ahead log into it from there. A source that can continue where the log stops implements
``resume(position)``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hftagg.stages.params import Params

__all__ = ["KINDS", "Port", "SinkStage", "SourcePosition", "SourceStage", "Stage", "StageContext"]

KINDS = ("source", "protocol", "core", "analytics", "storage", "delivery")


@dataclass(frozen=True)
class Port:
    """A named input or output: the schema it carries (``None``: any) and its default topic."""

    schema: str | None
    topic: str
    doc: str = ""


@dataclass(frozen=True)
class StageContext:
    """What the runtime hands a stage when it opens: limits and the registries it may need."""

    max_batch: int = 4096
    topic_schemas: dict[str, Any] = field(default_factory=dict)  # topic -> Schema
    transports: dict[str, Any] = field(default_factory=dict)  # name -> transport
    telemetry: Any = None  # hftagg.telemetry.Telemetry when the pipeline has it
    codecs: dict[str, Any] = field(default_factory=dict)  # name -> codec family
    #: the write-ahead log is on: the ``offset`` a sink's ``write`` gets is the record's stream
    #: offset, the same across restarts (key rows by (topic, offset) to be idempotent)
    durable_offsets: bool = False
    #: the instrument registry (:class:`hftagg.instruments.InstrumentRegistry`): sources map
    #: venue symbols to ids with ``instruments.ids_for(venue, symbols)``; this process's
    #: registry (``hftagg run`` loads it from the config) unless a test passes its own
    instruments: Any = field(default_factory=lambda: _default_instruments())


@dataclass(frozen=True)
class SourcePosition:
    """Where the write-ahead log says a source stopped (handed to ``SourceStage.resume``).

    ``offsets``: per output port, the next stream offset, i.e. how many records of that port
    the log holds over every run so far; ``last``: per port, the last record logged (a
    one-record array; a port with nothing logged is missing); ``state``: what the source's
    ``position()`` returned with its last logged batch (``None`` if it has no such method or
    nothing was logged).
    """

    offsets: dict[str, int]
    last: dict[str, np.ndarray]
    state: Any = None


def _default_instruments() -> Any:
    from hftagg.instruments import default_registry  # late: instruments imports stages.params

    return default_registry()


class Stage:
    """A processing stage. Subclass, set the class attributes, implement ``process``."""

    kind: ClassVar[str] = "core"
    type_name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    inputs: ClassVar[dict[str, Port]] = {}
    outputs: ClassVar[dict[str, Port]] = {}
    #: what an exception from this stage does unless config says (``on_error``): ``stop`` the
    #: pipeline (crash-only, every built-in) or ``isolate`` it (dead-letter the batch, run on)
    on_error: ClassVar[str] = "stop"

    def __init__(
        self,
        params: Params | None = None,
        *,
        stage_id: str | None = None,
        topics: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        if params is None:
            params = self.Params(**kwargs)
        elif kwargs:
            raise TypeError(f"{type(self).__name__}: pass either params or keyword parameters")
        self.params = params
        self.stage_id = stage_id or self.type_name or type(self).__name__.lower()
        inputs, outputs = self.ports(params)
        overrides = dict(topics or {})
        self.input_topics = {p: overrides.pop(p, port.topic) for p, port in inputs.items()}
        self.output_topics = {p: overrides.pop(p, port.topic) for p, port in outputs.items()}
        if overrides:
            raise ValueError(
                f"stage {self.stage_id!r}: unknown port(s) {sorted(overrides)} in topics; "
                f"ports are {sorted(inputs) + sorted(outputs)}"
            )

    @classmethod
    def ports(cls, params: Params) -> tuple[dict[str, Port], dict[str, Port]]:
        """The input and output ports for these parameters (override for dynamic ports)."""
        return dict(cls.inputs), dict(cls.outputs)

    def check(self, ctx: StageContext) -> list[tuple[str, str]]:
        """Every check ``open`` would make, made without opening anything (no socket bound, no
        file written): ``hftagg config validate`` and each live change call it, so a config
        that passes them opens. Returns ``(parameter, what is wrong and how to fix it)``
        pairs; none when all is well. Reading a file (a schema, a dictionary) is fine."""
        return []

    def open(self, ctx: StageContext) -> None:
        """Called once before the first batch; ``ctx.max_batch`` is the largest batch passed."""

    def process(self, batch: np.ndarray, port: str | None = None) -> Any:
        """Process one batch from ``port``; return output batch(es) or ``None``."""
        raise NotImplementedError(f"{type(self).__name__} must implement process()")

    def reconfigure(self, params: Params) -> None:
        """Apply new live parameters in place from the next batch on. Default: swap them in."""
        self.params = params

    def snapshot(self) -> Any:
        """State to carry across a rebuild or restart (``None``: stateless)."""
        return None

    def restore(self, state: Any) -> None:
        """Take back what ``snapshot`` returned."""

    def close(self) -> None:
        """Release resources; called once when the stage leaves the graph."""

    @classmethod
    def process_takes_port(cls) -> bool:
        """Whether ``process`` accepts the port name (decided once, when the graph is built)."""
        params = list(inspect.signature(cls.process).parameters.values())[1:]
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return len(positional) >= 2

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.stage_id!r} {self.params!r}>"


class SourceStage(Stage):
    """A source: produces batches from outside (a simulator, a socket, a file)."""

    kind: ClassVar[str] = "source"

    def next_batch(self) -> np.ndarray | dict[str, np.ndarray] | None:
        """Whatever is ready now, per output port; ``None`` when nothing is. Never blocks."""
        raise NotImplementedError(f"{type(self).__name__} must implement next_batch()")

    #: the source thread's bell (hftagg.runtime.waits.Bell), given by the runtime
    _bell: Any = None

    def next_awake(self) -> float | None:
        """``time.monotonic()`` value at which to call ``next_batch`` again; ``None``: soon (the
        runtime polls such a source every 0.5 ms while it has nothing); ``math.inf``: only once
        :meth:`wake` is called (the runtime still looks once a second)."""
        return None

    def wake(self) -> None:
        """Call from any thread (a socket reader, a client library's callback) when data is
        ready: the source's thread calls ``next_batch`` at once, whatever ``next_awake`` said."""
        bell = self._bell
        if bell is not None:
            bell.set()

    @property
    def exhausted(self) -> bool:
        """True once a bounded source (a file, a test source) has nothing more to give."""
        return False

    #: whether this source type implements ``resume`` (set by subclasses that do)
    resumable: ClassVar[bool] = False

    def position(self) -> Any:
        """Where this source stands after the batch it just returned, as a small JSON-able
        value (a file index and record count, a FIX MsgSeqNum), or ``None``. With the
        write-ahead log on, it is logged atomically with that batch and handed back to
        ``resume`` as ``SourcePosition.state``. Called once per batch: keep it cheap. Only
        called when the class overrides it."""
        return None

    def resume(self, position: SourcePosition) -> None:
        """Continue after what the write-ahead log holds (called after ``open``, before the
        first ``next_batch``, only when the log holds records of this source). A replay
        skips what it already gave, a simulator continues its sequence numbers, a FIX session
        its MsgSeqNum. Default: nothing (the source starts where it starts)."""

    def progress(self) -> dict[str, Any] | None:
        """How far a bounded source (a replay) has got, for status lines and the summary:
        ``percent`` (0-100), and optionally ``clock`` (the replayed time, as text) and
        ``records``. ``None`` (the default): the source has no end to measure against."""
        return None


class SinkStage(Stage):
    """A sink: writes batches to the outside (a socket, a database, a file) in its own thread."""

    kind: ClassVar[str] = "delivery"

    def write(self, batch: np.ndarray, port: str, offset: int) -> None:
        """Write ``batch`` read from ``port``; ``offset`` is its first record's stream offset."""
        raise NotImplementedError(f"{type(self).__name__} must implement write()")

    def flush(self) -> None:
        """Make everything written so far durable / sent (called when the sink's thread ends)."""

    def interrupt(self) -> None:
        """The pipeline stops hard: a ``write`` or ``flush`` blocked in I/O should return soon,
        counting what it could not write (called from another thread)."""

    def committed(self) -> dict[str, int] | None:
        """Durability: per input port, the next stream offset this sink still needs, i.e.
        everything below it is durably written (fsynced, committed). ``None`` (the default):
        the sink does not take part (it gets live records only, never a replay).

        Called after ``open`` and then about once a second from the runtime's housekeeping
        thread, concurrently with ``write``: return a snapshot, never block on I/O. A sink that
        takes part must be idempotent: after a crash it may be handed offsets it already holds
        again (and must skip them); offsets below what it returned are not replayed to it."""
        return None

    def counters(self) -> dict[str, int]:
        """Sink-specific counters for status lines and the summary; ``dropped`` (records the
        sink accepted but could not deliver) adds to the stage's ``drops``."""
        return {}
