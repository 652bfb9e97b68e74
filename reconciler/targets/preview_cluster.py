"""What an eval preview in the cluster touches (`--preview-target kubernetes`, docs/evals.md).

A pull request's workspaces run in their own namespace, `pr-<number>`, labelled as a preview and
annotated with when it expires; their objects carry LABEL_PREVIEW, so only the previews' own
KubernetesTarget sees them. `ClusterStage` and `DeployedStage` are what `evalcmd.run_suites`
drives in place of the local target: the preview's workspaces (nodes first, then the workload,
ready when every replica is) and, for the base figures, the workspaces deployed now (read only).

Endpoints are reached at the Service's cluster DNS name (the daemon runs in the cluster), or,
with `reach="proxy"`, through the API server's service proxy with the daemon's own credentials
(a daemon outside the cluster; RBAC: `services/proxy` get/create in the preview namespaces).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from ..planning import WorkspacePlan
from ..render.common import LABEL_MANAGED_BY, LABEL_PREVIEW, MANAGED_BY
from ..status import Observation, ResourceStatus, pod_problem
from .base import ObjectsResult, WorkspaceKey
from .kubernetes import APPLY, FIELD_MANAGER, TIMEOUT, _json
from .reach import http_options, service_url

ANNOTATION_EXPIRES = "kaito-gitops.io/expires-at"
ANNOTATION_PRICE = "kaito-gitops.io/price-per-hour"  # the preview's node pools, for the cap after a restart
PREFIX = "pr-"


def preview_namespace(number: int) -> str:
    return f"{PREFIX}{number}"


def is_preview_namespace(name: str) -> bool:
    """Named as a preview's would be (the label says whether it is one)."""
    number = name.removeprefix(PREFIX)
    return name.startswith(PREFIX) and number.isdigit() and name == preview_namespace(int(number))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str) -> float | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class LivePreview:
    """A preview namespace as the cluster has it."""

    number: int
    uid: str
    expires_at: float | None
    price_per_hour: float
    terminating: bool


def _number(ns: dict) -> int | None:
    """The pull request of one of our preview namespaces; None for anything else (a namespace
    labelled by hand, `pr-007`, a label that does not match the name)."""
    md = ns.get("metadata") or {}
    label = (md.get("labels") or {}).get(LABEL_PREVIEW, "")
    if not (is_preview_namespace(md.get("name", "")) and md["name"] == PREFIX + label):
        return None
    if (md.get("labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
        return None
    return int(label)


class PreviewNamespaces:
    """The `pr-<number>` namespaces: made (or their expiry moved) per preview, listed, deleted."""

    def __init__(self, api_client: client.ApiClient, timeout=TIMEOUT):
        self.core = client.CoreV1Api(api_client)
        self.timeout = timeout

    def ensure(self, number: int, expires_at: float, price_per_hour: float = 0.0) -> None:
        """Make the namespace, or move its expiry; refused when a namespace of that name is not a
        preview of this pull request (tearing the preview down would delete what it holds)."""
        name = preview_namespace(number)
        try:
            live = _json(
                self.core.read_namespace(name, _preload_content=False, _request_timeout=self.timeout)
            )
        except ApiException as e:
            if e.status != 404:
                raise
            live = None
        if live is not None and _number(live) != number:
            raise RuntimeError(
                f"namespace {name} exists and is not kaito-gitops' preview of pull request {number}; "
                "previews will not use it (rename it, or turn previews off)"
            )
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PREVIEW: str(number)},
                "annotations": {
                    ANNOTATION_EXPIRES: _iso(expires_at),
                    ANNOTATION_PRICE: f"{price_per_hour:g}",
                },
            },
        }
        self.core.patch_namespace(
            name,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            _preload_content=False,
            _request_timeout=self.timeout,
        )

    def live(self) -> dict[int, LivePreview]:
        """Every preview namespace there is, by pull request."""
        data = _json(
            self.core.list_namespace(
                label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_PREVIEW}",
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        )
        out = {}
        for ns in data.get("items", []):
            number = _number(ns)
            if number is None:
                continue
            md = ns["metadata"]
            annotations = md.get("annotations") or {}
            try:
                price = float(annotations.get(ANNOTATION_PRICE, "0"))
            except ValueError:
                price = 0.0
            terminating = (
                bool(md.get("deletionTimestamp")) or (ns.get("status") or {}).get("phase") == "Terminating"
            )
            out[number] = LivePreview(
                number, md.get("uid", ""), _epoch(annotations.get(ANNOTATION_EXPIRES, "")), price, terminating
            )
        return out

    def delete(self, preview: LivePreview) -> None:
        """Delete exactly the namespace `live()` saw (its uid): never one made since in its name."""
        try:
            self.core.delete_namespace(
                preview_namespace(preview.number),
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=preview.uid)),
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as e:
            if e.status not in (404, 409):  # gone already; or another namespace now has the name
                raise


class _Stage:
    """The part of the Target interface `run_suites` uses, over a KubernetesTarget."""

    def __init__(self, target, reach: str = "service", refresh_every: float = 5.0):
        self.target = target
        self.reach = reach
        self.refresh_every = refresh_every
        self._refreshed = 0.0
        self.stopped = ""  # set when the daemon stops: waits end at once

    def http_options(self) -> dict:
        return http_options(self.target.api_client) if self.reach == "proxy" else {}

    def apply_objects(self, desired, keep, prune) -> ObjectsResult:
        return ObjectsResult()  # previews take no companion objects (docs/evals.md)

    def _refresh(self) -> bool:
        if time.monotonic() - self._refreshed < self.refresh_every:
            return False
        self.target.refresh()
        self._refreshed = time.monotonic()
        return True

    def _served(self, key: WorkspaceKey, plan: WorkspacePlan | None) -> Observation:
        """With `plan`, ready only once the live objects are the plan's: after a push, the previous
        version still serving is not the one to ask."""
        obs = self.target.observe(key, plan)
        svc = self.target.service(key)
        ready = svc is not None and self.target.rolled_out(key) and (plan is None or obs.applied)
        return replace(obs, endpoint=service_url(self.target.api_client, svc, self.reach) if ready else "")

    def close(self) -> None:
        return None


class DeployedStage(_Stage):
    """The workspaces deployed now, for the base figures: asked, never changed. With
    `refresh=False` the target is the daemon's own, whose snapshot its passes keep fresh."""

    def __init__(self, target, reach: str = "service", refresh_every: float = 5.0, refresh: bool = True):
        super().__init__(target, reach, refresh_every)
        self.refresh = refresh

    def apply(self, plan: WorkspacePlan):
        return None

    def observe(self, key: WorkspaceKey, plan: WorkspacePlan | None) -> Observation:
        if self.refresh:
            self._refresh()
        return self._served(key, None)

    def failed(self, key: WorkspaceKey) -> str:
        if self.stopped:
            return self.stopped
        if (self._refreshed or not self.refresh) and not self.target.live_workspaces().get(key):
            return "it is not deployed in the cluster, so there is no base to compare with"
        return ""


class ClusterStage(_Stage):
    """One preview's workspaces in `namespace`: nodes through `provisioner`, then the workload;
    ready when every replica is. Each observation moves them on (the eval loop polls; nothing
    here waits). Keys are the repository's (the suites name those); plans are the preview's."""

    def __init__(
        self, target, provisioner, namespace: str, reach: str = "service", refresh_every: float = 5.0
    ):
        super().__init__(target, reach, refresh_every)
        self.provisioner = provisioner
        self.namespace = namespace
        self.plans: dict[WorkspaceKey, WorkspacePlan] = {}
        self.resources: dict[WorkspaceKey, ResourceStatus] = {}

    def apply(self, plan: WorkspacePlan):
        self.plans[plan.key] = plan
        self._refreshed = 0.0
        self._step()

    def _step(self) -> None:
        if not self._refresh():
            return
        self.provisioner.refresh()
        for key, plan in self.plans.items():
            resource = self.provisioner.ensure(plan, self.target.nodes(plan))
            self.resources[key] = resource
            if resource.ready:
                self.target.apply(plan)

    def observe(self, key: WorkspaceKey, plan: WorkspacePlan | None) -> Observation:
        self._step()
        return self._served((self.namespace, key[1]), self.plans.get((self.namespace, key[1])))

    def failed(self, key: WorkspaceKey) -> str:
        if self.stopped:
            return self.stopped
        key = (self.namespace, key[1])
        r = self.resources.get(key)
        if r is not None and self.provisioner.hopeless(r):
            return f"its nodes cannot be made: {r.message or r.reason}"
        problem = pod_problem(self.target.observe(key, self.plans.get(key)).pods)
        if problem is not None and problem[0] in _STUCK:  # waiting would only bill GPU hours
            return problem[1]
        return ""


# status.pod_problem reasons that do not end by waiting (not scheduling: nodes may still come)
_STUCK = {"ContainerOOMKilled", "ImagePullError", "ContainerStartError", "ContainerCrashLoopBackOff"}
