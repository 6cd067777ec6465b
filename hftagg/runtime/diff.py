"""What changes between a running graph and a newly validated one.

Per stage id:

- ``keep``: same class, same topics, same parameters -- the running instance stays untouched;
- ``reconfigure``: only live parameters changed -- the running instance gets ``reconfigure``;
- ``replace``: the class (a reloaded plugin), the topics or a restart-only parameter changed --
  a new instance takes over, with ``restore(old.snapshot())`` and the old readers' cursors;
- ``add`` / ``remove``: the stage appears or disappears.

Runtime settings other than ``status_interval_secs`` and ``drain_timeout_secs`` need a restart,
so a change to them is refused as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hftagg.errors import Problem
from hftagg.runtime.graph import Graph, Node

__all__ = ["LIVE_KEYS", "Change", "plan_changes", "runtime_problems"]

LIVE_KEYS = ("runtime.status_interval_secs", "runtime.drain_timeout_secs", "telemetry.sample_ratio")


@dataclass
class Change:
    action: str  # keep | reconfigure | replace | add | remove
    stage_id: str
    old: Node | None = None
    new: Node | None = None
    fields: list[str] = field(default_factory=list)
    reason: str = ""

    def describe(self) -> str:
        if self.action == "reconfigure":
            parts = [
                f"{f} {getattr(self.old.stage.params, f)!r} -> "
                f"{getattr(self.new.stage.params, f)!r}"
                for f in self.fields
            ]
            return f"{self.stage_id}: {', '.join(parts)} (live)"
        if self.action == "replace":
            return f"{self.stage_id}: replaced ({self.reason})"
        if self.action == "add":
            return f"{self.stage_id}: added ({self.new.stage.type_name})"
        if self.action == "remove":
            return f"{self.stage_id}: removed"
        return f"{self.stage_id}: unchanged"


def _compare(old: Node, new: Node) -> Change:
    if type(old.stage) is not type(new.stage):
        same_name = old.stage.type_name == new.stage.type_name
        reason = (
            "plugin code reloaded"
            if same_name
            else (f"type {old.stage.type_name} -> {new.stage.type_name}")
        )
        return Change("replace", new.id, old, new, reason=reason)
    if old.inputs != new.inputs or old.outputs != new.outputs:
        return Change("replace", new.id, old, new, reason="topics changed")
    if old.spec.policy != new.spec.policy:
        return Change("replace", new.id, old, new, reason="input policy changed")
    changed = old.stage.params.changed_fields(new.stage.params)
    if not changed:
        return Change("keep", new.id, old, new)
    restart = [f for f in changed if not type(new.stage.params).is_live(f)]
    if restart:
        return Change(
            "replace",
            new.id,
            old,
            new,
            fields=changed,
            reason=f"restart-only parameter(s) {', '.join(restart)} changed",
        )
    return Change("reconfigure", new.id, old, new, fields=changed)


def plan_changes(old: Graph, new: Graph) -> list[Change]:
    """One Change per stage id in either graph, in the new graph's order, removals last."""
    old_nodes = {n.id: n for n in old.nodes}
    new_ids = {n.id for n in new.nodes}
    plan = []
    for node in new.nodes:
        previous = old_nodes.get(node.id)
        plan.append(
            Change("add", node.id, new=node) if previous is None else _compare(previous, node)
        )
    plan += [Change("remove", n.id, old=n) for n in old.nodes if n.id not in new_ids]
    return plan


def runtime_problems(old: Any, new: Any, source: str, section: str = "runtime") -> list[Problem]:
    """Settings of a section (``runtime``, ``telemetry``) that cannot change while running."""
    problems = []
    for name in type(old).model_fields:
        if f"{section}.{name}" in LIVE_KEYS or getattr(old, name) == getattr(new, name):
            continue
        problems.append(
            Problem(
                f"{section}.{name}",
                getattr(new, name),
                f"cannot change while running (was {getattr(old, name)!r}); "
                f"restart hftagg to apply it",
                source,
            )
        )
    return problems
