"""The Kubernetes target: server-side apply through the official client, drift-aware.

Once per pass `refresh` lists every object kaito-gitops manages (one LIST per kind, by the
managed-by label), plus pods and nodes. Workers then compare each workspace's desired
objects with that snapshot and write only objects that are missing, whose desired hash
changed, or that drifted (edited out of band); a pass over an unchanged repository writes
nothing.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .. import kinds
from ..companions import LABEL_COMPANION, ObjectKey, Reference
from ..planning import ObjectPlan, WorkspacePlan
from ..render.common import (
    ANNOTATION_OBJECT_HASH,
    ANNOTATION_SOURCE,
    GPU_RESOURCE,
    LABEL_MANAGED_BY,
    LABEL_PREVIEW,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NS,
    MANAGED_BY,
    REPLACE_ON_CHANGE,
)
from ..status import JobState, NodeState, Observation, PodState, Progress
from .base import ApplyResult, ObjectsResult, WorkspaceKey
from .drift import strip_for_compare, subset_differs
from .kube_objects import ObjectApplier

log = structlog.get_logger("kaito_gitops.kubernetes")

FIELD_MANAGER = "kaito-gitops"
# Eval previews of pull requests (evals/cluster_preview.py) carry LABEL_PREVIEW and have their own
# target: the daemon's never sees them, so it never prunes a preview as "gone from git".
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},!{LABEL_PREVIEW}"
PREVIEW_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_PREVIEW}"
APPLY = "application/apply-patch+yaml"
TIMEOUT = (5, 30)  # connect, read seconds


@dataclass(frozen=True)
class KindApi:
    api: type
    suffix: str  # e.g. "stateful_set" -> patch_namespaced_stateful_set


# Apply order: configuration, then services, then workloads. Removal runs in reverse.
KINDS: dict[str, KindApi] = {
    "ConfigMap": KindApi(client.CoreV1Api, "config_map"),
    "Service": KindApi(client.CoreV1Api, "service"),
    "StatefulSet": KindApi(client.AppsV1Api, "stateful_set"),
    "Job": KindApi(client.BatchV1Api, "job"),
}
ORDER = list(KINDS)


try:  # listing thousands of objects is mostly JSON parsing; orjson does it several times faster
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency, but keep working without it
    _loads = json.loads


def _json(resp) -> Any:
    data = resp.data if hasattr(resp, "data") else resp
    return _loads(data) if data else {}


class KubernetesTarget:
    name = "kubernetes"

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        log_tail_lines: int = 200,
        timeout: tuple[float, float] = TIMEOUT,
        allowed_kinds: frozenset[str] = kinds.DEFAULT_ALLOWED,
        selector: str = SELECTOR,
        reach: str = "service",
    ):
        self.api_client = api_client
        self.selector = selector
        self.reach = reach  # how set members' /metrics are read: "service" (cluster DNS) or "proxy"
        self.timeout = timeout
        self.companions = ObjectApplier(api_client, timeout, allowed_kinds)
        self._apis: dict[type, Any] = {}
        self._lock = threading.Lock()
        # live objects by workspace: (ns, workspace) -> {(kind, name): object}
        self.objects: dict[WorkspaceKey, dict[tuple[str, str], dict]] = {}
        # objects found in sync, by resourceVersion: unchanged since, so no drift check is needed
        self._verified: dict[tuple[str, str, str, str], str] = {}
        self._current: dict[WorkspaceKey, bool] = {}  # every desired object is in place (set by apply)
        self.pods: dict[WorkspaceKey, list[dict]] = {}
        self.nodes_list: list[dict] = []
        # nodes matching a label set, per snapshot: many workspaces share one selector, and each
        # asks several times a pass (sizing, provisioning, observing)
        self._matching: dict[frozenset, list[NodeState]] = {}
        self.log_tail_lines = log_tail_lines

    # -- plumbing ---------------------------------------------------------------------
    def _api(self, cls: type):
        api = self._apis.get(cls)
        if api is None:
            api = self._apis[cls] = cls(self.api_client)
        return api

    def _call(self, kind: str, verb: str, *args, **kwargs):
        ka = KINDS[kind]
        method = getattr(
            self._api(ka.api),
            f"{verb}_{ka.suffix}" if verb.startswith("list") else f"{verb}_namespaced_{ka.suffix}",
        )
        return method(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)

    # -- the snapshot -------------------------------------------------------------------
    def refresh(self) -> None:
        with self._lock:  # drop the old snapshot first: two of them at once is the daemon's peak memory
            self.objects, self.pods, self.nodes_list = {}, {}, []
        objects: dict[WorkspaceKey, dict[tuple[str, str], dict]] = {}
        for kind, ka in KINDS.items():
            method = getattr(self._api(ka.api), f"list_{ka.suffix}_for_all_namespaces")
            data = _json(
                method(label_selector=self.selector, _preload_content=False, _request_timeout=self.timeout)
            )
            for item in data.get("items", []):
                md = item["metadata"]
                labels = md.get("labels") or {}
                if LABEL_WORKSPACE not in labels or LABEL_COMPANION in labels:
                    continue  # a companion object (kube_objects.py), not a workspace's
                ws_ns = labels.get(LABEL_WORKSPACE_NS, md.get("namespace", ""))
                md.pop("managedFields", None)  # large and unused: we always apply with force
                item["kind"] = kind  # list items come without kind/apiVersion
                item.setdefault("apiVersion", data.get("apiVersion", ""))
                objects.setdefault((ws_ns, labels.get(LABEL_WORKSPACE, "")), {})[(kind, md["name"])] = item
        core = self._api(client.CoreV1Api)
        pods_data = _json(
            core.list_pod_for_all_namespaces(
                label_selector=self.selector, _preload_content=False, _request_timeout=self.timeout
            )
        )
        nodes_data = _json(core.list_node(_preload_content=False, _request_timeout=self.timeout))
        pods: dict[WorkspaceKey, list[dict]] = {}
        for p in pods_data.get("items", []):
            labels = p["metadata"].get("labels") or {}
            key = (
                labels.get(LABEL_WORKSPACE_NS, p["metadata"].get("namespace", "")),
                labels.get(LABEL_WORKSPACE, ""),
            )
            pods.setdefault(key, []).append(p)
        with self._lock:
            self.objects, self.pods, self.nodes_list = objects, pods, nodes_data.get("items", [])
            self._current, self._matching = {}, {}

    def live_workspaces(self) -> dict[WorkspaceKey, str]:
        out: dict[WorkspaceKey, str] = {}
        with self._lock:
            for key, objs in self.objects.items():
                obj = next(iter(objs.values()))
                out[key] = (obj["metadata"].get("annotations") or {}).get(ANNOTATION_SOURCE, "")
        return out

    def service(self, key: WorkspaceKey) -> dict | None:
        """The workspace's Service as last seen (what its endpoint is reached through)."""
        return self._live_of(key).get(("Service", key[1]))

    def rolled_out(self, key: WorkspaceKey) -> bool:
        """Every replica of the workspace's StatefulSet runs its current template and is ready
        (a ready pod of the previous template is not an answer from the new one)."""
        sts = self._live_of(key).get(("StatefulSet", key[1]))
        if sts is None:
            return False
        want = (sts.get("spec") or {}).get("replicas", 1)
        st = sts.get("status") or {}
        return (
            st.get("observedGeneration", 0) >= sts["metadata"].get("generation", 1)
            and st.get("updateRevision", "") == st.get("currentRevision", "")
            and (st.get("updatedReplicas") or 0) >= want
            and (st.get("readyReplicas") or 0) >= max(1, want)
        )

    def _live_of(self, key: WorkspaceKey) -> dict[tuple[str, str], dict]:
        with self._lock:
            return dict(self.objects.get(key, {}))

    def _store(self, key: WorkspaceKey, ident: tuple[str, str], obj: dict | None) -> None:
        with self._lock:
            objs = self.objects.setdefault(key, {})
            if obj is None:
                objs.pop(ident, None)
                self._verified.pop((key[0], key[1], *ident), None)
                if not objs:
                    self.objects.pop(key, None)
            else:
                objs[ident] = obj

    # -- writes -------------------------------------------------------------------------
    def _needs_write(self, key: WorkspaceKey, desired: dict, live: dict | None) -> str | None:
        if live is None:
            return "missing"
        want = desired["metadata"]["annotations"].get(ANNOTATION_OBJECT_HASH)
        have = (live["metadata"].get("annotations") or {}).get(ANNOTATION_OBJECT_HASH)
        if want != have:
            return "changed"
        ident = (key[0], key[1], desired["kind"], desired["metadata"]["name"])
        rv = live["metadata"].get("resourceVersion")
        if rv and self._verified.get(ident) == rv + want:
            return None  # nobody wrote it since we last found it in sync
        drift = subset_differs(strip_for_compare(desired), live)
        if drift:
            return f"drifted at {drift}"
        self._verified[ident] = (rv or "") + want
        return None

    def _apply_one(self, obj: dict, dry_run: bool = False) -> dict:
        """Server-side apply of one object; with `dry_run`, what the server would store, unwritten."""
        md = obj["metadata"]
        resp = self._call(
            obj["kind"],
            "patch",
            md["name"],
            md["namespace"],
            obj,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
            **({"dry_run": "All"} if dry_run else {}),
        )
        stored = _json(resp)
        stored.get("metadata", {}).pop("managedFields", None)
        return stored

    def preview(self, obj: dict) -> tuple[dict | None, dict, str]:
        """(live, what applying would leave, note) for one object, writing nothing: a GET and a
        server-side apply with dryRun=All, so defaults, webhooks and others' fields are the server's."""
        md = obj["metadata"]
        try:
            live = _json(self._call(obj["kind"], "read", md["name"], md["namespace"]))
        except ApiException as e:
            if e.status != 404:
                raise
            live = None
        try:
            return live, self._apply_one(obj, dry_run=True), ""
        except ApiException as e:
            if e.status == 422 and "immutable" in (e.body or "") and live is not None:
                return live, obj, "replaced: a field that cannot change in place differs"
            raise

    def _delete_one(self, kind: str, namespace: str, name: str) -> None:
        try:
            self._call(kind, "delete", name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise

    def apply(self, plan: WorkspacePlan) -> ApplyResult:
        result = ApplyResult()
        key = plan.key
        live = self._live_of(key)
        wanted = {(o["kind"], o["metadata"]["name"]) for o in plan.objects}
        for obj in sorted(plan.objects, key=lambda o: ORDER.index(o["kind"])):
            ident = (obj["kind"], obj["metadata"]["name"])
            why = self._needs_write(key, obj, live.get(ident))
            if why is None:
                continue
            if obj["kind"] in REPLACE_ON_CHANGE and why == "changed":
                self._delete_one(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
                result.writes += 1
                result.deleted.append(f"{ident[0]}/{ident[1]}")
            try:
                stored = self._apply_one(obj)
            except ApiException as e:
                if e.status == 422 and "immutable" in (e.body or "") and live.get(ident) is not None:
                    # a field the API will not change in place: replace the object
                    self._delete_one(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
                    result.writes += 1
                    stored = self._apply_one(obj)
                else:
                    raise
            result.writes += 1
            result.applied.append(f"{ident[0]}/{ident[1]} ({why})")
            log.info("applied", workspace=f"{key[0]}/{key[1]}", object=f"{ident[0]}/{ident[1]}", reason=why)
            self._store(key, ident, {**stored, "kind": ident[0]})
        # objects of this workspace that the plan no longer has (e.g. a ConfigMap dropped)
        for kind, name in sorted(set(live) - wanted, key=lambda kn: -ORDER.index(kn[0])):
            self._delete_one(kind, live[(kind, name)]["metadata"]["namespace"], name)
            result.writes += 1
            result.deleted.append(f"{kind}/{name}")
            self._store(key, (kind, name), None)
        with self._lock:
            self._current[key] = True
        return result

    def remove(self, key: WorkspaceKey) -> tuple[bool, ApplyResult]:
        result = ApplyResult()
        live = self._live_of(key)
        for kind, name in sorted(live, key=lambda kn: -ORDER.index(kn[0])):
            self._delete_one(kind, live[(kind, name)]["metadata"]["namespace"], name)
            result.writes += 1
            result.deleted.append(f"{kind}/{name}")
            log.info("pruned", workspace=f"{key[0]}/{key[1]}", object=f"{kind}/{name}")
            self._store(key, (kind, name), None)
        return True, result

    # -- companion objects ------------------------------------------------------------------
    def apply_objects(
        self, desired: dict[ObjectKey, ObjectPlan], keep: set[ObjectKey], prune: bool
    ) -> ObjectsResult:
        return self.companions.apply(desired, keep, prune)

    def missing(self, refs: list[Reference]) -> list[Reference]:
        return self.companions.missing(refs)

    # -- observation ----------------------------------------------------------------------
    def nodes(self, plan: WorkspacePlan) -> list[NodeState]:
        want = dict(plan.workspace.resource.match_labels)
        if plan.node_pool is not None:
            want.update({LABEL_WORKSPACE: plan.workspace.name, LABEL_WORKSPACE_NS: plan.workspace.namespace})
        key = frozenset(want.items())
        with self._lock:
            found = self._matching.get(key)
            nodes = self.nodes_list
        if found is None:
            found = [
                node_state(n)
                for n in nodes
                if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in want.items())
            ]
            with self._lock:
                if self.nodes_list is nodes:  # not a newer snapshot meanwhile
                    self._matching[key] = found
        return list(found)

    def observe(self, key: WorkspaceKey, plan: WorkspacePlan | None) -> Observation:
        kind = plan.kind if plan else "inference"
        live = self._live_of(key)
        with self._lock:
            current = self._current.get(key)
        if current is None:
            current = plan is not None and all(
                self._needs_write(key, o, live.get((o["kind"], o["metadata"]["name"]))) is None
                for o in plan.objects
            )
        applied = plan is not None and current
        with self._lock:
            pods = list(self.pods.get(key, []))
        pod_states = tuple(pod_state(p) for p in pods)
        nodes = tuple(self.nodes(plan)) if plan else ()
        if kind == "tuning":
            job = next((o for (k, _), o in live.items() if k == "Job"), None)
            js = job_state(job) if job else None
            progress = self._progress(key, pods) if js and (js.active or js.succeeded or js.failed) else None
            return Observation("tuning", applied, pods=pod_states, nodes=nodes, job=js, progress=progress)
        sts = next((o for (k, _), o in live.items() if k == "StatefulSet"), None)
        status = (sts or {}).get("status") or {}
        svc = live.get(("Service", key[1]))
        return Observation(
            "inference",
            applied,
            replicas=(sts or {}).get("spec", {}).get("replicas", 0) if sts else 0,
            ready_replicas=status.get("readyReplicas", 0) or 0,
            pods=pod_states,
            nodes=nodes,
            endpoint=endpoint(svc) if svc else "",
        )

    def _progress(self, key: WorkspaceKey, pods: list[dict]) -> Progress | None:
        """The tuning runtime logs progress as JSON lines; read the newest from the pod's log."""
        running = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        if not running:
            return None
        pod = running[-1]
        try:
            resp = self._api(client.CoreV1Api).read_namespaced_pod_log(
                pod["metadata"]["name"],
                pod["metadata"]["namespace"],
                container=key[1],
                tail_lines=self.log_tail_lines,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            text = resp.data.decode("utf-8", "replace")
        except ApiException:
            return None
        return parse_progress_log(text)

    # -- InferenceSets ----------------------------------------------------------------------
    def serve_sets(self, sets: list) -> dict[tuple[str, str], str]:
        """The set's Service `<set>` (a companion object) is its endpoint; nothing to start here."""
        return {s.key: f"http://{s.name}.{s.namespace}.svc.cluster.local" for s in sets if s.name}

    def set_load(self, s, members: list[WorkspaceKey]):
        """Each ready member's /metrics through its own Service, and the activator's behind `<set>`."""
        import httpx

        from ..inferenceset import scales_to_zero
        from .member_metrics import read_load
        from .reach import http_options, service_url

        urls = [
            service_url(self.api_client, svc, self.reach)
            for key in members
            if (svc := self.service(key)) is not None and self.rolled_out(key)
        ]
        front = self.companions.live.get(("Service", s.namespace, s.name)) if scales_to_zero(s) else None
        activator = service_url(self.api_client, front, self.reach) if front is not None else ""
        with httpx.Client(**(http_options(self.api_client) if self.reach == "proxy" else {})) as http:
            return read_load(http, urls, activator)

    def close(self) -> None:
        return None


def parse_progress_log(text: str) -> Progress | None:
    """The newest progress record in a tuning log (one JSON object per line)."""
    from ..progress_format import progress_from_dict

    for line in reversed(text.splitlines()):
        line = line.strip()
        if not (line.startswith("{") and '"step"' in line):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        p = progress_from_dict(data)
        if p is not None:
            return p
    return None


def node_state(n: dict) -> NodeState:
    status = n.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    alloc = (
        (status.get("allocatable") or {}).get(GPU_RESOURCE)
        or (status.get("capacity") or {}).get(GPU_RESOURCE)
        or "0"
    )
    try:
        gpus = int(str(alloc))
    except ValueError:
        gpus = 0
    pressure = tuple(t for t in ("MemoryPressure", "DiskPressure", "PIDPressure") if conds.get(t) == "True")
    labels = n["metadata"].get("labels") or {}
    gpu_labels = tuple(sorted((k, v) for k, v in labels.items() if k.startswith("nvidia.com/")))
    return NodeState(n["metadata"]["name"], conds.get("Ready") == "True", gpus, pressure, gpu_labels)


def pod_state(p: dict) -> PodState:
    status = p.get("status") or {}
    waiting_reason = waiting_message = last_terminated = ""
    ready = False
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if "waiting" in state and not waiting_reason:
            waiting_reason = state["waiting"].get("reason", "")
            waiting_message = state["waiting"].get("message", "")
        term = (cs.get("lastState") or {}).get("terminated") or state.get("terminated") or {}
        if term.get("reason") == "OOMKilled":
            last_terminated = "OOMKilled"
        ready = ready or bool(cs.get("ready"))
    unsched = ""
    for c in status.get("conditions") or []:
        if (
            c.get("type") == "PodScheduled"
            and c.get("status") == "False"
            and c.get("reason") == "Unschedulable"
        ):
            unsched = c.get("message", "unschedulable")
        if c.get("type") == "Ready":
            ready = c.get("status") == "True"
    evicted = status.get("message", "") if status.get("reason") == "Evicted" else ""
    return PodState(
        p["metadata"]["name"],
        status.get("phase", "Unknown"),
        ready,
        waiting_reason,
        waiting_message,
        last_terminated,
        unsched,
        evicted,
        (p.get("spec") or {}).get("nodeName", ""),
    )


def job_state(job: dict) -> JobState:
    s = job.get("status") or {}
    failed_message = ""
    for c in s.get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            failed_message = c.get("message") or c.get("reason", "")
    return JobState(
        s.get("active", 0) or 0,
        s.get("ready", 0) or 0,
        s.get("succeeded", 0) or 0,
        s.get("failed", 0) or 0,
        failed_message,
    )


def endpoint(svc: dict) -> str:
    md = svc["metadata"]
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        host = ingress[0].get("ip") or ingress[0].get("hostname")
        if host:
            return f"http://{host}"
    return f"http://{md['name']}.{md['namespace']}.svc.cluster.local"
