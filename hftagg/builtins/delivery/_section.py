"""``[delivery]``: the seed's section for the publisher sink, registered by the publisher plugin.

Every key but ``enabled``, ``policy`` and ``on_error`` is a publisher parameter (``method``, ``target``,
``topics``, ...), checked by the publisher's own model.
"""

from __future__ import annotations

from typing import Any

from hftagg.config.sections import ConfigSection
from hftagg.config.spec import StageSpec, check_enabled, check_on_error, check_policy
from hftagg.errors import Problem

__all__ = ["DELIVERY"]


def delivery_stages(raw: Any, source: str, problems: list[Problem]) -> list[StageSpec]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(Problem("delivery", raw, "expected a table", source))
        return []
    if not check_enabled(raw, "delivery", source, problems):
        return []
    params = {k: v for k, v in raw.items() if k not in ("enabled", "policy", "on_error")}
    policy = check_policy(raw, "delivery", source, problems)
    spec = StageSpec("delivery", "publisher", params, "delivery", policy=policy)
    spec.on_error = check_on_error(raw, "delivery", source, problems)
    return [spec]


DELIVERY = ConfigSection(
    "delivery",
    delivery_stages,
    doc="the publisher sink: method, target, topics",
    last=True,
)
