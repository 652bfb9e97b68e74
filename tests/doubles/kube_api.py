"""An in-memory Kubernetes API server double for tests.

No real kube-apiserver can run on the test machines (shared/reference/machine-infra.md, section 7), and
the available mocks ignore the semantics a reconciler depends on (server-side apply, resourceVersion
conflicts, selectors, status isolation). This double serves the real REST wire format over HTTP on
127.0.0.1 so that code under test talks to it through the unmodified official ``kubernetes`` client.

What it implements like a real API server:

* discovery (``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>[/<version>]``), enough for
  ``kubernetes.dynamic.DynamicClient``;
* create/get/list/replace/patch/delete/deletecollection, the ``status`` subresource, label and field
  selectors, ``limit``/``continue`` paging, ``dryRun=All``;
* bookkeeping: uid, creationTimestamp, a global resourceVersion (not bumped by no-op writes), generation
  (only for kinds that have one, bumped only by spec changes), managedFields;
* server-side apply with per-manager field ownership, conflicts and ``force``;
* the defaulting and validation that most often trips a reconciler comparing desired with live state
  (Service clusterIP, pod template defaults, Job selectors, immutable fields, name rules);
* garbage collection through ``metadata.ownerReferences`` (including the Job orphaning default);
* every error as a real ``Status`` body with the real ``reason``;
* the service proxy (``/api/v1/namespaces/<ns>/services/<name>[:<port>]/proxy/...``): 404 for a
  Service that does not exist, 503 "no endpoints available" while no ready pod matches its
  selector, else the request is forwarded to where the test says the Service's pods listen
  (``set_service_backend``), as kube-apiserver forwards it to an endpoint.

Simplified compared to a real API server (each also noted where it is implemented):

* Deletion is immediate: no finalizers, no deletionTimestamp, no graceful pod termination; Foreground
  and Background cascading both delete dependents before the response.
* Namespaces need not exist: objects are accepted in any namespace. Deleting a Namespace deletes its
  objects at once.
* Server-side apply has no OpenAPI schema: maps are always granular, lists are atomic except a fixed
  table of associative lists (containers/env/volumes/... keyed by name, volumeMounts by mountPath,
  ports by port and protocol, conditions by type). Interior struct paths are not recorded, so
  ``fieldsV1`` lists leaves and list items (items carry ``"."``) only.
  Merged associative lists keep the live order and append new items (structured-merge-diff does the
  same); a ``null`` in an applied configuration removes the field. Managers are told apart by (name,
  operation, subresource), as in Kubernetes, so an "Update" entry of the same name can conflict.
* Strategic merge patch is a JSON merge patch that also merges the associative lists above by key and
  honours ``$patch: delete`` in list items; other ``$`` directives are ignored.
* No watch (``watch=true`` answers 400), no protobuf/CBOR, no table output, no admission plugins,
  no RBAC (any request with the configured bearer token is allowed), no aggregated discovery.
* Paging serves live data after the continue key, not a snapshot at the first page's resourceVersion.
* ``metadata.managedFields`` sent in a request body is ignored (a real server would accept it).
* Validation covers names, labels, pod templates, workload selectors, Job restart policies, ports,
  ConfigMap keys and size, and the immutable fields of StatefulSet, Deployment, Job, Service, PVC and
  Pod; unknown fields are not rejected (there is no schema).

As on a real server, a write without ``fieldManager`` is recorded under the user agent's product name
(``OpenAPI-Generator`` for the Python client), or "unknown" without one.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import random
import re
import socket
import string
import threading
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

TOKEN = "fake-token"
SERVER_VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-08-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
# Metadata the server owns: a client cannot set these, and field ownership never covers them.
SYSTEM_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
NOT_TRACKED_METADATA = (*SYSTEM_METADATA, "name", "namespace")


# --------------------------------------------------------------------------------------------------
# Resource types


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False  # has a status subresource
    generation: bool = False  # metadata.generation is maintained (only kinds with spec/status do)
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`statefulsets.apps`, `pods`: how messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


BUILTIN_RESOURCES = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, status=True, short_names=("ns",)),
    ResourceType("", "v1", "nodes", "Node", namespaced=False, status=True, short_names=("no",)),
    ResourceType("", "v1", "pods", "Pod", status=True, generation=True, short_names=("po",)),
    ResourceType("", "v1", "services", "Service", status=True, short_names=("svc",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType("", "v1", "events", "Event", short_names=("ev",)),
    ResourceType(
        "", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", status=True, short_names=("pvc",)
    ),
    ResourceType(
        "apps", "v1", "statefulsets", "StatefulSet", status=True, generation=True, short_names=("sts",)
    ),
    ResourceType(
        "apps", "v1", "deployments", "Deployment", status=True, generation=True, short_names=("deploy",)
    ),
    ResourceType("batch", "v1", "jobs", "Job", status=True, generation=True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    ResourceType(
        "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", status=True, short_names=("pdb",)
    ),
    ResourceType(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        status=True,
        short_names=("hpa",),
    ),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        status=True,
        short_names=("crd",),
    ),
)

# Kinds of CRDs that kaito-gitops users keep beside their workspaces: add them with add_resource
SEALED_SECRET = ResourceType("bitnami.com", "v1alpha1", "sealedsecrets", "SealedSecret", status=True)
EXTERNAL_SECRET = ResourceType("external-secrets.io", "v1", "externalsecrets", "ExternalSecret", status=True)
HTTP_ROUTE = ResourceType("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", status=True)
SCALED_OBJECT = ResourceType("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", status=True)


# --------------------------------------------------------------------------------------------------
# Errors: every failure leaves the server as a real metav1.Status.


class ApiError(Exception):
    def __init__(self, code: int, message: str, details: dict | None = None, reason: str | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details
        self.reason = reason or REASONS.get(code, "Unknown")
        self.headers: dict[str, str] = {}

    def status(self) -> dict:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404, f'{rt.qualified} "{name}" not found', {"name": name, "group": rt.group, "kind": rt.plural}
    )


def invalid(rt: ResourceType, name: str, causes: list[dict]) -> ApiError:
    text = [f"{c['field']}: {c['message']}" for c in causes]
    joined = text[0] if len(text) == 1 else "[" + ", ".join(text) + "]"
    return ApiError(
        422,
        f'{rt.qualified_kind} "{name}" is invalid: {joined}',
        {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes},
    )


def cause(kind: str, path: str, detail: str, value: Any = None) -> dict:
    """One StatusCause in the apimachinery field.Error wording."""
    if kind == "FieldValueInvalid":
        message = f"Invalid value: {json.dumps(value)}: {detail}"
    elif kind == "FieldValueRequired":
        message = f"Required value{': ' + detail if detail else ''}"
    elif kind == "FieldValueNotSupported":
        message = f"Unsupported value: {json.dumps(value)}: {detail}"
    elif kind == "FieldValueTooLong":
        message = f"Too long: {detail}"
    else:
        message = f"Forbidden: {detail}"
    return {"reason": kind, "message": message, "field": path}


# --------------------------------------------------------------------------------------------------
# Label and field selectors


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` sets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


_LABEL_REQ = re.compile(
    r"^(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=|>|<)\s*(?P<value>[-A-Za-z0-9_.]*)|\s(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?$"
)


def parse_label_selector(text: str) -> Callable[[dict], bool]:
    """Compile a labelSelector query parameter; comma means AND."""
    checks: list[Callable[[dict], bool]] = []
    for part in _split_top_level(text):
        m = _LABEL_REQ.match(part)
        if not m or (m["neg"] and (m["op"] or m["setop"])):
            raise ApiError(400, f"unable to parse requirement: {part!r}")
        key = m["key"]
        if m["neg"]:
            checks.append(lambda labels, k=key: k not in labels)
        elif m["op"] in ("=", "=="):
            checks.append(lambda labels, k=key, v=m["value"]: labels.get(k) == v)
        elif m["op"] == "!=":
            checks.append(lambda labels, k=key, v=m["value"]: labels.get(k) != v)
        elif m["op"] in (">", "<"):
            try:
                bound = int(m["value"])
            except ValueError:
                raise ApiError(400, f"unable to parse requirement: {part!r}") from None
            checks.append(
                lambda labels, k=key, b=bound, gt=m["op"] == ">": _compare_int(labels.get(k), b, gt)
            )
        elif m["setop"]:
            values = {v.strip() for v in m["set"].split(",") if v.strip()}
            if m["setop"] == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        else:
            checks.append(lambda labels, k=key: k in labels)
    return lambda labels: all(check(labels) for check in checks)


def _compare_int(value: str | None, bound: int, greater: bool) -> bool:
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return False
    return number is not None and (number > bound if greater else number < bound)


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """Evaluate a metav1.LabelSelector (matchLabels + matchExpressions)."""
    if not selector:
        return False  # an empty selector in a workload matches nothing
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# Field selectors a real server supports per kind, beyond metadata.name and metadata.namespace.
FIELD_SELECTORS = {
    "Pod": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "Event": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
    "Job": ("status.successful",),
    "StatefulSet": ("status.successful",),
}


def parse_field_selector(text: str, kind: str) -> Callable[[dict], bool]:
    allowed = ("metadata.name", "metadata.namespace", *FIELD_SELECTORS.get(kind, ()))
    checks = []
    for part in _split_top_level(text):
        m = re.match(r"^([A-Za-z.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise ApiError(400, f"invalid field selector: {part!r}")
        path, op, value = m.groups()
        if path not in allowed:
            raise ApiError(400, f"field label not supported: {path}")
        checks.append((path.split("."), op == "!=", value.strip()))

    def match(obj: dict) -> bool:
        for steps, negate, value in checks:
            node: Any = obj
            for step in steps:
                node = node.get(step) if isinstance(node, dict) else None
            actual = "" if node is None else (str(node).lower() if isinstance(node, bool) else str(node))
            if (actual == value) == negate:
                return False
        return True

    return match


# --------------------------------------------------------------------------------------------------
# Field paths, field sets and managedFields (a simplified structured-merge-diff)
#
# A path is a tuple of elements: a field name (str) or a list item ("k", ((key, value), ...)).

FieldPath = tuple
MISSING = object()

# Associative lists and their keys; every other list is atomic (owned and replaced as a whole).
LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
}
KEY_DEFAULTS = {"protocol": "TCP"}  # a key field the server defaults still identifies the item


def _list_keys(name: Any, items: Any) -> tuple[str, ...] | None:
    """The merge keys of a list, or None when the list is atomic here."""
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        return None
    if name == "ports":
        first = "containerPort" if "containerPort" in items[0] else "port"
        keys: tuple[str, ...] = (first, "protocol")
    else:
        keys = LIST_KEYS.get(name, ()) if isinstance(name, str) else ()
    if not keys or not all(keys[0] in i for i in items):
        return None
    return keys


def _item_element(item: dict, keys: tuple[str, ...]) -> tuple:
    return ("k", tuple(sorted((k, item.get(k, KEY_DEFAULTS.get(k))) for k in keys)))


def _item_matches(item: Any, element: tuple) -> bool:
    return isinstance(item, dict) and all(item.get(k, KEY_DEFAULTS.get(k)) == v for k, v in element[1])


def field_set(node: dict, prefix: FieldPath = ()) -> set[FieldPath]:
    """Leaves (scalars, atomic lists, empty maps) and associative-list items of an object."""
    out: set[FieldPath] = set()
    for key, child in node.items():
        path = (*prefix, key)
        if child is None:
            continue
        if isinstance(child, dict) and child:
            out |= field_set(child, path)
        elif keys := _list_keys(key, child):
            for item in child:
                item_path = (*path, _item_element(item, keys))
                out.add(item_path)
                out |= field_set(item, item_path)
        else:
            out.add(path)
    return out


def get_path(node: Any, path: FieldPath) -> Any:
    for element in path:
        if isinstance(element, str):
            if not isinstance(node, dict) or element not in node:
                return MISSING
            node = node[element]
        else:
            if not isinstance(node, list):
                return MISSING
            node = next((i for i in node if _item_matches(i, element)), MISSING)
            if node is MISSING:
                return MISSING
    return node


def remove_path(root: dict, path: FieldPath) -> None:
    """Remove a field or list item, then prune maps the removal left empty (never top-level ones)."""
    parent = get_path(root, path[:-1])
    last = path[-1]
    if isinstance(last, str) and isinstance(parent, dict):
        parent.pop(last, None)
    elif not isinstance(last, str) and isinstance(parent, list):
        parent[:] = [i for i in parent if not _item_matches(i, last)]
    else:
        return
    for depth in range(len(path) - 1, 1, -1):
        node = get_path(root, path[:depth])
        if node in ({}, []) and isinstance(path[depth - 1], str):
            container = get_path(root, path[: depth - 1])
            if isinstance(container, dict):
                container.pop(path[depth - 1], None)
        else:
            break


def path_string(path: FieldPath) -> str:
    """`.spec.template.spec.containers[name="x"].image`, the wording of SSA conflicts."""
    out = ""
    for element in path:
        if isinstance(element, str):
            out += "." + element
        else:
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in element[1]) + "]"
    return out


def _element_key(element: Any) -> str:
    if isinstance(element, str):
        return "f:" + element
    return "k:" + json.dumps(dict(element[1]), separators=(",", ":"), sort_keys=True)


def to_fields_v1(paths: set[FieldPath]) -> dict:
    tree: dict = {}
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})

    def emit(node: dict, prefix: FieldPath) -> dict:
        out: dict = {}
        if node and prefix in paths:  # owned itself and has owned children (list items, mostly)
            out["."] = {}
        for element in sorted(node, key=_element_key):
            out[_element_key(element)] = emit(node[element], (*prefix, element))
        return out

    return emit(tree, ())


def from_fields_v1(node: dict, prefix: FieldPath = ()) -> set[FieldPath]:
    out: set[FieldPath] = set()
    for key, child in node.items():
        if key == ".":
            out.add(prefix)
            continue
        tag, _, rest = key.partition(":")
        if tag == "f":
            element: Any = rest
        elif tag == "k":
            element = ("k", tuple(sorted(json.loads(rest).items())))
        else:  # v: (set items) and i: (indexes) are not produced here; keep them opaque
            element = (tag, ((tag, rest),))
        path = (*prefix, element)
        if child:
            out |= from_fields_v1(child, path)
        else:
            out.add(path)
    return out


@dataclass
class ManagerEntry:
    api_version: str
    time: str
    paths: set[FieldPath]


EntryKey = tuple[str, str, str]  # (manager, operation, subresource)


def read_managed(obj: dict | None) -> dict[EntryKey, ManagerEntry]:
    entries: dict[EntryKey, ManagerEntry] = {}
    for raw in (obj or {}).get("metadata", {}).get("managedFields") or []:
        key = (raw.get("manager", ""), raw.get("operation", "Update"), raw.get("subresource", ""))
        paths = from_fields_v1(raw.get("fieldsV1") or {})
        entries[key] = ManagerEntry(raw.get("apiVersion", ""), raw.get("time", ""), paths)
    return entries


def render_managed(entries: dict[EntryKey, ManagerEntry]) -> list[dict]:
    out = []
    for (manager, operation, subresource), entry in entries.items():
        if not entry.paths:
            continue
        raw = {
            "manager": manager,
            "operation": operation,
            "apiVersion": entry.api_version,
            "time": entry.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(entry.paths),
        }
        if subresource:
            raw["subresource"] = subresource
        out.append(raw)
    return out


def tracked_view(obj: dict, subresource: str) -> dict:
    """The part of an object whose fields have owners: status for /status, everything else otherwise."""
    if subresource == "status":
        return {"status": obj["status"]} if obj.get("status") is not None else {}
    view = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in NOT_TRACKED_METADATA}
    if metadata:
        view["metadata"] = metadata
    else:
        view.pop("metadata", None)
    return view


def changed_paths(old: dict, new: dict) -> tuple[set[FieldPath], set[FieldPath]]:
    """(fields set or changed in new, fields present in old but gone in new)."""
    old_fields, new_fields = field_set(old), field_set(new)
    changed = {p for p in new_fields if p not in old_fields or get_path(old, p) != get_path(new, p)}
    return changed, old_fields - new_fields


# --------------------------------------------------------------------------------------------------
# Patches


def merge(live: Any, patch: Any, name: Any = None, *, keyed: bool) -> Any:
    """JSON merge patch (RFC 7386); with keyed=True associative lists merge item by item.

    keyed=True serves server-side apply and strategic merge patch. It keeps live order and appends new
    items, like structured-merge-diff. `$patch: delete` in an item removes it (strategic merge patch);
    other `$` directives are ignored. The result shares unchanged subtrees with `live`.
    """
    if isinstance(patch, dict):
        out = dict(live) if isinstance(live, dict) else {}
        if keyed and patch.get("$patch") == "replace":
            return {k: clone(v) for k, v in patch.items() if not k.startswith("$") and v is not None}
        for key, value in patch.items():
            if keyed and key.startswith("$"):
                continue
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(out.get(key), value, key, keyed=keyed)
        return out
    if keyed and isinstance(patch, list) and isinstance(live, list):
        keys = _list_keys(name, [i for i in patch if not (isinstance(i, dict) and i.get("$patch"))] or patch)
        if keys and (not live or _list_keys(name, live) == keys):
            return _merge_keyed(live, patch, keys)
    if isinstance(patch, list) and keyed:
        return [clone(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "delete")]
    return clone(patch)


def _merge_keyed(live: list, patch: list, keys: tuple[str, ...]) -> list:
    by_key: dict[tuple, dict] = {}
    deleted: set[tuple] = set()
    for item in patch:
        element = _item_element(item, keys)
        if item.get("$patch") == "delete":
            deleted.add(element)
        else:
            by_key[element] = item
    out = []
    for item in live:
        element = _item_element(item, keys)
        if element in deleted:
            continue
        out.append(merge(item, by_key.pop(element), keyed=True) if element in by_key else item)
    out.extend(merge({}, item, keyed=True) for item in by_key.values())
    return out


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise ValueError(f"invalid JSON pointer {text!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in text[1:].split("/")]


def _pointer_get(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list) and token.isdigit() and int(token) < len(doc):
            doc = doc[int(token)]
        else:
            raise ValueError(f"path /{'/'.join(tokens)} does not exist")
    return doc


def json_patch(doc: dict, operations: list) -> dict:
    """RFC 6902 on a copy of doc."""
    doc = clone(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ValueError(f"invalid JSON patch operation {op!r}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind in ("move", "copy"):
            value = clone(_pointer_get(doc, _pointer(op["from"])))
            if kind == "move":
                doc = _pointer_remove(doc, _pointer(op["from"]))
            doc = _pointer_add(doc, tokens, value)
        elif kind == "add":
            doc = _pointer_add(doc, tokens, clone(op.get("value")))
        elif kind == "remove":
            doc = _pointer_remove(doc, tokens)
        elif kind == "replace":
            doc = _pointer_add(_pointer_remove(doc, tokens), tokens, clone(op.get("value")))
        elif kind == "test":
            if _pointer_get(doc, tokens) != op.get("value"):
                raise ValueError(f"test operation failed at {op['path']}")
        else:
            raise ValueError(f"unknown JSON patch operation {kind!r}")
    return doc


def _pointer_add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _pointer_get(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise ValueError(f"index {last} out of range")
        parent.insert(index, value)
    else:
        raise ValueError(f"cannot add at /{'/'.join(tokens)}")
    return doc


def _pointer_remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise ValueError("cannot remove the whole document")
    parent = _pointer_get(doc, tokens[:-1])
    _pointer_get(parent, tokens[-1:])  # raises when missing
    if isinstance(parent, dict):
        del parent[tokens[-1]]
    else:
        del parent[int(tokens[-1])]
    return doc


# --------------------------------------------------------------------------------------------------
# Defaulting (the real server's defaulting functions, for the fields reconcilers most often trip over)


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        probe.setdefault(key, value)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("scheme", "HTTP")


def _default_container(container: dict) -> None:
    image = str(container.get("image", ""))
    last = image.rsplit("/", 1)[-1]
    latest = "@" not in image and (":" not in last or last.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in container.get("env") or []:
        field_ref = (env.get("valueFrom") or {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(container.get(probe))


def default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                _default_container(container)
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(volume, dict) and isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 420)


def _default_template(spec: dict) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        if isinstance(template.get("spec"), dict):
            default_pod_spec(template["spec"])


def _qos_class(pod: dict) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        if not ("cpu" in limits and "memory" in limits) or any(
            requests.get(k, v) != v for k, v in limits.items()
        ):
            return "Burstable"
    return "Guaranteed"


def initial_status(rt: ResourceType, obj: dict) -> dict | None:
    """What a freshly created object's status looks like (required fields included, so typed clients parse it)."""
    if rt.kind == "Pod":
        return {"phase": "Pending", "qosClass": _qos_class(obj)}
    if rt.kind == "PersistentVolumeClaim":
        return {"phase": "Pending"}
    if rt.kind == "Namespace":
        return {"phase": "Active"}
    if rt.kind == "StatefulSet":
        return {"replicas": 0, "availableReplicas": 0}
    if rt.kind == "Service":
        return {"loadBalancer": {}}
    if rt.kind in ("Deployment", "Job", "Node"):
        return {}
    return None


# --------------------------------------------------------------------------------------------------
# Validation (a subset: names, labels, pod templates, selectors, immutable fields)

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS_1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
STS_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)
STS_FORBIDDEN = (
    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', "
    "'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
)


def _check_name(
    causes: list[dict], path: str, name: Any, pattern: re.Pattern, message: str, limit: int
) -> None:
    if not name:
        causes.append(cause("FieldValueRequired", path, "name or generateName is required"))
    elif not isinstance(name, str) or len(name) > limit or not pattern.match(name):
        too_long = f"must be no more than {limit} characters"
        causes.append(cause("FieldValueInvalid", path, too_long if len(str(name)) > limit else message, name))


def _check_labels(causes: list[dict], path: str, labels: Any) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        causes.append(cause("FieldValueInvalid", path, "must be a map of strings", labels))
        return
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not DNS_SUBDOMAIN.match(prefix)) or len(name) > 63 or not LABEL_NAME.match(name):
            causes.append(
                cause(
                    "FieldValueInvalid",
                    path,
                    "name part must consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character",
                    key,
                )
            )
        if not isinstance(value, str) or len(value) > 63 or (value and not LABEL_NAME.match(value)):
            detail = (
                "must be no more than 63 characters"
                if isinstance(value, str) and len(value) > 63
                else LABEL_VALUE_MSG
            )
            causes.append(cause("FieldValueInvalid", path, detail, value))


def _check_pod_spec(causes: list[dict], path: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        causes.append(cause("FieldValueRequired", path, ""))
        return
    containers = spec.get("containers")
    if not containers:
        causes.append(cause("FieldValueRequired", f"{path}.containers", ""))
    seen: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(key) or []):
            where = f"{path}.{key}[{i}]"
            if not isinstance(container, dict):
                causes.append(cause("FieldValueInvalid", where, "must be an object", container))
                continue
            name = container.get("name")
            if not name:
                causes.append(cause("FieldValueRequired", f"{where}.name", ""))
            elif not DNS_LABEL.match(str(name)) or len(str(name)) > 63:
                causes.append(cause("FieldValueInvalid", f"{where}.name", LABEL_MSG, name))
            elif name in seen:
                causes.append(
                    {
                        "reason": "FieldValueDuplicate",
                        "message": f"Duplicate value: {json.dumps(name)}",
                        "field": f"{where}.name",
                    }
                )
            seen.add(str(name))
            if not container.get("image"):
                causes.append(cause("FieldValueRequired", f"{where}.image", ""))
            for j, port in enumerate(container.get("ports") or []):
                number = port.get("containerPort") if isinstance(port, dict) else None
                if not isinstance(number, int) or not 0 < number < 65536:
                    causes.append(
                        cause(
                            "FieldValueInvalid",
                            f"{where}.ports[{j}].containerPort",
                            "must be between 1 and 65535, inclusive",
                            number,
                        )
                    )


def _check_template(causes: list[dict], rt: ResourceType, spec: dict) -> None:
    template = spec.get("template")
    if not isinstance(template, dict):
        causes.append(cause("FieldValueRequired", "spec.template", ""))
        return
    labels = (template.get("metadata") or {}).get("labels") or {}
    _check_labels(causes, "spec.template.metadata.labels", labels)
    _check_pod_spec(causes, "spec.template.spec", template.get("spec"))
    selector = spec.get("selector")
    if not selector:
        causes.append(cause("FieldValueRequired", "spec.selector", ""))
    elif not selector_matches(selector, labels):
        causes.append(
            cause(
                "FieldValueInvalid",
                "spec.template.metadata.labels",
                "`selector` does not match template `labels`",
                labels,
            )
        )
    restart = (template.get("spec") or {}).get("restartPolicy")
    if rt.kind == "Job" and restart not in ("OnFailure", "Never"):
        causes.append(
            cause(
                "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                'supported values: "OnFailure", "Never"',
                restart,
            )
        )
    if rt.kind in ("StatefulSet", "Deployment") and restart != "Always":
        causes.append(
            cause(
                "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                'supported values: "Always"',
                restart,
            )
        )


def validate(rt: ResourceType, obj: dict, old: dict | None) -> list[dict]:
    causes: list[dict] = []
    metadata = obj.get("metadata") or {}
    if rt.kind == "Namespace":
        _check_name(causes, "metadata.name", metadata.get("name"), DNS_LABEL, LABEL_MSG, 63)
    elif rt.kind == "Service":
        _check_name(causes, "metadata.name", metadata.get("name"), DNS_1035, DNS_1035_MSG, 63)
    else:
        _check_name(causes, "metadata.name", metadata.get("name"), DNS_SUBDOMAIN, SUBDOMAIN_MSG, 253)
    if rt.namespaced:
        _check_name(causes, "metadata.namespace", metadata.get("namespace"), DNS_LABEL, LABEL_MSG, 63)
    _check_labels(causes, "metadata.labels", metadata.get("labels"))
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if rt.kind in ("StatefulSet", "Deployment", "Job"):
        _check_template(causes, rt, spec)
    elif rt.kind == "Pod":
        _check_pod_spec(causes, "spec", obj.get("spec"))
    elif rt.kind == "Service":
        ports = spec.get("ports") or []
        if not ports and spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
            causes.append(cause("FieldValueRequired", "spec.ports", ""))
        for i, port in enumerate(ports):
            number = port.get("port") if isinstance(port, dict) else None
            if not isinstance(number, int) or not 0 < number < 65536:
                causes.append(
                    cause(
                        "FieldValueInvalid",
                        f"spec.ports[{i}].port",
                        "must be between 1 and 65535, inclusive",
                        number,
                    )
                )
    elif rt.kind in ("ConfigMap", "Secret"):
        size = 0
        for section in ("data", "binaryData"):
            for key, value in (obj.get(section) or {}).items():
                if not CONFIG_KEY.match(key) or len(key) > 253:
                    causes.append(
                        cause(
                            "FieldValueInvalid",
                            f"{section}[{key}]",
                            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                            key,
                        )
                    )
                size += len(str(value))
        if size > 1024 * 1024:
            causes.append(cause("FieldValueTooLong", "data", "must have at most 1048576 bytes"))
    if old is not None:
        causes += _immutable(rt, obj, old)
    return causes


def _immutable(rt: ResourceType, obj: dict, old: dict) -> list[dict]:
    spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
    causes = []

    def frozen(*keys: str) -> None:
        for key in keys:
            if spec.get(key) != old_spec.get(key):
                causes.append(cause("FieldValueInvalid", f"spec.{key}", "field is immutable", spec.get(key)))

    if rt.kind == "StatefulSet":
        if {k: v for k, v in spec.items() if k not in STS_MUTABLE} != {
            k: v for k, v in old_spec.items() if k not in STS_MUTABLE
        }:
            causes.append(cause("FieldValueForbidden", "spec", STS_FORBIDDEN))
    elif rt.kind == "Deployment":
        frozen("selector")
    elif rt.kind == "Job":
        frozen("selector", "template", "completions", "completionMode")
    elif rt.kind == "Service":
        frozen("clusterIP")
    elif rt.kind == "PersistentVolumeClaim":
        strip = lambda s: {k: v for k, v in s.items() if k not in ("resources", "volumeAttributesClassName")}  # noqa: E731
        if strip(spec) != strip(old_spec):
            causes.append(
                cause(
                    "FieldValueForbidden",
                    "spec",
                    "spec is immutable after creation except "
                    "resources.requests and volumeAttributesClassName for bound claims",
                )
            )
    elif rt.kind == "Pod":

        def mutable_view(s: dict) -> dict:
            view = {k: v for k, v in s.items() if k not in ("activeDeadlineSeconds", "tolerations")}
            for key in ("containers", "initContainers"):
                view[key] = [{k: v for k, v in c.items() if k != "image"} for c in s.get(key) or []]
            return view

        if mutable_view(spec) != mutable_view(old_spec):
            causes.append(
                cause(
                    "FieldValueForbidden",
                    "spec",
                    "pod updates may not change fields other than "
                    "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing "
                    "tolerations)",
                )
            )
    elif (old.get("immutable") and rt.kind in ("ConfigMap", "Secret")) and any(
        obj.get(k) != old.get(k) for k in ("data", "binaryData", "immutable")
    ):
        causes.append(cause("FieldValueForbidden", "data", "field is immutable when `immutable` is set"))
    return causes


# --------------------------------------------------------------------------------------------------
# Requests as recorded for tests


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any  # parsed JSON/YAML, or None
    status: int
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All" or (
            isinstance(self.body, dict)
            and self.body.get("kind") == "DeleteOptions"
            and bool(self.body.get("dryRun"))
        )


@dataclass
class _Fault:
    remaining: int
    status: int
    methods: frozenset[str] | None
    path_contains: str | None
    retry_after: int | None


@dataclass
class _Response:
    code: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(code: int, obj: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(code, json.dumps(obj, separators=(",", ":")).encode(), headers=headers or {})


def clone(value: Any) -> Any:
    """A deep copy of JSON data (everything stored is JSON data; this is faster than copy.deepcopy)."""
    return json.loads(json.dumps(value))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Key = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects


# --------------------------------------------------------------------------------------------------
# The server


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    api: KubeAPIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (its timeout, a dropped pool connection) is normal, not an error."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's urllib3 pool expects
    disable_nagle_algorithm = True  # small JSON answers must not wait for delayed ACKs
    server_version = "kube-api-double"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.api._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.api._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        self.server.api._serve_http(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class KubeAPIServer:
    """See the module docstring. Start it, point a client at `client_config()`, then inspect state."""

    def __init__(self, token: str = TOKEN, resources: tuple[ResourceType, ...] = BUILTIN_RESOURCES):
        self.token = token
        self._types: list[ResourceType] = []
        self._lock = threading.RLock()
        self._objects: dict[ResourceType, dict[Key, dict]] = {}
        self._list_json: dict[tuple[ResourceType, Key], bytes] = {}  # cache: list items are serialized once
        self._by_uid: dict[str, tuple[ResourceType, Key]] = {}
        self._dependents: dict[str, set[tuple[ResourceType, Key]]] = {}
        self._rv = 0
        self._next_ip = 10
        self._requests: list[RecordedRequest] = []
        self._writes = 0
        self._faults: list[_Fault] = []
        self._pod_logs: dict[tuple[str, str, str], str] = {}  # (namespace, pod, container) -> text
        self._backends: dict[tuple[str, str], str] = {}  # (namespace, service) -> "host:port" of its pods
        self._latency: tuple[float, str | None] = (0.0, None)
        self._available = True
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        for rt in resources:
            self.add_resource(rt)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> str:
        self._stopping.clear()
        self._listen(0)
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        self._close_listener()
        self._drop_connections()

    def __enter__(self) -> KubeAPIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def client_config(self, token: str | None = None) -> Any:
        """A kubernetes.client.Configuration for this server (bearer token auth, as in a cluster)."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        config.api_key = {"authorization": self.token if token is None else token}
        config.api_key_prefix = {"authorization": "Bearer"}
        return config

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig file for code that loads one (kubernetes.config.load_kube_config)."""
        path = Path(path)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "double", "user": {"token": self.token}}],
            "contexts": [
                {"name": "double", "context": {"cluster": "double", "user": "double", "namespace": namespace}}
            ],
            "current-context": "double",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def add_resource(self, rt: ResourceType) -> None:
        """Serve another resource type (e.g. a CRD's kind); it appears in discovery too."""
        with self._lock:
            self._types.append(rt)
            self._objects.setdefault(rt, {})

    def _listen(self, port: int) -> None:
        httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        httpd.api = self
        self._httpd, self._port = httpd, httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="kube-api-double", daemon=True
        )
        self._thread.start()

    def _close_listener(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _track_connection(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _drop_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    # -- faults -------------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        methods: list[str] | tuple[str, ...] | set[str] | None = None,
        path_contains: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `count` matching requests with a Status of this code instead of serving them."""
        with self._lock:
            wanted = frozenset(m.upper() for m in methods) if methods else None
            self._faults.append(_Fault(count, status, wanted, path_contains, retry_after))

    def set_latency(self, seconds: float, path_contains: str | None = None) -> None:
        """Delay every matching answer (0 turns it off); other requests are served meanwhile."""
        self._latency = (seconds, path_contains)

    def set_available(self, available: bool) -> None:
        """False: close the listening socket (connections are refused) and drop open connections."""
        if available == self._available:
            return
        self._available = available
        if available:
            self._listen(self._port)
        else:
            self._close_listener()
            self._drop_connections()

    # -- test helpers: direct state access ----------------------------------------------------------

    def resource_type(self, api_version: str, kind: str) -> ResourceType:
        for rt in self._types:
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        raise KeyError(f"{api_version} {kind} is not served")

    def get_object(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        rt = self.resource_type(api_version, kind)
        with self._lock:
            obj = self._objects[rt].get(self._key(rt, namespace, name))
            return clone(obj) if obj is not None else None

    def objects(self, kind: str | None = None) -> list[dict]:
        with self._lock:
            return [
                clone(obj)
                for rt in self._types
                if kind is None or rt.kind == kind
                for _, obj in sorted(self._objects[rt].items())
            ]

    def put_object(self, obj: dict) -> dict:
        """Insert or replace an object as given (status and managedFields kept, no defaults or validation)."""
        rt = self.resource_type(obj["apiVersion"], obj["kind"])
        new = clone(obj)
        md = new.setdefault("metadata", {})
        if not rt.namespaced:
            md.pop("namespace", None)
        elif not md.get("namespace"):
            md["namespace"] = "default"
        with self._lock:
            old = self._objects[rt].get(self._key(rt, md.get("namespace"), md["name"]))
            self._bookkeep(rt, old, new)
            md.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
            md.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old else _now())
            self._store(rt, new)
            return clone(new)

    def set_status(self, api_version: str, kind: str, namespace: str | None, name: str, status: dict) -> dict:
        """Replace an object's status, as a controller would (bumps resourceVersion)."""
        rt = self.resource_type(api_version, kind)
        with self._lock:
            old = self._objects[rt].get(self._key(rt, namespace, name))
            if old is None:
                raise KeyError(f"{kind} {namespace}/{name} does not exist")
            new = {**clone(old), "status": clone(status)}
            if new != old:
                self._bump(new)
                self._store(rt, new)
            return clone(new)

    def delete_object(
        self, api_version: str, kind: str, namespace: str | None, name: str, propagation: str = "Background"
    ) -> bool:
        rt = self.resource_type(api_version, kind)
        with self._lock:
            key = self._key(rt, namespace, name)
            if key not in self._objects[rt]:
                return False
            self._delete_tree(rt, key, propagation)
            return True

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests answered so far (thread-safe copy)."""
        with self._lock:
            return list(self._requests)

    def write_count(self) -> int:
        """Successful, non-dry-run POST/PUT/PATCH/DELETE requests since the last reset_requests()."""
        with self._lock:
            return self._writes

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._writes = 0

    @property
    def resource_version(self) -> int:
        return self._rv

    # -- test helpers: a minimal StatefulSet and Job controller ---------------------------------------

    def reconcile_workloads(self) -> None:
        """Act once as the StatefulSet and Job controllers.

        Creates missing pods (and PVCs from volumeClaimTemplates), deletes surplus ones, recreates pods whose
        template changed (all at once, not one by one as the real rolling update does), and refreshes the
        workloads' status from the pods' phases and Ready conditions. Set pod states with set_pod_phase().
        """
        with self._lock:
            for rt in [t for t in self._types if t.kind == "StatefulSet"]:
                for obj in list(self._objects[rt].values()):
                    self._reconcile_statefulset(obj)
            for rt in [t for t in self._types if t.kind == "Job"]:
                for obj in list(self._objects[rt].values()):
                    self._reconcile_job(obj)

    def set_pod_phase(self, namespace: str, name: str, phase: str, ready: bool | None = None) -> dict:
        """Set a pod's phase and Ready condition (ready defaults to phase == "Running")."""
        ready = phase == "Running" if ready is None else ready
        pod = self.get_object("v1", "Pod", namespace, name)
        if pod is None:
            raise KeyError(f"pod {namespace}/{name} does not exist")
        status = dict(pod.get("status") or {})
        status["phase"] = phase
        status.setdefault("startTime", _now())
        status["conditions"] = [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": _now()}
        ]
        status["podIP"] = status.get("podIP") or f"10.244.0.{random.randint(2, 250)}"
        return self.set_status("v1", "Pod", namespace, name, status)

    def _owned_pods(self, owner: dict) -> list[dict]:
        uid = owner["metadata"]["uid"]
        pods = self.resource_type("v1", "Pod")
        return [self._objects[rt][key] for rt, key in self._dependents.get(uid, ()) if rt == pods]

    def _create_internal(self, rt: ResourceType, obj: dict) -> dict:
        return self._commit(
            rt,
            None,
            obj,
            manager="kube-controller-manager",
            operation="Update",
            subresource="",
            dry_run=False,
        )

    def _pod_from_template(self, owner: dict, owner_kind: str, api_version: str, name: str) -> dict:
        template = clone(owner["spec"]["template"])
        metadata = template.get("metadata") or {}
        metadata.update(
            name=name,
            namespace=owner["metadata"]["namespace"],
            ownerReferences=[
                {
                    "apiVersion": api_version,
                    "kind": owner_kind,
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        )
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec") or {}}

    def _reconcile_statefulset(self, sts: dict) -> None:
        pods_rt, pvc_rt = self.resource_type("v1", "Pod"), self.resource_type("v1", "PersistentVolumeClaim")
        name, ns, spec = sts["metadata"]["name"], sts["metadata"]["namespace"], sts["spec"]
        revision = f"{name}-{zlib.crc32(json.dumps(spec['template'], sort_keys=True).encode()):x}"
        replicas = spec.get("replicas", 1)
        start = (spec.get("ordinals") or {}).get("start", 0)
        wanted = {f"{name}-{i}": i for i in range(start, start + replicas)}
        for pod in self._owned_pods(sts):
            labels = pod["metadata"].get("labels") or {}
            pod_name = pod["metadata"]["name"]
            if pod_name not in wanted or labels.get("controller-revision-hash") != revision:
                self._delete_tree(pods_rt, (ns, pod_name), "Background")
        for pod_name, index in wanted.items():
            if (ns, pod_name) in self._objects[pods_rt]:
                continue
            pod = self._pod_from_template(sts, "StatefulSet", "apps/v1", pod_name)
            pod["metadata"].setdefault("labels", {}).update(
                {
                    "apps.kubernetes.io/pod-index": str(index),
                    "statefulset.kubernetes.io/pod-name": pod_name,
                    "controller-revision-hash": revision,
                }
            )
            pod["spec"]["hostname"] = pod_name
            if spec.get("serviceName"):
                pod["spec"]["subdomain"] = spec["serviceName"]
            for claim in spec.get("volumeClaimTemplates") or []:
                claim_name = f"{claim['metadata']['name']}-{pod_name}"
                if (ns, claim_name) not in self._objects[pvc_rt]:
                    labels = dict(spec["selector"].get("matchLabels") or {})
                    self._create_internal(
                        pvc_rt,
                        {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "metadata": {"name": claim_name, "namespace": ns, "labels": labels},
                            "spec": clone(claim.get("spec") or {}),
                        },
                    )
                volumes = pod["spec"].setdefault("volumes", [])
                if not any(v.get("name") == claim["metadata"]["name"] for v in volumes):
                    volumes.append(
                        {
                            "name": claim["metadata"]["name"],
                            "persistentVolumeClaim": {"claimName": claim_name},
                        }
                    )
            self._create_internal(pods_rt, pod)
        pods = self._owned_pods(sts)
        ready = sum(1 for p in pods if _pod_ready(p))
        status = {
            "observedGeneration": sts["metadata"].get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": len(pods),
            "updatedReplicas": len(pods),
            "currentRevision": revision,
            "updateRevision": revision,
            "collisionCount": 0,
        }
        self.set_status("apps/v1", "StatefulSet", ns, name, status)

    def _reconcile_job(self, job: dict) -> None:
        pods_rt = self.resource_type("v1", "Pod")
        name, ns, spec = job["metadata"]["name"], job["metadata"]["namespace"], job["spec"]
        status = dict(job.get("status") or {})
        if any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        ):
            return
        completions, parallelism = spec.get("completions", 1), spec.get("parallelism", 1)
        pods = self._owned_pods(job)
        succeeded = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
        active = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        now = _now()
        status.setdefault("startTime", now)
        conditions = []
        if succeeded >= completions:
            conditions = [
                {
                    "type": "SuccessCriteriaMet",
                    "status": "True",
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                },
                {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
            ]
            status["completionTime"] = now
        elif failed > spec.get("backoffLimit", 6):
            conditions = [
                {
                    "type": "FailureTarget",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                },
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                },
            ]
        elif not spec.get("suspend"):
            missing = min(parallelism, completions - succeeded) - len(active)
            used = {
                (p["metadata"].get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
                for p in pods
                if (p.get("status") or {}).get("phase") != "Failed"
            }
            for _ in range(max(0, missing)):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                if spec.get("completionMode") == "Indexed":
                    index = next(str(i) for i in range(completions) if str(i) not in used)
                    used.add(index)
                    pod = self._pod_from_template(job, "Job", "batch/v1", f"{name}-{index}-{suffix}")
                    pod["metadata"].setdefault("annotations", {})[
                        "batch.kubernetes.io/job-completion-index"
                    ] = index
                    pod["metadata"].setdefault("labels", {})["batch.kubernetes.io/job-completion-index"] = (
                        index
                    )
                    pod["spec"]["hostname"] = f"{name}-{index}"
                else:
                    pod = self._pod_from_template(job, "Job", "batch/v1", f"{name}-{suffix}")
                active.append(self._create_internal(pods_rt, pod))
        status.update(
            active=len(active) if not conditions else 0,
            succeeded=succeeded,
            failed=failed,
            ready=sum(1 for p in active if _pod_ready(p)),
            terminating=0,
        )
        if conditions:
            status["conditions"] = conditions
        status = {k: v for k, v in status.items() if v != 0 or k == "ready"}
        self.set_status("batch/v1", "Job", ns, name, status)

    # -- HTTP ---------------------------------------------------------------------------------------

    def _serve_http(self, handler: _Handler) -> None:
        if not self._available or self._stopping.is_set():
            handler.close_connection = True  # drop it unanswered, like a server that went away
            return
        raw = self._read_body(handler)
        parts = urlsplit(handler.path)
        path, query = parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip() or None
        seconds, where = self._latency
        if seconds and (where is None or where in handler.path):
            self._stopping.wait(seconds)
        body: Any = None
        proxied = _PROXY.match(path)
        try:
            if proxied:  # the body is the backend's business, not JSON to parse
                response = self._fault(handler.command, handler.path) or self._proxy(
                    handler, proxied, parts.query, raw
                )
            else:
                body = self._parse_body(raw, content_type)
                response = self._fault(handler.command, handler.path) or self._route(
                    handler, path, query, content_type, body
                )
        except ApiError as error:
            response = _json_response(error.code, error.status(), error.headers)
        except Exception as error:  # a bug in the double must still answer like a server
            response = _json_response(
                500, ApiError(500, f"internal error in the test double: {error!r}").status()
            )
        self._record(handler, path, query, content_type, body, response.code)
        try:
            handler.send_response(response.code)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            handler.send_header("Audit-Id", str(uuid.uuid4()))
            handler.send_header("Cache-Control", "no-cache, private")
            for key, value in response.headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(response.body)
        except OSError:
            handler.close_connection = True  # the client gave up (e.g. its timeout fired)

    @staticmethod
    def _read_body(handler: _Handler) -> bytes:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    handler.rfile.readline()
                    return b"".join(chunks)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    @staticmethod
    def _parse_body(raw: bytes, content_type: str | None) -> Any:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            pass
        if content_type and "yaml" in content_type:
            try:
                # As in the real server, YAML becomes JSON: timestamps and the like turn into strings.
                return json.loads(json.dumps(yaml.safe_load(raw), default=str))
            except yaml.YAMLError as error:
                raise ApiError(400, f"error decoding YAML: {error}") from None
        raise ApiError(400, "the body of the request could not be decoded as JSON")

    def _fault(self, method: str, path: str) -> _Response | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining <= 0:
                    continue
                if fault.methods is not None and method not in fault.methods:
                    continue
                if fault.path_contains is not None and fault.path_contains not in path:
                    continue
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                error = ApiError(fault.status, f"injected failure ({fault.status}) for {method} {path}")
                if fault.retry_after is not None:
                    error.details = {"retryAfterSeconds": fault.retry_after}
                return _json_response(fault.status, error.status(), headers)
        return None

    def _record(
        self, handler: _Handler, path: str, query: dict, content_type: str | None, body: Any, code: int
    ) -> None:
        entry = RecordedRequest(
            handler.command, path, query, content_type, body, code, dict(handler.headers.items())
        )
        with self._lock:
            self._requests.append(entry)
            if (
                handler.command in ("POST", "PUT", "PATCH", "DELETE")
                and 200 <= code < 300
                and not entry.dry_run
            ):
                self._writes += 1

    # -- routing ------------------------------------------------------------------------------------

    def _route(
        self, handler: _Handler, path: str, query: dict, content_type: str | None, body: Any
    ) -> _Response:
        method = handler.command
        if path in ("/healthz", "/readyz", "/livez"):  # anonymous in a real cluster too
            return _Response(200, b"ok", "text/plain; charset=utf-8")
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized")
        segments = [s for s in path.split("/") if s]
        if path.rstrip("/") == "/version":
            return _json_response(200, SERVER_VERSION)
        if not segments or segments[0] not in ("api", "apis"):
            raise ApiError(404, "the server could not find the requested resource", {})
        if method != "GET" and len(segments) <= (2 if segments[0] == "api" else 3):
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if segments[0] == "api":
            if len(segments) == 1:
                return _json_response(
                    200,
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self._port}"}
                        ],
                    },
                )
            group, version, rest = "", segments[1], segments[2:]
        else:
            if len(segments) == 1:
                return _json_response(200, self._group_list())
            group = segments[1]
            if len(segments) == 2:
                found = [g for g in self._group_list()["groups"] if g["name"] == group]
                if not found:
                    raise ApiError(404, "the server could not find the requested resource", {})
                return _json_response(200, {"kind": "APIGroup", "apiVersion": "v1", **found[0]})
            version, rest = segments[2], segments[3:]
        types = {rt.plural: rt for rt in self._types if rt.group == group and rt.version == version}
        if not types:
            raise ApiError(404, "the server could not find the requested resource", {})
        if not rest:
            return _json_response(200, self._resource_list(group, version, list(types.values())))
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] in types and types[rest[2]].namespaced:
            namespace, rest = rest[1], rest[2:]
        rt = types.get(rest[0])
        if rt is None or len(rest) > 3 or (rt.namespaced is False and namespace is not None):
            raise ApiError(404, "the server could not find the requested resource", {})
        if rt.namespaced and namespace is None and len(rest) > 1:
            raise ApiError(404, "the server could not find the requested resource", {})
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else ""
        if subresource == "log" and rt.plural == "pods" and method == "GET" and name:
            return self._pod_log(namespace, name, query)
        if subresource and (subresource != "status" or not rt.status):
            raise ApiError(404, "the server could not find the requested resource", {})
        if query.get("watch") in ("true", "1"):
            raise ApiError(400, "watch is not supported by this test double")
        dry_run = query.get("dryRun")
        if dry_run not in (None, "All"):
            raise ApiError(400, f'Invalid dry run value: {dry_run!r}: supported values: "All"')
        manager = query.get("fieldManager") or self._default_manager(handler)
        with self._lock:
            if name is None:
                if method == "GET":
                    return self._list(rt, namespace, query)
                if method == "POST" and (namespace is not None or not rt.namespaced):
                    return _json_response(201, self._create(rt, namespace, body, manager, dry_run == "All"))
                if method == "DELETE":
                    return self._delete_collection(rt, namespace, query, body)
            elif method == "GET":
                obj = self._objects[rt].get(self._key(rt, namespace, name))
                if obj is None:
                    raise not_found(rt, name)
                return _json_response(200, obj)
            elif method == "PUT":
                return _json_response(
                    200, self._replace(rt, namespace, name, body, manager, subresource, dry_run == "All")
                )
            elif method == "PATCH":
                code, obj = self._patch(rt, namespace, name, body, content_type, query, manager, subresource)
                return _json_response(code, obj)
            elif method == "DELETE" and not subresource:
                return self._delete(rt, namespace, name, query, body)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    def set_service_backend(self, namespace: str, name: str, address: str) -> None:
        """Where the pods behind Service `namespace/name` listen ("127.0.0.1:PORT"), for its proxy."""
        with self._lock:
            self._backends[(namespace, name)] = address

    def _proxy(self, handler: _Handler, match: re.Match, query: str, raw: bytes) -> _Response:
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            raise ApiError(401, "Unauthorized")
        namespace, ref, rest = match["namespace"], match["service"], match["rest"] or "/"
        parts = ref.split(":")
        name = parts[1] if len(parts) == 3 else parts[0]  # [scheme:]name[:port]
        services = self.resource_type("v1", "Service")
        with self._lock:
            svc = self._objects[services].get(self._key(services, namespace, name))
            if svc is None:
                raise not_found(services, name)
            selector = (svc.get("spec") or {}).get("selector") or {}
            pods = self._objects[self.resource_type("v1", "Pod")].values()
            ready = [
                p
                for p in pods
                if p["metadata"].get("namespace") == namespace
                and selector
                and selector_matches({"matchLabels": selector}, p["metadata"].get("labels") or {})
                and _pod_ready(p)
            ]
            backend = self._backends.get((namespace, name))
        if not ready or backend is None:
            raise ApiError(503, f'no endpoints available for service "{ref}"', reason="ServiceUnavailable")
        host, _, port = backend.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() in ("content-type", "accept")}
            conn.request(
                handler.command, rest + (f"?{query}" if query else ""), body=raw or None, headers=headers
            )
            answer = conn.getresponse()
            data = answer.read()
            return _Response(
                answer.status, data, answer.getheader("Content-Type") or "application/octet-stream"
            )
        except OSError as error:
            raise ApiError(
                503, f"error trying to reach service: {error}", reason="ServiceUnavailable"
            ) from None
        finally:
            conn.close()

    def _pod_log(self, namespace: str | None, name: str, query: dict) -> _Response:
        """GET pods/<name>/log: what set_pod_log stored (a kubelet holds logs; there is none here)."""
        with self._lock:
            pod = self._objects[self.resource_type("v1", "Pod")].get(
                self._key(self.resource_type("v1", "Pod"), namespace, name)
            )
            if pod is None:
                raise ApiError(404, f'pods "{name}" not found', {"name": name, "kind": "pods"})
            text = self._pod_logs.get((namespace or "", name, query.get("container", "")), "")
        lines = text.splitlines(keepends=True)
        tail = query.get("tailLines")
        if tail and str(tail).isdigit():
            lines = lines[-int(tail) :] if int(tail) else []
        return _Response(200, "".join(lines).encode(), "text/plain")

    def set_pod_log(self, namespace: str, name: str, text: str, container: str = "") -> None:
        """Set the log a GET pods/<name>/log?container=<container> returns."""
        with self._lock:
            self._pod_logs[(namespace, name, container)] = text

    @staticmethod
    def _default_manager(handler: _Handler) -> str:
        """Like the real server: the user agent's product name (`OpenAPI-Generator`), else "unknown"."""
        agent = handler.headers.get("User-Agent") or ""
        return agent.split("/")[0].strip() or "unknown"

    def _group_list(self) -> dict:
        groups: dict[str, list[str]] = {}
        for rt in self._types:
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": name,
                    "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
                    "preferredVersion": {"groupVersion": f"{name}/{versions[0]}", "version": versions[0]},
                }
                for name, versions in groups.items()
            ],
        }

    @staticmethod
    def _resource_list(group: str, version: str, types: list[ResourceType]) -> dict:
        resources = []
        for rt in types:
            verbs = [v for v in ALL_VERBS if rt.kind != "Namespace" or v != "deletecollection"]
            entry = {
                "name": rt.plural,
                "singularName": rt.kind.lower(),
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": verbs,
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            resources.append(entry)
            if rt.status:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # -- verbs --------------------------------------------------------------------------------------

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> Key:
        return (namespace or "" if rt.namespaced else "", name)

    def _list(self, rt: ResourceType, namespace: str | None, query: dict) -> _Response:
        labels = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else None
        fields = parse_field_selector(query["fieldSelector"], rt.kind) if query.get("fieldSelector") else None
        limit = int(query.get("limit") or 0)
        start: list | None = None
        if query.get("continue"):
            try:
                start = json.loads(base64.urlsafe_b64decode(query["continue"]))["start"]
            except (ValueError, KeyError):
                raise ApiError(400, "continue key is not valid") from None
        items: list[bytes] = []
        last_key: list | None = None
        next_key: list | None = None
        store = self._objects[rt]
        for key in sorted(store):
            if namespace is not None and key[0] != namespace:
                continue
            if start is not None and list(key) <= start:
                continue
            obj = store[key]
            if labels and not labels(obj["metadata"].get("labels") or {}):
                continue
            if fields and not fields(obj):
                continue
            if limit and len(items) == limit:
                next_key = last_key
                break
            items.append(self._item_json(rt, key, obj))
            last_key = list(key)
        metadata: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if next_key is not None:
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps({"start": next_key}).encode()).decode()
        head = json.dumps({"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata})
        body = head[:-1].encode() + b',"items":[' + b",".join(items) + b"]}"
        return _Response(200, body)

    def _item_json(self, rt: ResourceType, key: Key, obj: dict) -> bytes:
        """List items carry no kind/apiVersion on a real server; serialize each stored version once."""
        cached = self._list_json.get((rt, key))
        if cached is None:
            item = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
            cached = self._list_json[(rt, key)] = json.dumps(item, separators=(",", ":")).encode()
        return cached

    def _check_type(self, rt: ResourceType, body: Any, required: bool) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, f"the body of the request must be a {rt.kind} object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if required and (not api_version or not kind):
            raise ApiError(400, "apiVersion and kind must be set in an apply configuration")
        if api_version and api_version != rt.api_version:
            raise ApiError(
                400,
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.api_version})",
            )
        if kind and kind != rt.kind:
            raise ApiError(
                400,
                f'{kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"the kind in the data ({kind}) does not match the kind on the URL ({rt.kind})",
            )
        obj = clone(body)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if not isinstance(obj.get("metadata"), dict):
            obj["metadata"] = {}
        return obj

    def _check_identity(self, rt: ResourceType, obj: dict, namespace: str | None, name: str | None) -> None:
        md = obj["metadata"]
        if rt.namespaced:
            if md.get("namespace") and md["namespace"] != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)  # cluster-scoped: the server clears it
        if name is not None:
            if md.get("name", name) != name:
                raise ApiError(
                    400,
                    f"the name of the object ({md.get('name')}) does not match the name on the URL ({name})",
                )
            md["name"] = name

    def _create(
        self, rt: ResourceType, namespace: str | None, body: Any, manager: str, dry_run: bool
    ) -> dict:
        obj = self._check_type(rt, body, required=False)
        self._check_identity(rt, obj, namespace, None)
        md = obj["metadata"]
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if not md.get("name"):
            raise invalid(
                rt, "", [cause("FieldValueRequired", "metadata.name", "name or generateName is required")]
            )
        if self._key(rt, namespace, md["name"]) in self._objects[rt]:
            raise ApiError(
                409,
                f'{rt.qualified} "{md["name"]}" already exists',
                {"name": md["name"], "group": rt.group, "kind": rt.plural},
                "AlreadyExists",
            )
        return self._commit(
            rt, None, obj, manager=manager, operation="Update", subresource="", dry_run=dry_run
        )

    def _replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        manager: str,
        subresource: str,
        dry_run: bool,
    ) -> dict:
        obj = self._check_type(rt, body, required=False)
        self._check_identity(rt, obj, namespace, name)
        old = self._objects[rt].get(self._key(rt, namespace, name))
        if old is None:
            raise not_found(rt, name)
        self._check_precondition(rt, old, obj)
        return self._commit(
            rt, old, obj, manager=manager, operation="Update", subresource=subresource, dry_run=dry_run
        )

    @staticmethod
    def _check_precondition(rt: ResourceType, old: dict, new: dict) -> None:
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            name = old["metadata"]["name"]
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )

    def _patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        content_type: str | None,
        query: dict,
        manager: str,
        subresource: str,
    ) -> tuple[int, dict]:
        if content_type not in PATCH_TYPES:
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(PATCH_TYPES),
            )
        if body is None:
            raise ApiError(400, "the body of the request is empty")
        dry_run = query.get("dryRun") == "All"
        force = query.get("force", "").lower() in ("true", "1")
        old = self._objects[rt].get(self._key(rt, namespace, name))
        if content_type == "application/apply-patch+yaml":
            if not query.get("fieldManager"):
                raise ApiError(
                    422,
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                    "required for apply patch",
                    {
                        "group": "meta.k8s.io",
                        "kind": "PatchOptions",
                        "causes": [
                            cause("FieldValueRequired", "fieldManager", "is required for apply patch")
                        ],
                    },
                )
            applied = self._check_type(rt, body, required=True)
            self._check_identity(rt, applied, namespace, name)
            if old is None and subresource:
                raise not_found(rt, name)
            code = 201 if old is None else 200
            return code, self._apply(rt, old, applied, query["fieldManager"], force, subresource, dry_run)
        if "force" in query:
            raise ApiError(422, "force: Forbidden: may not be specified for non-apply patch")
        if old is None:
            raise not_found(rt, name)
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "the body of a JSON patch must be a list of operations")
            try:
                new = json_patch(old, body)
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise ApiError(
                    422, f"the server rejected our request due to an error in our request: {error}"
                ) from None
        else:
            if not isinstance(body, dict):
                raise ApiError(400, "the body of a merge patch must be a JSON object")
            # Strategic merge patch uses the same code with keyed lists; see merge().
            new = merge(old, body, keyed=content_type == "application/strategic-merge-patch+json")
        new = self._check_type(rt, new, required=False)
        self._check_identity(rt, new, namespace, name)
        self._check_precondition(rt, old, new)
        return 200, self._commit(
            rt, old, new, manager=manager, operation="Update", subresource=subresource, dry_run=dry_run
        )

    def _apply(
        self,
        rt: ResourceType,
        old: dict | None,
        applied: dict,
        manager: str,
        force: bool,
        subresource: str,
        dry_run: bool,
    ) -> dict:
        """Server-side apply: merge, resolve ownership, drop fields this manager no longer applies."""
        if old is not None:
            self._check_precondition(rt, old, applied)
        live = old or {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": dict(applied["metadata"])}
        live_view, applied_view = tracked_view(live, subresource), tracked_view(applied, subresource)
        self._check_duplicates(rt, applied, applied_view)
        applied_set = field_set(applied_view)
        entries = read_managed(old)
        me: EntryKey = (manager, "Apply", subresource)
        conflicts: list[tuple[EntryKey, FieldPath]] = []
        for key, entry in entries.items():
            if key == me:
                continue
            for path in applied_set & entry.paths:
                if isinstance(path[-1], str) and get_path(applied_view, path) != get_path(live_view, path):
                    conflicts.append((key, path))
        if conflicts and not force:
            raise self._conflict_error(rt, applied["metadata"]["name"], conflicts, entries)
        for key, path in conflicts:
            entries[key].paths.discard(path)
        previous = entries[me].paths if me in entries else set()
        others = set().union(*(e.paths for k, e in entries.items() if k != me))
        owned_prefixes = {p[:i] for p in others for i in range(1, len(p) + 1)}
        merged = clone(merge(live_view, applied_view, keyed=True))
        # Shortest first, so a dropped list item goes as a whole; an item's key fields go only with it.
        for path in sorted(previous - applied_set, key=len):
            is_key_field = len(path) > 1 and not isinstance(path[-2], str) and path[-1] in dict(path[-2][1])
            if path not in owned_prefixes and not is_key_field:
                remove_path(merged, path)
        if previous != applied_set or me not in entries:
            entries[me] = ManagerEntry(rt.api_version, _now(), applied_set)
        if subresource == "status":
            new = {**clone(live), "status": merged.get("status")}
        else:
            new = {
                **merged,
                "apiVersion": rt.api_version,
                "kind": rt.kind,
                "metadata": {
                    **merged.get("metadata", {}),
                    **{k: v for k, v in live["metadata"].items() if k in NOT_TRACKED_METADATA},
                },
            }
        return self._commit(
            rt,
            old,
            new,
            manager=manager,
            operation="Apply",
            subresource=subresource,
            dry_run=dry_run,
            entries=entries,
        )

    @staticmethod
    def _check_duplicates(rt: ResourceType, applied: dict, view: dict) -> None:
        def walk(node: Any, name: Any, where: str) -> None:
            if isinstance(node, dict):
                for key, child in node.items():
                    walk(child, key, f"{where}.{key}")
            elif isinstance(node, list):
                keys = _list_keys(name, node)
                seen = set()
                for item in node:
                    if keys:
                        element = _item_element(item, keys)
                        if element in seen:
                            raise ApiError(
                                500,
                                f"failed to create typed patch object ({rt.api_version}, "
                                f"Kind={rt.kind}): {where}: duplicate entries for key "
                                f"{path_string((element,))}",
                            )
                        seen.add(element)
                    walk(item, None, where)

        walk(view, None, "")

    @staticmethod
    def _conflict_error(
        rt: ResourceType,
        name: str,
        conflicts: list[tuple[EntryKey, FieldPath]],
        entries: dict[EntryKey, ManagerEntry],
    ) -> ApiError:
        causes = []
        for key, path in conflicts:
            using = entries[key].api_version
            label = f'conflict with "{key[0]}"' + (f' with subresource "{key[2]}"' if key[2] else "")
            causes.append(
                {
                    "reason": "FieldManagerConflict",
                    "message": f"{label} using {using}",
                    "field": path_string(path),
                }
            )
        if len(causes) == 1:
            text = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
        else:
            text = f"Apply failed with {len(causes)} conflicts: " + "\n".join(
                f"{c['message']}: {c['field']}" for c in causes
            )
        return ApiError(409, text, {"name": name, "group": rt.group, "kind": rt.plural, "causes": causes})

    def _commit(
        self,
        rt: ResourceType,
        old: dict | None,
        new: dict,
        *,
        manager: str,
        operation: str,
        subresource: str,
        dry_run: bool,
        entries: dict[EntryKey, ManagerEntry] | None = None,
    ) -> dict:
        """Finish a write like the real registry: server metadata, status rules, defaults, validation,
        managed fields, generation, then store unless nothing changed or it is a dry run."""
        new = clone(new)
        md = new.setdefault("metadata", {})
        for key in SYSTEM_METADATA:
            md.pop(key, None)
        if old is None:
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = _now()
        else:
            md.update({k: old["metadata"][k] for k in SYSTEM_METADATA if k in old["metadata"]})
        if subresource == "status":
            status = new.get("status")
            new = clone(old) if old is not None else new  # a status write changes nothing else
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            md = new["metadata"]
        else:
            new.pop("status", None)  # normal writes never change status
            status = old.get("status") if old is not None else initial_status(rt, new)
            if status is not None:
                new["status"] = clone(status)
            self._default(rt, new, old)
        causes = validate(rt, new, old)
        if causes:
            raise invalid(rt, md.get("name", ""), causes)
        if entries is None:  # an Update: the manager takes the fields it changed
            entries = read_managed(old)
            before = tracked_view(old, subresource) if old is not None else {}
            changed, removed = changed_paths(before, tracked_view(new, subresource))
            for entry in entries.values():
                entry.paths -= changed | removed
            key: EntryKey = (manager, "Update", subresource)
            if changed:
                entry = entries.pop(key, None) or ManagerEntry(rt.api_version, "", set())
                entries[key] = ManagerEntry(rt.api_version, _now(), entry.paths | changed)
        md["managedFields"] = render_managed(entries)
        if not md["managedFields"]:
            del md["managedFields"]
        if old is not None and new == old:
            return old  # a no-op write: no new resourceVersion, like etcd3's unchanged-object shortcut
        self._bookkeep(rt, old, new)
        if dry_run:
            if old is None:
                md.pop("resourceVersion", None)
            else:
                md["resourceVersion"] = old["metadata"]["resourceVersion"]
            return new
        self._store(rt, new)
        return new

    def _bookkeep(self, rt: ResourceType, old: dict | None, new: dict) -> None:
        """generation (kinds that have it: bumped only when spec-like content changes) and resourceVersion."""
        md = new["metadata"]
        if rt.generation:

            def content(obj: dict) -> dict:
                return {k: v for k, v in obj.items() if k not in ("metadata", "status")}

            if old is None:
                md["generation"] = 1
            else:
                generation = old["metadata"].get("generation", 1)
                md["generation"] = generation + 1 if content(old) != content(new) else generation
        self._bump(new)

    def _bump(self, obj: dict) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def _default(self, rt: ResourceType, obj: dict, old: dict | None) -> None:
        spec = obj.get("spec")
        md = obj["metadata"]
        if rt.kind == "Namespace":
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md.get("name", "")
        if not isinstance(spec, dict):
            if rt.kind == "Secret":
                obj.setdefault("type", "Opaque")
                self._fold_string_data(obj)
            return
        if rt.kind in ("StatefulSet", "Deployment", "Job"):
            _default_template(spec)
        if rt.kind == "Pod":
            default_pod_spec(spec)
            spec.setdefault("enableServiceLinks", True)
            spec.setdefault("serviceAccountName", "default")
        elif rt.kind == "StatefulSet":
            spec.setdefault("replicas", 1)
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault(
                "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
            )
            for claim in spec.get("volumeClaimTemplates") or []:
                if isinstance(claim, dict):
                    claim.setdefault("apiVersion", "v1")
                    claim.setdefault("kind", "PersistentVolumeClaim")
                    claim.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
                    claim.setdefault("status", {"phase": "Pending"})
        elif rt.kind == "Deployment":
            spec.setdefault("replicas", 1)
            spec.setdefault(
                "strategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
            )
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
        elif rt.kind == "Job":
            if "parallelism" not in spec:  # completions defaults only when neither is set
                spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
            if old is None and not spec.get("manualSelector"):
                # The Job registry generates the selector and template labels from the uid at creation.
                uid, name = md["uid"], md.get("name", "")
                spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
                template = spec.setdefault("template", {})
                labels = template.setdefault("metadata", {}).setdefault("labels", {})
                labels.update(
                    {
                        "batch.kubernetes.io/controller-uid": uid,
                        "batch.kubernetes.io/job-name": name,
                        "controller-uid": uid,
                        "job-name": name,
                    }
                )
        elif rt.kind == "Service":
            self._default_service(spec, old)
        elif rt.kind == "PersistentVolumeClaim":
            spec.setdefault("volumeMode", "Filesystem")

    def _default_service(self, spec: dict, old: dict | None) -> None:
        old_spec = (old or {}).get("spec") or {}
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]  # an update that omits it keeps the allocated one
            spec["clusterIPs"] = old_spec.get("clusterIPs", [old_spec["clusterIP"]])
        elif not spec.get("clusterIP") and spec["type"] != "ExternalName":
            self._next_ip += 1
            spec["clusterIP"] = f"10.0.{self._next_ip // 254}.{self._next_ip % 254 + 1}"
        if spec.get("clusterIP"):
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])

    @staticmethod
    def _fold_string_data(secret: dict) -> None:
        string_data = secret.pop("stringData", None)
        if isinstance(string_data, dict):
            data = secret.setdefault("data", {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        for key, value in (secret.get("data") or {}).items():
            try:
                base64.b64decode(str(value), validate=True)
            except ValueError:
                raise ApiError(400, f"illegal base64 data in Secret data[{key}]") from None

    # -- storage and deletion -----------------------------------------------------------------------

    def _store(self, rt: ResourceType, obj: dict) -> None:
        md = obj["metadata"]
        key = self._key(rt, md.get("namespace"), md["name"])
        self._unindex(rt, key)
        self._objects[rt][key] = obj
        self._by_uid[md["uid"]] = (rt, key)
        for ref in md.get("ownerReferences") or []:
            self._dependents.setdefault(ref.get("uid", ""), set()).add((rt, key))

    def _unindex(self, rt: ResourceType, key: Key) -> None:
        old = self._objects[rt].get(key)
        self._list_json.pop((rt, key), None)
        if old is None:
            return
        self._by_uid.pop(old["metadata"]["uid"], None)
        for ref in old["metadata"].get("ownerReferences") or []:
            self._dependents.get(ref.get("uid", ""), set()).discard((rt, key))

    def _drop(self, rt: ResourceType, key: Key) -> dict:
        obj = self._objects[rt][key]
        self._unindex(rt, key)
        del self._objects[rt][key]
        self._rv += 1  # a delete is a write: later lists report a newer resourceVersion
        return obj

    def _delete_tree(self, rt: ResourceType, key: Key, policy: str) -> dict:
        """Delete now; then what the garbage collector would do to dependents (simplified: synchronously)."""
        obj = self._drop(rt, key)
        uid = obj["metadata"]["uid"]
        if rt.kind == "Namespace":
            for other in self._types:
                for child in [k for k in self._objects[other] if other.namespaced and k[0] == key[1]]:
                    if child in self._objects[other]:
                        self._delete_tree(other, child, "Background")
        for dep_rt, dep_key in sorted(self._dependents.pop(uid, set()), key=lambda d: (d[0].plural, d[1])):
            dependent = self._objects[dep_rt].get(dep_key)
            if dependent is None:
                continue
            refs = dependent["metadata"].get("ownerReferences") or []
            remaining = [r for r in refs if r.get("uid") != uid]
            if policy == "Orphan" or any(r.get("uid") in self._by_uid for r in remaining):
                updated = clone(dependent)
                if remaining:
                    updated["metadata"]["ownerReferences"] = remaining
                else:
                    updated["metadata"].pop("ownerReferences", None)
                self._bump(updated)
                self._store(dep_rt, updated)
            else:
                self._delete_tree(dep_rt, dep_key, "Background")
        return obj

    def _delete_options(self, query: dict, body: Any) -> tuple[str | None, bool, dict]:
        options = body if isinstance(body, dict) else {}
        policy = query.get("propagationPolicy") or options.get("propagationPolicy")
        if policy is None and (
            query.get("orphanDependents") == "true" or options.get("orphanDependents") is True
        ):
            policy = "Orphan"
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError(
                422,
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
                f'"{policy}": supported values: "Foreground", "Background", "Orphan", "nil"',
            )
        dry_run = query.get("dryRun") == "All" or bool(options.get("dryRun"))
        return policy, dry_run, options.get("preconditions") or {}

    def _delete(
        self, rt: ResourceType, namespace: str | None, name: str, query: dict, body: Any
    ) -> _Response:
        policy, dry_run, preconditions = self._delete_options(query, body)
        key = self._key(rt, namespace, name)
        obj = self._objects[rt].get(key)
        if obj is None:
            raise not_found(rt, name)
        for field_name in ("uid", "resourceVersion"):
            wanted = preconditions.get(field_name)
            if wanted and wanted != obj["metadata"][field_name]:
                raise ApiError(
                    409,
                    f"Precondition failed: {field_name[0].upper() + field_name[1:]} in precondition: "
                    f"{wanted}, {field_name} in object meta: {obj['metadata'][field_name]}",
                    {"name": name, "group": rt.group, "kind": rt.plural},
                )
        headers = {}
        if policy is None and rt.kind == "Job":
            # batch/v1 Jobs still default to orphaning their pods, and the server says so.
            policy = "Orphan"
            headers["Warning"] = (
                '299 - "child pods are preserved by default when jobs are deleted; set '
                "propagationPolicy=Background to remove them or set propagationPolicy=Orphan to "
                'suppress this warning"'
            )
        if not dry_run:
            self._delete_tree(rt, key, policy or "Background")
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]},
        }
        return _json_response(200, status, headers)

    def _delete_collection(
        self, rt: ResourceType, namespace: str | None, query: dict, body: Any
    ) -> _Response:
        policy, dry_run, _ = self._delete_options(query, body)
        listing = json.loads(self._list(rt, namespace, {k: v for k, v in query.items() if k != "limit"}).body)
        if not dry_run:
            for item in listing["items"]:
                key = self._key(rt, item["metadata"].get("namespace"), item["metadata"]["name"])
                if key in self._objects[rt]:
                    self._delete_tree(rt, key, policy or ("Orphan" if rt.kind == "Job" else "Background"))
        listing["metadata"]["resourceVersion"] = str(self._rv)
        return _json_response(200, listing)


_PROXY = re.compile(
    r"^/api/v1/namespaces/(?P<namespace>[^/]+)/services/(?P<service>[^/]+)/proxy(?P<rest>/.*)?$"
)


def _pod_ready(pod: dict) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )
