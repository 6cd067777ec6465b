"""The stage API: base classes, ports and typed parameters."""

from hftagg.stages.base import (
    KINDS,
    Port,
    SinkStage,
    SourcePosition,
    SourceStage,
    Stage,
    StageContext,
)
from hftagg.stages.kernel import KernelStage
from hftagg.stages.params import Params, live, restart

__all__ = [
    "KINDS",
    "KernelStage",
    "Params",
    "Port",
    "SinkStage",
    "SourcePosition",
    "SourceStage",
    "Stage",
    "StageContext",
    "live",
    "restart",
]
