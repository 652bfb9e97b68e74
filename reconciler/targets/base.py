"""The target interface: the daemon's only way to change or see where workloads run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..planning import WorkspacePlan
from ..status import NodeState, Observation

WorkspaceKey = tuple[str, str]


@dataclass
class ApplyResult:
    writes: int = 0  # create/update/delete calls made
    applied: list[str] = field(default_factory=list)  # "Kind/name" written
    deleted: list[str] = field(default_factory=list)


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

    def close(self) -> None:
        """Stop what this target started (local processes); nothing for a cluster."""
