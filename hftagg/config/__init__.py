"""Configuration: reading layers (file, environment), mapping them onto a typed pipeline spec."""

from hftagg.config.load import env_overrides, merge, read_config_file, read_layers
from hftagg.config.spec import PipelineSpec, RuntimeSection, StageSpec, parse_spec

__all__ = [
    "PipelineSpec",
    "RuntimeSection",
    "StageSpec",
    "env_overrides",
    "merge",
    "parse_spec",
    "read_config_file",
    "read_layers",
]
