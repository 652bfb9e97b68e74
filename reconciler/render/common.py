"""What every rendered object shares: names, ownership labels, annotations, scheduling."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from .. import __version__
from ..workspace import Workspace

MANAGED_BY = "kaito-gitops"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_WORKSPACE = "kaito.sh/workspace"
LABEL_WORKSPACE_NS = "kaito.sh/workspacenamespace"
LABEL_PREVIEW = "kaito-gitops.io/preview"  # the pull request an eval preview's object belongs to
ANNOTATION_SPEC_HASH = "kaito-gitops.io/spec-hash"
ANNOTATION_SOURCE = "kaito-gitops.io/source"
ANNOTATION_REVISION = "kaito-gitops.io/revision"
ANNOTATION_OBJECT_HASH = "kaito-gitops.io/object-hash"

GPU_RESOURCE = "nvidia.com/gpu"


# the release's own images (a release builds and pushes them under the package's version)
DEFAULT_INFERENCE_IMAGE = f"ghcr.io/kaito-gitops/inference:{__version__}"
DEFAULT_TUNING_IMAGE = f"ghcr.io/kaito-gitops/tuning:{__version__}"


@dataclass(frozen=True)
class RenderSettings:
    """Deployment-wide choices the planner needs; the daemon takes them from its config."""

    inference_image: str = DEFAULT_INFERENCE_IMAGE
    tuning_image: str = DEFAULT_TUNING_IMAGE
    image_pull_secrets: tuple[str, ...] = ()
    revision: str = ""  # git revision the workspace was read at
    # The cluster's GPU nodes are the user's (provisioner "none"), as with Kaito's
    # disableNodeAutoProvisioning: no node pools, pods select nodes by labelSelector only, and
    # instanceType is a sizing hint until the nodes' GPU labels are read.
    byo_nodes: bool = False


def ownership_labels(ws: Workspace) -> dict[str, str]:
    """An InferenceSet's members also carry the set's labels: its Service selects them by those."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_WORKSPACE: ws.name,
        LABEL_WORKSPACE_NS: ws.namespace,
        **ws.set_labels,
    }


def selector_labels(ws: Workspace) -> dict[str, str]:
    return {LABEL_WORKSPACE: ws.name}


def metadata(ws: Workspace, name: str, settings: RenderSettings) -> dict:
    annotations = {ANNOTATION_SPEC_HASH: ws.spec_hash[:16], ANNOTATION_SOURCE: ws.path}
    if settings.revision:
        annotations[ANNOTATION_REVISION] = settings.revision
    return {
        "name": name,
        "namespace": ws.namespace,
        "labels": ownership_labels(ws),
        "annotations": annotations,
    }


# where and when an object was read: not part of what it asks for
VOLATILE_ANNOTATIONS = frozenset({ANNOTATION_REVISION, ANNOTATION_SOURCE, ANNOTATION_SPEC_HASH})
REPLACE_ON_CHANGE = frozenset({"Job"})  # a Job's pod template is immutable: changes replace it


def object_hash(obj: dict) -> str:
    """Digest of what an object asks for, ignoring where and when it was read.

    The revision, source file and workspace spec hash annotations describe the last change
    and are left out: the daemon compares this digest with the live object's annotation to
    skip unchanged objects, so a commit that touches only one field of a workspace (or only
    another workspace) costs no writes to the objects it does not change.
    """
    md = obj.get("metadata", {})
    ann = {
        k: v
        for k, v in (md.get("annotations") or {}).items()
        if k not in VOLATILE_ANNOTATIONS and k != ANNOTATION_OBJECT_HASH
    }
    stripped = {**obj, "metadata": {**md, "annotations": ann}}
    return hashlib.sha256(json.dumps(stripped, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[
        :16
    ]


def stamp(obj: dict) -> dict:
    obj["metadata"].setdefault("annotations", {})[ANNOTATION_OBJECT_HASH] = object_hash(obj)
    return obj


def node_affinity(ws: Workspace, provisioned: bool) -> dict:
    """Pods go only to nodes carrying the user's labels (and, for our pools, the workspace labels)."""
    exprs = [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(ws.resource.match_labels.items())]
    for e in ws.resource.match_expressions:
        if e.get("operator") == "In" and e.get("values"):
            exprs.append({"key": e["key"], "operator": "In", "values": list(e["values"])})
    if provisioned:
        exprs += [
            {"key": LABEL_WORKSPACE, "operator": "In", "values": [ws.name]},
            {"key": LABEL_WORKSPACE_NS, "operator": "In", "values": [ws.namespace]},
        ]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": exprs}]
            }
        }
    }


GPU_TOLERATIONS = [
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
]


def hf_token_env(ws: Workspace) -> list[dict]:
    preset = ws.preset
    if preset is None or not preset.model_access_secret:
        return []
    return [
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": preset.model_access_secret, "key": "HF_TOKEN"}},
        }
    ]


def dns_name(text: str, limit: int = 63) -> str:
    """A DNS-1123 label from free text, hash-suffixed when it had to be shortened."""
    s = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if len(s) <= limit:
        return s
    h = hashlib.sha256(text.encode()).hexdigest()[:6]
    return s[: limit - 7].rstrip("-") + "-" + h
