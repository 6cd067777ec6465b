"""The pipeline graph: stage instances joined by topics, validated before anything starts.

``build_graph`` instantiates each stage (no I/O happens until ``open``), resolves every port to
a topic, and checks the whole graph, reporting every problem at once: unknown stage types,
invalid parameters, topics produced twice or by nobody, schema mismatches between producer and
consumer, and cycles. Core stages are ordered topologically so that one pass over them hands
each batch to each stage exactly once.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from hftagg.bus.frame import MAX_TOPIC_BYTES
from hftagg.config.spec import PipelineSpec, StageSpec, pydantic_problems
from hftagg.errors import MISSING, ConfigError, Problem, SchemaError
from hftagg.plugins.manager import PluginHost
from hftagg.records.schema import Schema
from hftagg.runtime.rings import ring_plan
from hftagg.runtime.waits import thread_problems
from hftagg.stages.base import SinkStage, SourceStage, Stage, StageContext

__all__ = ["Graph", "Node", "build_graph", "graph_from_stages"]

TOPIC_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


@dataclass
class Node:
    """A stage in the graph with its resolved topics."""

    stage: Stage
    spec: StageSpec
    inputs: dict[str, str] = field(default_factory=dict)  # port -> topic
    outputs: dict[str, str] = field(default_factory=dict)  # port -> topic

    @property
    def on_error(self) -> str:
        """``stop`` (the pipeline stops) or ``isolate``: config, else the stage type's default."""
        return self.spec.on_error or getattr(self.stage, "on_error", "stop")

    @property
    def error_topic(self) -> str | None:
        """Where an isolated stage's failed input goes, as dead letters:
        ``dead_letters.isolated.<stage id>`` (per stage, whatever its type)."""
        return f"dead_letters.isolated.{self.id}" if self.on_error == "isolate" else None

    @property
    def id(self) -> str:
        return self.stage.stage_id

    @property
    def role(self) -> str:
        if isinstance(self.stage, SourceStage):
            return "source"
        if isinstance(self.stage, SinkStage):
            return "sink"
        return "core"


@dataclass
class Graph:
    sources: list[Node]
    core: list[Node]  # topological order
    sinks: list[Node]
    topics: dict[str, Schema]
    producer: dict[str, str]  # topic -> node id

    @property
    def nodes(self) -> list[Node]:
        return self.sources + self.core + self.sinks

    def node(self, stage_id: str) -> Node:
        return next(n for n in self.nodes if n.id == stage_id)

    def describe(self) -> list[str]:
        """One line per node: ``id (type): inputs -> outputs``."""
        lines = []
        for n in self.nodes:
            ins = ", ".join(n.inputs.values()) or "-"
            outs = ", ".join(n.outputs.values()) or "-"
            lines.append(f"{n.id} ({n.stage.type_name}, {n.role}): {ins} -> {outs}")
        return lines


class _Builder:
    def __init__(self, spec: PipelineSpec, host: PluginHost) -> None:
        self.spec = spec
        self.host = host
        self.src = spec.source
        self.problems: list[Problem] = list(spec.problems)
        # topics that a stage which failed to build would have produced: not reported again
        # as "nobody produces" (None: a stage of unknown type failed, its topics are unknown)
        self.failed_outputs: set[str] | None = set()

    def problem(self, key: str, value: object, expected: str) -> None:
        self.problems.append(Problem(key, value, expected, self.src))

    def instantiate(self, spec: StageSpec) -> Node | None:
        if spec.mocked is not None:  # use_mock_data: the configured source is still checked
            self._check_mocked(spec.mocked)
        cls = self.host.stage_types.get(spec.type_name)
        if cls is None:
            known = sorted(self.host.stage_types)
            close = difflib.get_close_matches(spec.type_name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            why = self.host.missing_stage_type_note(spec.type_name)
            self.problem(
                f"{spec.key}.type",
                spec.type_name,
                f"unknown stage type{hint}; known stage types: {', '.join(known)}{why}",
            )
            self.failed_outputs = None
            return None
        try:
            params = cls.Params.model_validate(spec.params)
        except ValidationError as exc:
            known = list(cls.Params.model_fields)
            self.problems.extend(pydantic_problems(exc, spec.key_of, self.src, known))
            self._note_failed(spec, cls)
            return None
        inputs, outputs = cls.ports(params)
        topics = self._resolve_topics(spec, inputs, outputs)
        if topics is None:
            return None
        try:
            stage = cls(params, stage_id=spec.stage_id, topics=topics)
        except Exception as exc:  # a plugin's constructor rejecting its parameters
            self.problem(spec.key, spec.params, f"stage type {spec.type_name!r} refused: {exc}")
            if self.failed_outputs is not None:  # its readers are not told "no producer" too
                for port, decl in outputs.items():
                    self.failed_outputs.update({topics.get(port, decl.topic), decl.topic})
            return None
        if spec.fields is not None:
            stage.output_topics = {p: t for p, t in stage.output_topics.items() if p in spec.fields}
        return Node(stage, spec, dict(stage.input_topics), dict(stage.output_topics))

    def _check_mocked(self, spec: StageSpec) -> None:
        cls = self.host.stage_types.get(spec.type_name)
        if cls is None:
            known = sorted(self.host.stage_types)
            close = difflib.get_close_matches(spec.type_name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(
                f"{spec.key}.type",
                spec.type_name,
                f"unknown stage type{hint}; known stage types: {', '.join(known)} "
                f"(processing.use_mock_data replaces this source, but only a valid one)",
            )
            return
        try:
            cls.Params.model_validate(spec.params)
        except ValidationError as exc:
            known = list(cls.Params.model_fields)
            self.problems.extend(pydantic_problems(exc, spec.key_of, self.src, known))

    def _note_failed(self, spec: StageSpec, cls: type[Stage]) -> None:
        if self.failed_outputs is None:
            return
        prefix = spec.topics.get("*")
        for port, decl in cls.outputs.items():
            topic = f"{prefix}.{port}" if prefix else spec.topics.get(port, decl.topic)
            self.failed_outputs.add(topic)

    def _resolve_topics(self, spec: StageSpec, inputs: dict, outputs: dict) -> dict | None:
        topics = dict(spec.topics)
        prefix = topics.pop("*", None)
        if prefix is not None:
            topics.update({p: f"{prefix}.{p}" for p in outputs})
        if spec.fields is not None:
            unknown = [f for f in spec.fields if f not in outputs]
            if unknown:
                self.problem(
                    f"{spec.key}.fields",
                    spec.fields,
                    f"unknown stream(s) {unknown}; type {spec.type_name!r} produces: "
                    f"{', '.join(outputs)}",
                )
                return None
        bad = [p for p in topics if p not in inputs and p not in outputs]
        if bad:
            self.problem(
                f"{spec.key}.topics",
                spec.topics,
                f"unknown port(s) {bad}; type {spec.type_name!r} has ports: "
                f"{', '.join(list(inputs) + list(outputs))}",
            )
            return None
        for port, topic in topics.items():
            if not TOPIC_RE.match(topic) or len(topic.encode()) > MAX_TOPIC_BYTES:
                self.problem(
                    f"{spec.key}.topics.{port}",
                    topic,
                    f"a topic is dot-separated words of [A-Za-z0-9_-], at most "
                    f"{MAX_TOPIC_BYTES} bytes",
                )
                return None
        return topics

    def link(self, nodes: list[Node]) -> tuple[dict[str, Schema], dict[str, str]]:
        topics: dict[str, Schema] = {}
        producer: dict[str, str] = {}
        for node in nodes:
            _, outputs = node.stage.ports(node.stage.params)
            for port, topic in node.outputs.items():
                if topic in producer:
                    self.problem(
                        f"{node.spec.key}",
                        topic,
                        f"topic is already produced by stage {producer[topic]!r}; a topic "
                        f"has one writer: give one of them another topic",
                    )
                    continue
                try:
                    topics[topic] = self.host.schemas.get(outputs[port].schema or "")
                except SchemaError as exc:
                    self.problem(f"{node.spec.key}.topics.{port}", topic, str(exc))
                    continue
                producer[topic] = node.id
        for node in nodes:
            self._link_error_topic(node, topics, producer)
        for node in nodes:
            inputs, _ = node.stage.ports(node.stage.params)
            for port, topic in node.inputs.items():
                self._check_input(node, port, topic, inputs[port].schema, topics, producer)
        return topics, producer

    def _link_error_topic(self, node: Node, topics: dict, producer: dict) -> None:
        topic = node.error_topic
        if topic is None:
            return
        if topic in producer:
            self.problem(
                f"{node.spec.key}.on_error",
                "isolate",
                f"its dead-letter topic {topic!r} is already produced by stage "
                f"{producer[topic]!r}; give that stage another topic",
            )
            return
        topics[topic] = self.host.schemas.get("dead_letter")
        producer[topic] = node.id

    def _check_input(self, node, port, topic, want, topics, producer) -> None:
        key = node.spec.key
        if topic not in producer:
            if self.failed_outputs is None or topic in self.failed_outputs:
                return  # its producer failed to build and is reported already
            known = ", ".join(sorted(producer)) or "none"
            close = difflib.get_close_matches(topic, list(producer), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(
                f"{key} input {port!r}",
                topic,
                f"no stage produces this topic{hint}; produced topics: {known}",
            )
            return
        have = topics[topic]
        if want is not None and want not in (have.name, have.key):
            self.problem(
                f"{key} input {port!r}",
                topic,
                f"schema mismatch: stage {node.id!r} expects {want} records but "
                f"{producer[topic]!r} produces {have.key}",
            )

    def order(self, core: list[Node], producer: dict[str, str]) -> list[Node]:
        by_id = {n.id: n for n in core}
        deps = {
            n.id: {producer[t] for t in n.inputs.values() if producer.get(t) in by_id} for n in core
        }
        ordered: list[Node] = []
        ready = [n.id for n in core if not deps[n.id]]
        while ready:
            nid = ready.pop(0)
            ordered.append(by_id[nid])
            for other in core:
                if nid in deps[other.id]:
                    deps[other.id].discard(nid)
                    if not deps[other.id] and other not in ordered and other.id not in ready:
                        ready.append(other.id)
        if len(ordered) < len(core):
            stuck = [n.id for n in core if n not in ordered]
            cycle = self._find_cycle(stuck, by_id, producer)
            self.problem(
                "stages",
                " -> ".join(cycle),
                "cycle in the graph: a stage may not consume, directly or through "
                "others, a topic it produces; break the loop",
            )
        return ordered

    def finish(self, nodes: list[Node]) -> Graph:
        topics, producer = self.link(nodes)
        sources = [n for n in nodes if n.role == "source"]
        sinks = [n for n in nodes if n.role == "sink"]
        core = self.order([n for n in nodes if n.role == "core"], producer)
        graph = Graph(sources, core, sinks, topics, producer)
        if self.spec.runtime is not None:
            self.check_stages(nodes, topics)
            self.check_rings(graph)
            self.problems += thread_problems(
                self.spec.runtime, [n.id for n in sources], [n.id for n in sinks], self.src
            )
        if self.problems:
            raise ConfigError(self.problems)
        return graph

    def check_stages(self, nodes: list[Node], topics: dict[str, Schema]) -> None:
        """Each stage's own ``check``: what ``open`` would refuse, found without opening."""
        ctx = StageContext(
            max_batch=self.spec.runtime.max_batch,
            topic_schemas=dict(topics),
            transports=dict(self.host.transports),
            codecs=dict(self.host.codecs),
        )
        for node in nodes:
            try:
                found = node.stage.check(ctx)
            except Exception as exc:  # a plugin's check that itself fails: still a problem
                found = [("", f"stage type {node.stage.type_name!r} check failed: {exc}")]
            for param, text in found:
                key = node.spec.key_of(param) if param else node.spec.key
                value = getattr(node.stage.params, param, MISSING) if param else MISSING
                self.problems.append(Problem(key, value, text, self.src))

    def check_rings(self, graph: Graph) -> None:
        """The rings this graph allocates must fit in this machine's memory."""
        runtime = self.spec.runtime
        plan = ring_plan(graph, runtime)
        total = sum(records * graph.topics[t].dtype.itemsize for t, records in plan.items())
        memory = physical_memory_bytes()
        if memory and total > memory // 2:
            key = "ring_capacity" if runtime.ring_capacity else "ring_bytes"
            self.problem(
                f"runtime.{key}",
                getattr(runtime, key),
                f"{len(plan)} topic rings need {total / 2**30:.1f} GiB, more than half of this "
                f"machine's {memory / 2**30:.1f} GiB; lower runtime.{key}",
            )

    @staticmethod
    def _find_cycle(stuck, by_id, producer) -> list[str]:
        start = stuck[0]
        path = [start]
        seen = {start}
        current = start
        while True:
            node = by_id[current]
            nxt = next(
                producer[t]
                for t in node.inputs.values()
                if producer.get(t) in by_id and producer[t] in stuck
            )
            if nxt in seen:
                return path[path.index(nxt) :] + [nxt]
            path.append(nxt)
            seen.add(nxt)
            current = nxt


def physical_memory_bytes() -> int:
    """This machine's memory in bytes (0 when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def build_graph(spec: PipelineSpec, host: PluginHost) -> Graph:
    """Instantiate and check every stage; raise ConfigError listing all problems found."""
    builder = _Builder(spec, host)
    nodes = [n for n in (builder.instantiate(s) for s in spec.stages) if n is not None]
    return builder.finish(nodes)


def graph_from_stages(stages: list[Stage], host: PluginHost) -> Graph:
    """A graph of already-built stage instances (used by ``hftagg.testing``), checked the same way."""
    spec = PipelineSpec(runtime=None, stages=[])  # type: ignore[arg-type]
    builder = _Builder(spec, host)
    nodes = []
    for stage in stages:
        key = f"stages.{stage.stage_id}"
        stage_spec = StageSpec(stage.stage_id, stage.type_name, {}, key)
        nodes.append(Node(stage, stage_spec, dict(stage.input_topics), dict(stage.output_topics)))
    return builder.finish(nodes)
