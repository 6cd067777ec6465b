"""The runtime: graph building and checking, the threaded pipeline, status reporting."""

from hftagg.runtime.graph import Graph, Node, build_graph
from hftagg.runtime.pipeline import NodeStats, Pipeline, StageFailed
from hftagg.runtime.status import StatusReporter, format_summary

__all__ = [
    "Graph",
    "Node",
    "NodeStats",
    "Pipeline",
    "StageFailed",
    "StatusReporter",
    "build_graph",
    "format_summary",
]
