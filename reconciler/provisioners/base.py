"""The provisioner interface: start node work, observe it on later passes, never wait."""

from __future__ import annotations

from typing import Protocol

from ..planning import WorkspacePlan
from ..status import NodeState, ResourceStatus

WorkspaceKey = tuple[str, str]


class Provisioner(Protocol):
    name: str

    def refresh(self) -> None:
        """Read the provider's state once per pass."""

    def ensure(self, plan: WorkspacePlan, nodes: list[NodeState] | None) -> ResourceStatus:
        """Start or continue making the plan's nodes exist; return where that stands now."""

    def release(self, key: WorkspaceKey) -> bool:
        """Start or continue removing the workspace's nodes; True when they are gone."""

    def owned(self) -> set[WorkspaceKey]:
        """Workspaces that have nodes from this provisioner (found on the provider, not in memory)."""

    def hopeless(self, status: ResourceStatus) -> bool:
        """Whether waiting would change `status` soon (an eval preview gives up on it if not)."""
