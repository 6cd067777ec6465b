"""hftagg: high-frequency market-data pipelines."""

from hftagg.builtins.storage.store.reader import read
from hftagg.errors import (
    ApplyError,
    BusError,
    BusTimeout,
    CatalogUnusable,
    ConfigError,
    DbnFormatError,
    FixedPointError,
    FrameError,
    HftaggError,
    InstrumentError,
    PluginError,
    Problem,
    SchemaError,
    StageFailed,
    StorageError,
    TransportError,
)
from hftagg.hookspecs import hookimpl
from hftagg.records import Schema, make_dtype
from hftagg.stages import (
    Params,
    Port,
    SinkStage,
    SourcePosition,
    SourceStage,
    Stage,
    StageContext,
    live,
    restart,
)

__version__ = "0.1.0"

__all__ = [
    "ApplyError",
    "BusError",
    "BusTimeout",
    "CatalogUnusable",
    "ConfigError",
    "DbnFormatError",
    "FixedPointError",
    "FrameError",
    "HftaggError",
    "InstrumentError",
    "Params",
    "PluginError",
    "Port",
    "Problem",
    "Schema",
    "SchemaError",
    "SinkStage",
    "SourcePosition",
    "SourceStage",
    "Stage",
    "StageContext",
    "StageFailed",
    "StorageError",
    "TransportError",
    "hookimpl",
    "live",
    "make_dtype",
    "read",
    "restart",
]
