"""The target interface: the daemon's only way to change or see where workloads run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..companions import ObjectKey, Reference
from ..planning import ObjectPlan, WorkspacePlan
from ..status import NodeState, Observation

WorkspaceKey = tuple[str, str]


@dataclass
class ApplyResult:
    writes: int = 0  # create/update/delete calls made
    applied: list[str] = field(default_factory=list)  # "Kind/name" written
    deleted: list[str] = field(default_factory=list)
    pending: str = ""  # not done yet, and why (a member finishing its requests): the next pass goes on


@dataclass
class ObjectsResult:
    """One pass over the companion objects."""

    writes: int = 0
    applied: list[str] = field(default_factory=list)  # "Kind ns/name (why)"
    deleted: list[str] = field(default_factory=list)
    errors: dict[ObjectKey, str] = field(default_factory=dict)  # not applied, and why
    health: dict[ObjectKey, str] = field(default_factory=dict)  # Bound, Available, Applied, ...
    held: list[ObjectKey] = field(default_factory=list)  # ours, gone from git, not pruned (prune=False)


class Target(Protocol):
    name: str

    def refresh(self) -> None:
        """Read the live state once per pass (the cache workers compare against)."""

    def live_workspaces(self) -> dict[WorkspaceKey, str]:
        """Workspaces that have objects or processes here -> the source file they came from."""

    def apply(self, plan: WorkspacePlan) -> ApplyResult:
        """Make the workload match the plan; only what differs is written."""

    def remove(self, key: WorkspaceKey) -> tuple[bool, ApplyResult]:
        """Delete the workload; (True when nothing is left, what was done)."""

    def observe(self, key: WorkspaceKey, plan: WorkspacePlan | None) -> Observation:
        """What the workload looks like now."""

    def nodes(self, plan: WorkspacePlan) -> list[NodeState] | None:
        """Nodes the plan's pods may use (None when the target has no nodes, e.g. render)."""

    def apply_objects(
        self, desired: dict[ObjectKey, ObjectPlan], keep: set[ObjectKey], prune: bool
    ) -> ObjectsResult:
        """Apply the companion objects in order; delete ours that git no longer has (but `keep`),
        when `prune`. One object's failure is reported in the result and stops nothing else."""

    def missing(self, refs: list[Reference]) -> list[Reference]:
        """What a workspace mounts that is not there yet (as of the last apply_objects)."""

    def serve_sets(self, sets: list) -> dict[tuple[str, str], str]:
        """Give each InferenceSet its one endpoint (locally, an activator that holds requests while
        no member is ready); set key -> the endpoint's URL."""

    def set_load(self, s, members: list[WorkspaceKey]):
        """What set `s`'s members (and its activator) report now, as an autoscale.Load; None when
        the target runs nothing (render)."""

    def close(self) -> None:
        """Stop what this target started (local processes); nothing for a cluster."""
