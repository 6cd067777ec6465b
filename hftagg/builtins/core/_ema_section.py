"""``[processing]``: the seed's section for the EMA stage, registered by the indicators plugin.

``ema_window`` and ``ema_seed`` are the ``ema`` stage's ``window`` and ``seed`` (live or restart
as its parameters are marked); ``ema_input``/``ema_output`` are its topics; ``enabled = false``
drops the stage. ``use_mock_data`` in the same table is the core's, not this section's.
"""

from __future__ import annotations

from typing import Literal

from hftagg.config.sections import ConfigSection
from hftagg.config.spec import StageSpec
from hftagg.errors import Problem
from hftagg.stages.params import Params, live, restart

__all__ = ["PROCESSING", "ProcessingSection"]


class ProcessingSection(Params):
    # ema_window and ema_seed are the ema stage's parameters: their marks are EmaParams'.
    ema_window: int = live(20, ge=1, le=1_000_000, description="EMA span, in records")
    ema_seed: Literal["first", "sma"] = restart("first")
    ema_input: str = restart("md.trades")
    ema_output: str = restart("ind.ema")
    enabled: bool = restart(True)


def processing_stages(
    section: ProcessingSection, source: str, problems: list[Problem]
) -> list[StageSpec]:
    if not section.enabled:
        return []
    return [
        StageSpec(
            "ema",
            "ema",
            {"window": section.ema_window, "seed": section.ema_seed},
            "processing",
            topics={"input": section.ema_input, "output": section.ema_output},
            param_keys={"window": "processing.ema_window", "seed": "processing.ema_seed"},
        )
    ]


PROCESSING = ConfigSection(
    "processing",
    processing_stages,
    ProcessingSection,
    doc="the EMA stage of the seed config: ema_window, ema_seed, ema_input, ema_output",
)
