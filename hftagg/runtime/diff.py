"""What changes between a running graph and a newly validated one.

Per stage id:

- ``keep``: same class, same topics, same parameters -- the running instance stays untouched;
- ``reconfigure``: only live parameters changed -- the running instance gets ``reconfigure``;
- ``replace``: the class (a reloaded plugin), the topics or a restart-only parameter changed --
  a new instance takes over, with ``restore(old.snapshot())`` and the old readers' cursors;
- ``add`` / ``remove``: the stage appears or disappears.

Settings of ``[runtime]`` and ``[telemetry]`` carry their own marks (``live`` or ``restart``, on
the section models, the same marks ``hftagg config show`` prints): a change to a restart-only
one is refused as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hftagg.errors import Problem
from hftagg.runtime.graph import Graph, Node

__all__ = ["Change", "plan_changes", "removal_problems", "runtime_problems"]


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
    if old.on_error != new.on_error:
        return Change("replace", new.id, old, new, reason=f"on_error -> {new.on_error}")
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
    model = type(old)
    for name in model.model_fields:
        if model.is_live(name) or getattr(old, name) == getattr(new, name):
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


def section_problems(host: Any, old_raw: dict, new_raw: dict, source: str) -> list[Problem]:
    """Restart-only keys of plugin sections that stand for no stage (``[durability]``,
    ``[instruments]``): nothing is rebuilt for them, so a change to one while running would be
    silently ignored; it is refused instead, naming the key. Sections that stand for stages are
    judged by the stages they build (``plan_changes``)."""
    problems: list[Problem] = []
    for name, section in getattr(host, "config_sections", {}).items():
        old_table, new_table = old_raw.get(name) or {}, new_raw.get(name) or {}
        if section.model is None or old_table == new_table:
            continue
        try:
            old, new = section.model(**old_table), section.model(**new_table)
            if section.to_stages(new, source, []):
                continue
        except Exception:  # an invalid table: parse_spec has reported it already
            continue
        problems += runtime_problems(old, new, source, name)
    return problems


def _declared(graph: Graph, section: str) -> list[str]:
    return [
        n.id for n in graph.nodes if n.spec.key.startswith(section + ".") and not n.spec.builtin
    ]


def removal_problems(old: Graph, new: Graph, source: str) -> list[Problem]:
    """A change that leaves no data source, or no ``[stages.*]`` stage, of those running.

    An editor that truncates the file and writes it a moment later, or a half-written file,
    looks exactly like this; ``runtime.allow_remove_all = true`` lets such a change through."""
    problems = []
    for section, what in (("data_sources", "data source"), ("stages", "[stages.*] stage")):
        running, kept = _declared(old, section), _declared(new, section)
        if running and not kept:
            problems.append(
                Problem(
                    section,
                    running,
                    f"this change removes every {what} that runs ({', '.join(running)}); "
                    f"refused, the pipeline keeps its current config: an editor part-way "
                    f"through saving, or a truncated file, looks like this. To remove them all, "
                    f"set runtime.allow_remove_all = true in the same change",
                    source,
                )
            )
    return problems
