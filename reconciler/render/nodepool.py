"""The AKS agent pool a workspace needs: a pure description the `aks` provisioner applies."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..catalog import Model, Sku
from ..workspace import Workspace
from .common import LABEL_MANAGED_BY, LABEL_WORKSPACE, LABEL_WORKSPACE_NS, MANAGED_BY

TAG_WORKSPACE = "kaito-gitops.workspace"  # Azure tag names may not contain '/'
TAG_MANAGED_BY = "kaito-gitops.managed-by"
TAG_SPEC = "kaito-gitops.pool-hash"
TAG_PREVIEW = "kaito-gitops.preview"  # the pull request of an eval preview's pool
TAINT = "sku=gpu:NoSchedule"
MAX_OS_DISK_GB = 2048


@dataclass(frozen=True)
class NodePoolSpec:
    name: str
    vm_size: str
    count: int
    labels: dict[str, str]
    taints: tuple[str, ...]
    os_disk_gb: int
    os_sku: str  # Ubuntu | AzureLinux
    mode: str = "User"
    gpu_driver: str = "Install"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def workspace(self) -> str:
        return self.tags.get(TAG_WORKSPACE, "")

    def replaces(self, other: NodePoolSpec) -> bool:
        """Changes AKS cannot make in place: a new VM size, OS or disk means a new pool."""
        return (self.vm_size.lower(), self.os_sku, self.os_disk_gb) != (
            other.vm_size.lower(),
            other.os_sku,
            other.os_disk_gb,
        )


def pool_name(namespace: str, name: str) -> str:
    """AKS Linux pool names: lower-case alphanumerics, starting with a letter, at most 12.

    A readable prefix of the workspace name plus six hex digits of sha256(namespace/name),
    so it is stable across restarts and distinct across namespaces.
    """
    prefix = re.sub(r"[^a-z0-9]", "", name.lower())
    prefix = ("k" + prefix)[:6] if not prefix[:1].isalpha() else prefix[:6]
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:6]
    return f"{prefix}{digest}"


def os_sku(ws: Workspace) -> str:
    return "AzureLinux" if ws.annotations.get("kaito.sh/node-image-family") == "azurelinux" else "Ubuntu"


def node_pool(ws: Workspace, sku: Sku, nodes: int, model: Model | None) -> NodePoolSpec:
    labels = {
        **ws.resource.match_labels,
        LABEL_WORKSPACE: ws.name,
        LABEL_WORKSPACE_NS: ws.namespace,
        LABEL_MANAGED_BY: MANAGED_BY,
        "kaito.sh/machine-type": "gpu",
    }
    disk = max(min(model.disk_gib, MAX_OS_DISK_GB) if model else 256, 128)
    sku_name, taints, os = sku.vm_size, (TAINT,), os_sku(ws)
    # the pool's shape, as a tag: a pool whose tag differs was made for another plan
    digest = hashlib.sha256(
        repr((sku_name, nodes, sorted(labels.items()), taints, disk, os)).encode()
    ).hexdigest()[:12]
    return NodePoolSpec(
        name=pool_name(ws.namespace, ws.name),
        vm_size=sku_name,
        count=nodes,
        labels=labels,
        taints=taints,
        os_disk_gb=disk,
        os_sku=os,
        tags={TAG_WORKSPACE: f"{ws.namespace}/{ws.name}", TAG_MANAGED_BY: MANAGED_BY, TAG_SPEC: digest},
    )
