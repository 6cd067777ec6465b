"""Top-level config sections that plugins own (the seed's ``[processing]``, ``[delivery]``, ...).

The core owns ``[runtime]``, ``[telemetry]``, ``[data_sources.*]`` and ``[stages.*]``. Any other
top-level table belongs to the plugin that registers it through
``hftagg_register_config_sections``: a :class:`ConfigSection` says how the table is checked
(``model``: a Params model with defaults, bounds and live/restart marks) and which stages it
stands for (``to_stages``). ``hftagg config show`` and the reloader read the model's defaults
and marks like any stage's; keys that feed a stage's parameters (``StageSpec.param_keys``) take
that parameter's mark.

One key stays with the core where the seed put it: ``processing.use_mock_data`` (run every data
source as the simulator). The core takes it out of ``[processing]`` before the section's owner
sees the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hftagg.errors import Problem
from hftagg.stages.params import Params, restart

__all__ = [
    "CORE_SECTION_KEYS",
    "CORE_SECTION_MODELS",
    "ConfigSection",
    "builtin_host",
    "builtin_sections",
]


class MockDataKeys(Params):
    """The core's key in ``[processing]``."""

    use_mock_data: bool = restart(
        False, description="run every data source as the simulator (its parameters dropped)"
    )


#: keys inside a plugin-owned section that the core reads itself (and removes before the owner
#: validates the table), with their defaults and live/restart marks
CORE_SECTION_MODELS: dict[str, type[Params]] = {"processing": MockDataKeys}
CORE_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    name: tuple(model.model_fields) for name, model in CORE_SECTION_MODELS.items()
}


@dataclass(frozen=True)
class ConfigSection:
    """A top-level config table owned by a plugin.

    ``to_stages(values, source, problems)`` returns the :class:`~hftagg.config.spec.StageSpec`
    list the table stands for; ``values`` is the validated ``model`` instance (or, without a
    model, the raw table: a dict, or None when the table is absent). Append a
    :class:`~hftagg.errors.Problem` to ``problems`` for anything wrong instead of raising.
    """

    name: str
    to_stages: Callable[[Any, str, list[Problem]], list[Any]]
    model: type[Params] | None = None
    doc: str = ""
    last: bool = False  # its stages come after [stages.*] in the spec (sinks, like [delivery])


@lru_cache(maxsize=1)
def builtin_host() -> Any:
    """A plugin host with the built-in plugins only (loaded once, for callers without a host)."""
    from hftagg.plugins.manager import load_plugins

    return load_plugins([], entry_points=False)


def builtin_sections() -> Mapping[str, ConfigSection]:
    """The sections the built-in plugins register (for callers that have no plugin host)."""
    return builtin_host().config_sections
