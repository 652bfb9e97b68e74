"""Bring your own nodes: nothing to create; ready when matching GPU nodes are Ready."""

from __future__ import annotations

from ..catalog import BYO_PREFIX, GFD_COUNT, GFD_MEMORY, GFD_PRODUCT
from ..planning import WorkspacePlan
from ..status import NodeState, ResourceStatus

WorkspaceKey = tuple[str, str]


GFD = (GFD_PRODUCT, GFD_COUNT, GFD_MEMORY)  # what sizes a bring-your-own node


def byo_label_problem(nodes: list[NodeState]) -> str:
    """Kaito's rule for bring-your-own nodes: every node carries the same GPU labels."""
    missing = [n.name for n in nodes if any(k not in dict(n.gpu_labels) for k in GFD)]
    if missing:
        return (
            f"node(s) {', '.join(missing[:5])} lack the labels {', '.join(GFD)} that size the workspace: install "
            "NVIDIA GPU feature discovery (or the GPU operator), or set an instanceType"
        )
    kinds = {tuple(dict(n.gpu_labels).get(k) for k in GFD) for n in nodes}
    if len(kinds) > 1:
        return (
            "the matching nodes have different GPUs ("
            + "; ".join("/".join(k) for k in sorted(kinds))
            + "); narrow labelSelector to one kind"
        )
    return ""


class NoneProvisioner:
    name = "none"

    def refresh(self) -> None:
        return None

    def hopeless(self, status: ResourceStatus) -> bool:
        return False  # your nodes may come at any time

    def ensure(self, plan: WorkspacePlan, nodes: list[NodeState] | None) -> ResourceStatus:
        if nodes is None:  # a target without nodes (render, local): nothing to wait for
            return ResourceStatus(True, "workspaceResourceStatusSuccess", "no nodes needed for this target")
        want = plan.nodes
        ready = [n for n in nodes if n.ready and n.gpus > 0]
        names = tuple(sorted(n.name for n in ready))
        if not nodes:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(plan.workspace.resource.match_labels.items()))
            return ResourceStatus(
                False,
                "NodeNotFound",
                f"no node has the labels {labels}; label your GPU nodes or set an instanceType",
            )
        if plan.sku is None or plan.sku.name.startswith(BYO_PREFIX):  # sized by labels, not a known SKU
            problem = byo_label_problem(nodes)
            if problem:
                return ResourceStatus(
                    False, "NodeGPULabelsMissing", problem, nodes=tuple(sorted(n.name for n in nodes))
                )
        if len(ready) < want:
            without_gpu = [n.name for n in nodes if n.ready and n.gpus == 0]
            if without_gpu:
                return ResourceStatus(
                    False,
                    "NodePluginsNotReady",
                    f"nodes {', '.join(without_gpu)} report no nvidia.com/gpu capacity (is the "
                    "NVIDIA device plugin running?)",
                    nodes=names,
                )
            return ResourceStatus(
                False, "NodeNotReady", f"{len(ready)} of {want} matching GPU nodes are Ready", nodes=names
            )
        return ResourceStatus(
            True, "workspaceResourceStatusSuccess", f"{len(ready)} matching GPU node(s) ready", nodes=names
        )

    def release(self, key: WorkspaceKey) -> bool:
        return True

    def owned(self) -> set[WorkspaceKey]:
        return set()
