"""The `aks` provisioner: one AKS agent pool per workspace, through Azure Resource Manager.

Never waits: a pass starts a create, scale or delete (`polling=False`: the PUT/DELETE is sent
and answered, nothing is polled) and later passes read `provisioningState` from one LIST of the
cluster's pools. Ownership lives on the pool itself (tags), so a restarted daemon finds its
pools and the deterministic pool name rules out duplicates. Failures become a reason and a
message a person can act on; we retry where retrying can help (capacity, throttling, server
errors), slowly where a human must act (quota, permissions), and not at all where the request
itself is wrong (an unavailable VM size) until the workspace changes.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass

import structlog
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerservice import ContainerServiceClient
from azure.mgmt.containerservice import models as m

from ..planning import WorkspacePlan
from ..render.common import MANAGED_BY
from ..render.nodepool import TAG_MANAGED_BY, TAG_PREVIEW, TAG_SPEC, TAG_WORKSPACE, NodePoolSpec
from ..status import NodeState, ResourceStatus
from .none import NoneProvisioner

log = structlog.get_logger("kaito_gitops.aks")

WorkspaceKey = tuple[str, str]

# How long to wait before trying again, by ARM error code (None: not until the spec changes).
RETRY_AFTER = {
    "QuotaExceeded": 1800.0,  # someone has to raise the quota
    "AuthorizationFailed": 600.0,  # someone has to grant a role
    "LinkedAuthorizationFailed": 600.0,
    "AllocationFailed": 300.0,  # capacity comes and goes
    "ZonalAllocationFailed": 300.0,
    "OverconstrainedAllocationRequest": 300.0,
    "SkuNotAvailable": None,  # the VM size is not sold there: change the workspace
    "InvalidParameter": None,
    "PropertyChangeNotAllowed": None,
    "BadRequest": None,
}
DEFAULT_RETRY = 60.0

QUOTA = re.compile(
    r"exceeding approved (?P<family>\S+) (?P<what>\w+) quota.*?Location: (?P<loc>[\w-]+), "
    r"Current Limit: (?P<limit>\d+), Current Usage: (?P<usage>\d+), Additional Required: (?P<need>\d+)",
    re.DOTALL,
)


SOVEREIGN_ARM = ("management.azure.com", "management.chinacloudapi.cn", "management.usgovcloudapi.net")


def arm_scope(endpoint: str, audience: str = "") -> str:
    """The token scope for Resource Manager: its own host in the known clouds, else the audience given."""
    if audience:
        return audience.rstrip("/") + "/.default"
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    if host in SOVEREIGN_ARM:
        return f"https://{host}/.default"
    return "https://management.azure.com/.default"  # a private endpoint or proxy in front of public ARM


def explain(code: str, message: str, spec: NodePoolSpec | None) -> str:
    """An ARM error as something a person can act on."""
    vm = spec.vm_size if spec else "the VM size"
    q = QUOTA.search(message)
    if code == "QuotaExceeded" and q:
        new = int(q["usage"]) + int(q["need"])
        return (
            f"Azure quota {q['family']} ({q['what']}) in {q['loc']}: limit {q['limit']}, in use {q['usage']}, "
            f"this pool needs {q['need']} more. Request an increase to at least {new} in the Azure portal "
            f"(Quotas -> Compute), or choose a smaller instance type"
        )
    if code == "QuotaExceeded":
        return f"Azure quota exceeded for {vm}: {message[:200]}"
    if code == "SkuNotAvailable":
        return (
            f"{vm} is not available in this region or zone for this subscription; pick another instance type"
        )
    if code in ("AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest"):
        return f"Azure has no capacity for {vm} right now; kaito-gitops will retry"
    if code in ("AuthorizationFailed", "LinkedAuthorizationFailed"):
        return (
            "kaito-gitops' identity may not manage agent pools on this cluster: grant it a role with "
            f"Microsoft.ContainerService/managedClusters/agentPools/* on the cluster ({message[:160]})"
        )
    if code in ("SubscriptionRequestsThrottled", "TooManyRequests", "Throttled"):
        return "Azure Resource Manager is throttling requests; kaito-gitops will retry when it allows"
    return f"{code}: {message[:240]}"


@dataclass
class _Failure:
    code: str
    message: str
    spec_hash: str
    retry_at: float | None  # monotonic; None: not until the spec changes


def _error(e: HttpResponseError) -> tuple[str, str, float | None]:
    code = (e.error.code if e.error else "") or (
        "TooManyRequests" if e.status_code == 429 else f"HTTP{e.status_code}"
    )
    message = (e.error.message if e.error else "") or (e.message or "")
    retry_after = None
    headers = e.response.headers if e.response is not None else {}
    for h, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        v = headers.get(h)
        if v and str(v).strip().isdigit():
            retry_after = int(v) * scale
            break
    return code, message, retry_after


def _pool_properties(spec: NodePoolSpec) -> m.AgentPool:
    return m.AgentPool(
        vm_size=spec.vm_size,
        count=spec.count,
        mode=spec.mode,
        os_type="Linux",
        os_sku=spec.os_sku,
        os_disk_size_gb=spec.os_disk_gb,
        node_labels=dict(spec.labels),
        node_taints=list(spec.taints),
        tags=dict(spec.tags),
        type="VirtualMachineScaleSets",
        gpu_profile=m.GPUProfile(driver=spec.gpu_driver),
    )


def _key_of(tags: dict | None, previews: bool = False) -> WorkspaceKey | None:
    """The workspace a pool was made for; None for pools not ours, or of the other kind (the
    daemon's provisioner never sees an eval preview's pools, and a preview's never the daemon's)."""
    tags = tags or {}
    if tags.get(TAG_MANAGED_BY) != MANAGED_BY or (TAG_PREVIEW in tags) != previews:
        return None
    ns, _, name = (tags.get(TAG_WORKSPACE) or "").partition("/")
    return (ns, name) if ns and name else None


def credential_for(cfg):
    """Workload identity in the cluster (no secrets, no IMDS probe); the usual chain elsewhere."""
    from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential

    kw = {"authority": cfg.authority_host} if cfg.authority_host else {}
    if os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
        return WorkloadIdentityCredential(**kw)
    return DefaultAzureCredential(**kw)


class AksProvisioner:
    name = "aks"

    def __init__(
        self, client: ContainerServiceClient, resource_group: str, cluster: str, *, previews: bool = False
    ):
        self.client = client
        self.previews = previews
        self.resource_group = resource_group
        self.cluster = cluster
        self.pools: dict[str, dict] = {}  # name -> wire-form pool of the last refresh
        self._failures: dict[str, _Failure] = {}
        self._throttled_until = 0.0
        self._lock = threading.Lock()
        self._byo = NoneProvisioner()

    @classmethod
    def from_config(cls, cfg, previews: bool = False) -> AksProvisioner:
        credential = credential_for(cfg)
        endpoint = cfg.arm_endpoint.rstrip("/")
        client = ContainerServiceClient(
            credential,
            cfg.aks_subscription,
            base_url=endpoint,
            credential_scopes=[arm_scope(endpoint, cfg.arm_audience)],
        )
        return cls(client, cfg.aks_resource_group, cfg.aks_cluster, previews=previews)

    # -- the snapshot -------------------------------------------------------------------
    def refresh(self) -> None:
        pools = {}
        for pool in self.client.agent_pools.list(self.resource_group, self.cluster):
            d = pool.as_dict()
            pools[d["name"]] = d
        with self._lock:
            self.pools = pools

    def owned(self) -> set[WorkspaceKey]:
        with self._lock:
            return {
                k
                for p in self.pools.values()
                if (k := _key_of((p.get("properties") or {}).get("tags"), self.previews))
            }

    def hopeless(self, status: ResourceStatus) -> bool:
        """Someone has to act first: raise a quota, grant a role, change the workspace."""
        if status.ready:
            return False
        if status.reason == "AgentPoolConflict":
            return True
        return status.reason in RETRY_AFTER and (RETRY_AFTER[status.reason] or float("inf")) >= 600

    def _pool(self, name: str) -> dict | None:
        with self._lock:
            return self.pools.get(name)

    # -- decisions ------------------------------------------------------------------------
    def ensure(self, plan: WorkspacePlan, nodes: list[NodeState] | None) -> ResourceStatus:
        spec = plan.node_pool
        if spec is None:  # bring-your-own nodes
            return self._byo.ensure(plan, nodes)
        spec_hash = spec.tags.get(TAG_SPEC, "")
        pool = self._pool(spec.name)
        props = (pool or {}).get("properties") or {}
        state = props.get("provisioningState", "")
        failure = self._failures.get(spec.name)
        if failure and failure.spec_hash != spec_hash:
            self._failures.pop(spec.name, None)  # the workspace changed: try the new spec at once
            failure = None

        if pool is not None and _key_of(props.get("tags"), self.previews) != plan.key:
            return ResourceStatus(
                False,
                "AgentPoolConflict",
                f"agent pool {spec.name} exists but is not tagged for {plan.key[0]}/{plan.key[1]}; "
                "kaito-gitops will not touch a pool it does not own",
            )
        if state in ("Creating", "Updating", "Scaling", "Upgrading", "Starting"):
            return ResourceStatus(
                False,
                "AgentPoolProvisioning",
                f"agent pool {spec.name}: {state.lower()} {spec.count} x {spec.vm_size}",
            )
        if state == "Deleting":
            return ResourceStatus(
                False,
                "AgentPoolReplacing",
                f"agent pool {spec.name} is being deleted before it is created again",
            )
        if pool is not None and state == "Failed" and not failure:
            err = (props.get("status") or {}).get("provisioningError") or {}
            code, message = err.get("code", "ProvisioningFailed"), err.get("message", "provisioning failed")
            failure = self._remember(spec.name, code, message, spec_hash, None)
        if failure:
            if failure.retry_at is None or time.monotonic() < failure.retry_at:
                return self._failed_status(failure, spec)
            self._failures.pop(spec.name, None)
        if time.monotonic() < self._throttled_until:
            return ResourceStatus(
                False,
                "Throttled",
                explain("Throttled", "", spec),
                retry_after=self._throttled_until - time.monotonic(),
            )

        if pool is None or state == "Failed":
            return self._start_put(spec, spec_hash, "create")
        if self._needs_replace(props, spec):
            return self._start_delete(spec.name, reason="replace")
        if int(props.get("count") or 0) != spec.count or (props.get("tags") or {}).get(TAG_SPEC) != spec_hash:
            return self._start_put(
                spec, spec_hash, "scale" if int(props.get("count") or 0) != spec.count else "update"
            )
        return self._nodes_status(spec, nodes)

    @staticmethod
    def _needs_replace(props: dict, spec: NodePoolSpec) -> bool:
        return (
            (props.get("vmSize") or "").lower() != spec.vm_size.lower()
            or (props.get("osSKU") or "Ubuntu") != spec.os_sku
            or int(props.get("osDiskSizeGB") or 0) != spec.os_disk_gb
        )

    def _nodes_status(self, spec: NodePoolSpec, nodes: list[NodeState] | None) -> ResourceStatus:
        if nodes is None:
            return ResourceStatus(True, "workspaceResourceStatusSuccess", f"agent pool {spec.name} succeeded")
        ready = [n for n in nodes if n.ready]
        with_gpu = [n for n in ready if n.gpus > 0]
        names = tuple(sorted(n.name for n in nodes))
        if len(with_gpu) >= spec.count:
            return ResourceStatus(
                True,
                "workspaceResourceStatusSuccess",
                f"{len(with_gpu)} x {spec.vm_size} ready with GPUs",
                nodes=names,
            )
        if len(ready) >= spec.count:
            return ResourceStatus(
                False,
                "NodePluginsNotReady",
                f"{len(ready)} node(s) Ready but only {len(with_gpu)} report nvidia.com/gpu capacity "
                "(the GPU driver or device plugin is still starting)",
                nodes=names,
            )
        return ResourceStatus(
            False,
            "NodesNotReady",
            f"{len(ready)} of {spec.count} node(s) of pool {spec.name} Ready",
            nodes=names,
        )

    def _remember(
        self, name: str, code: str, message: str, spec_hash: str, retry_after: float | None
    ) -> _Failure:
        wait = retry_after if retry_after is not None else RETRY_AFTER.get(code, DEFAULT_RETRY)
        f = _Failure(code, message, spec_hash, None if wait is None else time.monotonic() + wait)
        self._failures[name] = f
        log.warning(
            "agent pool failed",
            pool=name,
            code=code,
            message=message[:300],
            retry_in=None if wait is None else round(wait, 1),
        )
        return f

    def _failed_status(self, f: _Failure, spec: NodePoolSpec) -> ResourceStatus:
        left = None if f.retry_at is None else max(0.0, f.retry_at - time.monotonic())
        msg = explain(f.code, f.message, spec)
        if left is None:
            msg += " (not retried until the workspace changes)"
        return ResourceStatus(False, f.code, msg, retry_after=left)

    # -- writes ---------------------------------------------------------------------------
    def _start_put(self, spec: NodePoolSpec, spec_hash: str, what: str) -> ResourceStatus:
        try:
            poller = self.client.agent_pools.begin_create_or_update(
                self.resource_group, self.cluster, spec.name, _pool_properties(spec), polling=False
            )
            body = poller.result()
        except HttpResponseError as e:
            code, message, retry_after = _error(e)
            if e.status_code == 429:
                self._throttled_until = time.monotonic() + (retry_after or DEFAULT_RETRY)
                return ResourceStatus(
                    False, "Throttled", explain(code, message, spec), retry_after=retry_after
                )
            if e.status_code >= 500:
                f = self._remember(spec.name, code, message, spec_hash, retry_after or 30.0)
            else:
                f = self._remember(spec.name, code, message, spec_hash, retry_after)
            return self._failed_status(f, spec)
        state = getattr(body, "provisioning_state", None) or "Creating"
        with self._lock:
            self.pools[spec.name] = (
                body.as_dict() if body is not None else {"name": spec.name, "properties": {}}
            )
        log.info("agent pool " + what, pool=spec.name, vm_size=spec.vm_size, count=spec.count, state=state)
        return ResourceStatus(
            False,
            "AgentPoolProvisioning",
            f"agent pool {spec.name}: {what} started ({spec.count} x {spec.vm_size})",
        )

    def _start_delete(self, name: str, reason: str) -> ResourceStatus:
        try:
            self.client.agent_pools.begin_delete(
                self.resource_group, self.cluster, name, polling=False
            ).result()
        except ResourceNotFoundError:
            pass
        except HttpResponseError as e:
            code, message, retry_after = _error(e)
            if e.status_code == 429:
                self._throttled_until = time.monotonic() + (retry_after or DEFAULT_RETRY)
            return ResourceStatus(False, code, explain(code, message, None), retry_after=retry_after)
        with self._lock:
            if name in self.pools:
                self.pools[name].setdefault("properties", {})["provisioningState"] = "Deleting"
        log.info("agent pool delete", pool=name, reason=reason)
        return ResourceStatus(
            False,
            "AgentPoolReplacing" if reason == "replace" else "AgentPoolDeleting",
            f"agent pool {name} is being deleted ({reason})",
        )

    def release(self, key: WorkspaceKey) -> bool:
        with self._lock:
            mine = [
                (n, p)
                for n, p in self.pools.items()
                if _key_of((p.get("properties") or {}).get("tags"), self.previews) == key
            ]
        if not mine:
            return True
        for name, pool in mine:
            if (pool.get("properties") or {}).get("provisioningState") != "Deleting":
                self._start_delete(name, reason="workspace removed")
            self._failures.pop(name, None)
        return False
