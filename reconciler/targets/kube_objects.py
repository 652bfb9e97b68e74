"""The companion objects on a cluster: server-side apply of any kind, through discovery.

`kubernetes.dynamic.DynamicClient` finds each kind's resource (so CRD kinds work, and a kind the
cluster does not serve is an error for its objects only). Every pass lists, per kind, only the
objects carrying our companion label; what git no longer has is pruned (unless held); what is
unchanged and undrifted is not written.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from .. import kinds
from ..companions import LABEL_COMPANION, ObjectKey, Reference, key_text
from ..logs import error_text
from ..planning import ObjectPlan
from ..render.common import ANNOTATION_OBJECT_HASH, ANNOTATION_SOURCE
from .base import ObjectsResult
from .drift import strip_for_compare, subset_differs

log = structlog.get_logger("kaito_gitops.kubernetes")

FIELD_MANAGER = "kaito-gitops"
SELECTOR = f"{LABEL_COMPANION}=true"


def health(kind_name: str, obj: dict) -> str:
    """A word for status: Bound/Pending (PVC), Available/Progressing (Deployment),
    Established/NotEstablished (CRD), Applied for kinds without a readiness of their own."""
    info = kinds.lookup(kind_name)
    status = obj.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or [] if isinstance(c, dict)}
    how = info.health if info else ""
    if how == "bound":
        phase = status.get("phase") or "Pending"
        return "Bound" if phase == "Bound" else f"{phase} (not bound yet)"
    if how == "available":
        return "Available" if conds.get("Available") == "True" else "Progressing"
    if how == "established":
        return "Established" if conds.get("Established") == "True" else "NotEstablished"
    return "Applied"


def _body(resp: Any) -> dict:
    return resp.to_dict() if hasattr(resp, "to_dict") else _loads(resp.data or b"{}")


try:  # a list of a thousand objects is mostly JSON parsing
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency
    _loads = json.loads


def _problem(e: Exception) -> str:
    """An API error as the server said it (its Status message), never a traceback."""
    body = getattr(e, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or error_text(e)
        except (ValueError, AttributeError):
            pass
    return error_text(e)


class ObjectApplier:
    def __init__(self, api_client: client.ApiClient, timeout: tuple[float, float], allowed: frozenset[str]):
        self.api_client = api_client
        self.timeout = timeout
        self.allowed = allowed
        self._dyn: DynamicClient | None = None
        self.live: dict[ObjectKey, dict] = {}
        self._versions: dict[str, str] = {}  # kind name -> apiVersion to list it by
        self._listed_allowed = False  # after a restart, look for ours under every allowed kind once
        self._verified: dict[ObjectKey, str] = {}
        self._looked_up: dict[ObjectKey, bool] = {}  # objects not ours, by GET, this pass

    @property
    def dyn(self) -> DynamicClient:
        if self._dyn is None:
            self._dyn = DynamicClient(self.api_client)
        return self._dyn

    def _list_ours(self, res) -> dict:
        """LIST one kind in every namespace, ours only. Straight through the ApiClient: the
        DynamicClient would wrap every field of every item in an object first (most of a pass)."""
        request = self.api_client.param_serialize(
            "GET",
            res.path(),
            query_params=[("labelSelector", SELECTOR)],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        resp = self.api_client.call_api(*request, _request_timeout=self.timeout)
        resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException(http_resp=resp)
        return _loads(resp.data or b"{}")

    def _resource(self, api_version: str, kind: str):
        try:
            return self.dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            return None

    # -- reading ---------------------------------------------------------------------------
    def _list(self, desired: dict[ObjectKey, ObjectPlan]) -> dict[str, str]:
        """Fill `live` with our objects of every kind we may have applied; the kinds that could
        not be listed, and why (not served, or refused: e.g. --allow-kind without a grant)."""
        wanted = dict(self._versions)
        if not self._listed_allowed:
            for name in self.allowed:
                info = kinds.lookup(name)
                if info is not None:
                    wanted.setdefault(name, info.api_version)
        for plan in desired.values():
            wanted[plan.key[0]] = plan.source.api_version
        live: dict[ObjectKey, dict] = {}
        unlisted: dict[str, str] = {}
        versions: dict[str, str] = {}
        for name, api_version in sorted(wanted.items()):
            res = self._resource(api_version, name.split(".", 1)[0])
            if res is None:
                unlisted[name] = (
                    f"the cluster does not serve {name} ({api_version}): install its CustomResourceDefinition, "
                    "or remove the object"
                )
                continue
            try:
                data = self._list_ours(res)
            except ApiException as e:
                unlisted[name] = f"cannot list {name}: {_problem(e)}"
                # what we applied of this kind is unknown now: keep it, prune nothing of it
                live.update({k: v for k, v in self.live.items() if k[0] == name})
                versions[name] = api_version
                continue
            for item in data.get("items") or []:
                md = item.get("metadata") or {}
                md.pop("managedFields", None)
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", res.kind)
                live[(name, md.get("namespace") or "", md["name"])] = item
                versions[name] = api_version
        self.live, self._looked_up = live, {}
        self._listed_allowed = True
        self._versions = versions
        return unlisted

    def read(self, desired: dict[ObjectKey, ObjectPlan]) -> dict[str, str]:
        """List ours (as a pass does, writing nothing); the kinds that could not be listed, and why."""
        return self._list(desired)

    def preview(self, plan: ObjectPlan) -> tuple[dict | None, dict]:
        """(live, what applying would leave) for one object, writing nothing: the server's own
        server-side apply with dryRun=All. Call `read` first."""
        res = self._resource(plan.source.api_version, plan.source.kind)
        key = plan.key
        live = self.live.get(key)
        if live is None:  # not ours, but it may be there (made with kubectl): apply would take it over
            try:
                live = _body(
                    self.dyn.get(res, name=key[2], namespace=key[1] or None, _request_timeout=self.timeout)
                )
            except (ApiException, DynamicApiError) as e:
                if getattr(e, "status", None) != 404:
                    raise
        return live, self._apply_one(res, plan, dry_run=True)

    def _apply_one(self, res, plan: ObjectPlan, dry_run: bool = False) -> dict:
        """Server-side apply, forced (git wins); with `dry_run`, what the server would store."""
        extra = {"dry_run": "All"} if dry_run else {}
        stored = _body(
            self.dyn.server_side_apply(
                res,
                body=plan.body,
                name=plan.key[2],
                namespace=plan.key[1] or None,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=self.timeout,
                **extra,
            )
        )
        stored.get("metadata", {}).pop("managedFields", None)
        return stored

    # -- writing ---------------------------------------------------------------------------
    def _needs_write(self, plan: ObjectPlan, live: dict | None) -> str | None:
        if live is None:
            return "missing"
        want = plan.object_hash
        if (live.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_OBJECT_HASH) != want:
            return "changed"
        rv = live["metadata"].get("resourceVersion") or ""
        if self._verified.get(plan.key) == rv + want:
            return None
        drift = subset_differs(strip_for_compare(plan.body), live)
        if drift:
            return f"drifted at {drift}"
        self._verified[plan.key] = rv + want
        return None

    def apply(self, desired: dict[ObjectKey, ObjectPlan], keep: set[ObjectKey], prune: bool) -> ObjectsResult:
        result = ObjectsResult()
        unlisted = self._list(desired)
        for key, plan in desired.items():  # already in apply order
            if key[0] in unlisted:
                result.errors[key] = unlisted[key[0]]
                continue
            why = self._needs_write(plan, self.live.get(key))
            if why is None:
                result.health[key] = health(key[0], self.live[key])
                continue
            res = self._resource(plan.source.api_version, plan.source.kind)
            try:
                stored = self._apply_one(res, plan)
            except (ApiException, DynamicApiError) as e:
                result.errors[key] = _problem(e)
                log.warning("object not applied", object=key_text(key), error=result.errors[key])
                continue
            self.live[key] = stored
            self._versions[key[0]] = plan.source.api_version
            result.writes += 1
            result.applied.append(f"{key_text(key)} ({why})")
            result.health[key] = health(key[0], stored)
            log.info("applied", object=key_text(key), reason=why, source=plan.source.path)
        gone = [k for k in self.live if k not in desired and k not in keep and k[0] not in unlisted]
        if gone and not prune:
            result.held = sorted(gone)
            return result
        for key in sorted(gone, key=lambda k: (-self._rank(k), k)):
            obj = self.live[key]
            res = self._resource(obj.get("apiVersion", ""), obj.get("kind", ""))
            try:
                self.dyn.delete(
                    res,
                    name=key[2],
                    namespace=key[1] or None,
                    propagation_policy="Background",
                    _request_timeout=self.timeout,
                )
            except (ApiException, DynamicApiError) as e:
                if getattr(e, "status", None) != 404:
                    result.errors[key] = _problem(e)
                    continue
            source = (obj.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SOURCE, "")
            log.info("pruned", object=key_text(key), source=source)
            del self.live[key]
            self._verified.pop(key, None)
            result.writes += 1
            result.deleted.append(key_text(key))
        return result

    @staticmethod
    def _rank(key: ObjectKey) -> int:
        info = kinds.lookup(key[0])
        return info.rank if info else kinds.RANK_WORKLOAD

    # -- what workspaces need ----------------------------------------------------------------
    def missing(self, refs: list[Reference]) -> list[Reference]:
        """PVCs and ConfigMaps that are neither ours nor in the cluster. Secrets are not looked up:
        the daemon has no permission to read them (a missing one shows as the pod's error)."""
        out = []
        for ref in refs:
            if ref.kind == "Secret" or ref.key in self.live:
                continue
            found = self._looked_up.get(ref.key)
            if found is None:
                found = self._looked_up[ref.key] = self._exists(ref)
            if not found:
                out.append(ref)
        return out

    def _exists(self, ref: Reference) -> bool:
        core = client.CoreV1Api(self.api_client)
        read = (
            core.read_namespaced_persistent_volume_claim
            if ref.kind == "PersistentVolumeClaim"
            else core.read_namespaced_config_map
        )
        try:
            read(ref.name, ref.namespace, _preload_content=False, _request_timeout=self.timeout)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True
