"""How big each topic's ring is, and which topics get one (``runtime.ring_bytes``).

- Only topics that a core stage or a sink reads get a ring; what a stage writes to a topic
  nobody reads is counted as records out and not kept.
- A ring holds the largest power of two of records that fits in ``runtime.ring_bytes``, and at
  least 16. A ring that a core stage writes and a core stage reads holds at least ``max_batch``
  records whatever its bytes: the core thread writes and reads it, and cannot wait for itself.
- The deprecated ``runtime.ring_capacity`` (records per ring) wins when set (not 0).

Used by the graph check (is there memory for it?) and by the pipeline (allocation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hftagg.runtime.graph import Graph, Node

__all__ = ["core_to_core_topics", "read_topics", "ring_plan", "ring_records"]


def read_topics(nodes: list[Node]) -> set[str]:
    """Topics some core stage or sink among ``nodes`` reads: the only ones that get a ring."""
    return {t for node in nodes if node.role != "source" for t in node.inputs.values()}


def core_to_core_topics(nodes: list[Node], producer: dict[str, str]) -> set[str]:
    """Topics a core stage writes and a core stage reads (both in the core thread)."""
    core = {node.id for node in nodes if node.role == "core"}
    return {
        t
        for node in nodes
        if node.role == "core"
        for t in node.inputs.values()
        if producer.get(t) in core
    }


def ring_records(runtime: Any, itemsize: int, core_to_core: bool) -> int:
    """Records in one ring (a power of two) for records of ``itemsize`` bytes."""
    max_batch = runtime.max_batch
    if runtime.ring_capacity:  # the deprecated records count, when set (0: unset)
        wanted = max(runtime.ring_capacity, max_batch)
        return max(2, 1 << (wanted - 1).bit_length())  # as the ring rounds it
    records = max(16, runtime.ring_bytes // itemsize)
    capacity = 1 << (records.bit_length() - 1)
    if core_to_core and capacity < max_batch:
        capacity = 1 << (max_batch - 1).bit_length()
    return capacity


def ring_plan(graph: Graph, runtime: Any) -> dict[str, int]:
    """topic -> records, for every topic of ``graph`` that gets a ring."""
    nodes = graph.nodes
    inner = core_to_core_topics(nodes, graph.producer)
    return {
        topic: ring_records(runtime, graph.topics[topic].dtype.itemsize, topic in inner)
        for topic in sorted(read_topics(nodes))
        if topic in graph.topics  # (a graph with problems may lack the producer's topic)
    }
