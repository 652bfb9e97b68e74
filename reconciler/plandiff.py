"""What applying a desired state would change, compared with another (a base revision, or nothing)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .companions import ObjectKey
from .objectdiff import unified
from .planning import DesiredState, ObjectPlan, WorkspacePlan
from .render.common import ANNOTATION_OBJECT_HASH, ANNOTATION_SOURCE, REPLACE_ON_CHANGE
from .validation.changes import replacement_reasons

# Kinds whose pod template cannot change in place.


@dataclass(frozen=True)
class ObjectChange:
    kind: str
    name: str
    action: str  # create | update | replace | delete | unchanged


@dataclass
class WorkspaceChange:
    key: tuple[str, str]
    action: str  # add | change | replace | remove | unchanged
    before: WorkspacePlan | None
    after: WorkspacePlan | None
    objects: list[ObjectChange] = field(default_factory=list)
    pool_action: str = "none"  # create | scale | replace | delete | unchanged | none
    reasons: list[str] = field(default_factory=list)

    @property
    def gpu_delta(self) -> int:
        return (self.after.gpus if self.after else 0) - (self.before.gpus if self.before else 0)

    @property
    def cost_delta(self) -> float:
        a = (self.after.price_per_hour or 0) if self.after else 0
        b = (self.before.price_per_hour or 0) if self.before else 0
        return round(a - b, 3)


@dataclass(frozen=True)
class CompanionChange:
    """One of the other objects in the watched folders: what merging does to it."""

    key: ObjectKey
    action: str  # create | update | delete | unchanged
    path: str  # the file it is (or was) in
    diff: str = ""  # for updates: a unified diff of the fields written in git


@dataclass
class PlanDiff:
    changes: list[WorkspaceChange]
    before: DesiredState
    after: DesiredState
    objects: list[CompanionChange] = field(default_factory=list)

    def object_count(self, action: str) -> int:
        return sum(1 for c in self.objects if c.action == action)

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def gpu_delta(self) -> int:
        return self.after.gpus - self.before.gpus

    @property
    def cost_delta(self) -> float:
        return round(self.after.price_per_hour - self.before.price_per_hour, 3)


def _objects(
    before: WorkspacePlan | None, after: WorkspacePlan | None, replace_all: bool
) -> list[ObjectChange]:
    old = before.object_hashes() if before else {}
    new = after.object_hashes() if after else {}
    out = []
    for (kind, name), h in new.items():
        if (kind, name) not in old:
            out.append(ObjectChange(kind, name, "create"))
        elif replace_all:
            out.append(ObjectChange(kind, name, "replace"))
        elif old[(kind, name)] != h:
            out.append(ObjectChange(kind, name, "replace" if kind in REPLACE_ON_CHANGE else "update"))
        else:
            out.append(ObjectChange(kind, name, "unchanged"))
    out += [ObjectChange(kind, name, "delete") for (kind, name) in old if (kind, name) not in new]
    return out


def _pool_action(before: WorkspacePlan | None, after: WorkspacePlan | None) -> str:
    bp = before.node_pool if before else None
    ap = after.node_pool if after else None
    if bp is None and ap is None:
        return "none"
    if bp is None:
        return "create"
    if ap is None:
        return "delete"
    if ap.replaces(bp):
        return "replace"
    if ap.count != bp.count:
        return "scale"
    return "unchanged"


def diff_states(before: DesiredState | None, after: DesiredState) -> PlanDiff:
    before = before or DesiredState()
    changes: list[WorkspaceChange] = []
    for key in sorted(set(before.plans) | set(after.plans)):
        b, a = before.plans.get(key), after.plans.get(key)
        if b is None:
            changes.append(
                WorkspaceChange(key, "add", None, a, _objects(None, a, False), _pool_action(None, a))
            )
            continue
        if a is None:
            changes.append(
                WorkspaceChange(key, "remove", b, None, _objects(b, None, False), _pool_action(b, None))
            )
            continue
        reasons = [what for _, what in replacement_reasons(b.workspace, a.workspace)]
        pool = _pool_action(b, a)
        if pool == "replace":
            reasons.append(f"node pool {b.node_pool.vm_size} -> {a.node_pool.vm_size}")
        objs = _objects(b, a, bool(reasons))
        if reasons:
            action = "replace"
        elif any(o.action != "unchanged" for o in objs) or pool not in ("unchanged", "none"):
            action = "change"
        else:
            action = "unchanged"
        changes.append(WorkspaceChange(key, action, b, a, objs, pool, reasons))
    return PlanDiff(changes, before, after, diff_objects(before.objects, after.objects))


def _as_written(body: dict) -> dict:
    """An object without the annotations we add (they change with every edit, or with nothing)."""
    md = dict(body.get("metadata") or {})
    ours = (ANNOTATION_OBJECT_HASH, ANNOTATION_SOURCE)
    ann = {k: v for k, v in (md.get("annotations") or {}).items() if k not in ours}
    if ann:
        md["annotations"] = ann
    else:
        md.pop("annotations", None)
    return {**body, "metadata": md}


def diff_objects(
    before: dict[ObjectKey, ObjectPlan], after: dict[ObjectKey, ObjectPlan]
) -> list[CompanionChange]:
    out = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b is None:
            out.append(CompanionChange(key, "create", a.source.path))
        elif a is None:
            out.append(CompanionChange(key, "delete", b.source.path))
        elif a.object_hash == b.object_hash:
            out.append(CompanionChange(key, "unchanged", a.source.path))
        else:
            name = "/".join(x for x in key if x)
            text = unified(_as_written(b.body), _as_written(a.body), name)
            text = text.replace(f"live/{name}", f"base/{name}").replace(f"desired/{name}", f"head/{name}")
            out.append(CompanionChange(key, "update", a.source.path, text))
    return out
