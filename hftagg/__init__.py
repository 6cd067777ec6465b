"""hftagg: high-frequency market-data pipelines."""

from hftagg.errors import (
    BusError,
    ConfigError,
    FrameError,
    HftaggError,
    PluginError,
    SchemaError,
    TransportError,
)
from hftagg.hookspecs import hookimpl
from hftagg.records import Schema, make_dtype
from hftagg.stages import Params, Port, SinkStage, SourceStage, Stage, StageContext, live, restart

__version__ = "0.1.0"

__all__ = [
    "BusError",
    "ConfigError",
    "FrameError",
    "HftaggError",
    "Params",
    "PluginError",
    "Port",
    "Schema",
    "SchemaError",
    "SinkStage",
    "SourceStage",
    "Stage",
    "StageContext",
    "TransportError",
    "hookimpl",
    "live",
    "make_dtype",
    "restart",
]
