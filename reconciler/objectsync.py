"""The daemon's bookkeeping for the other objects in the watched folders (docs/objects.md).

What to apply (an invalid object at its last good version), what to keep though it is not
applied, how each fared on the last pass, and what a workspace still waits for. The daemon owns
the loop; this holds the state between its passes and touches nothing outside but the target
it is handed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from .companions import ObjectKey, key_text, references
from .planning import DesiredState, ObjectPlan, WorkspacePlan
from .targets.base import ObjectsResult, Target
from .validation import Revision

log = structlog.get_logger("kaito_gitops.daemon")


@dataclass
class ObjectReport:
    """What status shows about one object."""

    key: ObjectKey
    path: str
    health: str  # Bound, Available, Applied, ... ; "" until a target has applied it
    error: str = ""


class ObjectSync:
    def __init__(self) -> None:
        self.desired: dict[ObjectKey, ObjectPlan] = {}  # in apply order
        self.kept: set[ObjectKey] = set()  # invalid and never good: not applied, not pruned
        self.invalid: dict[ObjectKey, str] = {}  # the first validation error of each invalid object
        self.status: dict[ObjectKey, tuple[str, str]] = {}  # (health, error) from the last pass
        self.gone_by_commit = False  # the prune guard's evidence (see load)
        self.plan_cache: dict = {}  # plans by the document they came from (planning.plan_objects)

    def load(self, validated: Revision, state: DesiredState, removals: Callable[[], dict[str, str]]) -> None:
        """A new revision. `removals()` says how files left git since the last one (path -> where it
        moved, "" when a commit deleted it); it is asked only when objects vanished."""
        desired = dict(state.objects)
        kept: set[ObjectKey] = set()
        for key in validated.invalid_objects:
            if key in self.desired:
                desired[key] = self.desired[key]
            else:
                kept.add(key)
        for key, plan in self.desired.items():  # a file that cannot be read now: hold its objects
            if key not in validated.objects and plan.source.path in validated.unreadable_files:
                desired[key] = plan
        vanished = {k: p.source.path for k, p in self.desired.items() if k not in validated.objects}
        moved = removals() if vanished else {}
        # every object that left went because a commit deleted its file: pruning them is deliberate
        self.gone_by_commit = bool(vanished) and all(moved.get(p) == "" for p in vanished.values())
        self.desired = dict(sorted(desired.items(), key=lambda kv: (kv[1].rank, kv[0])))
        self.kept = kept
        self.invalid = {k: fs[0].text() for k, fs in validated.object_findings.items() if fs}

    def reconcile(
        self, target: Target, *, empty: bool, allow_empty_prune: bool, revision: str
    ) -> ObjectsResult:
        """Apply in kind order; prune under the guard: a revision with nothing in it (`empty`)
        prunes only what commits deleted."""
        prune = allow_empty_prune or not empty or self.gone_by_commit
        res = target.apply_objects(self.desired, self.kept, prune)
        if res.held:
            log.error(
                "refusing to prune every object: the repository yields nothing but the cluster has objects "
                "of ours, and no commit this daemon has seen deletes their files; pass --allow-empty-prune "
                "if that is intended",
                revision=revision[:12],
                objects=len(res.held),
            )
        status = {k: (h, "") for k, h in res.health.items()}
        for key, msg in res.errors.items():
            status[key] = (status.get(key, ("", ""))[0], msg)
        self.status = status
        return res

    def reports(self, validated: Revision | None, revision: str) -> list[ObjectReport]:
        """Every object of the revision, valid or not, with its health or its error."""
        objects = validated.objects if validated else {}
        out = []
        for key in sorted(set(objects) | set(self.desired)):
            obj = objects.get(key) or self.desired[key].source
            health, error = self.status.get(key, ("", ""))
            if key in self.invalid:
                held = " (still applied at its last good version)" if key in self.desired else ""
                error = f"revision {revision[:12]} is invalid{held}: {self.invalid[key]}"
            out.append(ObjectReport(key, obj.path, health, error))
        return out

    def waiting_for(self, plan: WorkspacePlan, target: Target, validated: Revision | None) -> str:
        """'' when everything the workspace mounts exists; else what it waits for."""
        refs = references(plan.workspace)
        if not refs:
            return ""
        applied = {k for k in self.desired if not self.status.get(k, ("", ""))[1]}
        translated = validated.configmaps if validated else {}
        needed = [
            r
            for r in refs
            if r.key not in applied  # a ConfigMap in the repository becomes flags: the pod does not mount it
            and not (r.field == ("inference", "config") and (r.namespace, r.name) in translated)
        ]
        absent = target.missing(needed)
        names = list(dict.fromkeys(f"{key_text(r.key)} ({'.'.join(map(str, r.field))})" for r in absent))
        return f"waiting for {', '.join(names)}: not in the cluster yet" if names else ""
