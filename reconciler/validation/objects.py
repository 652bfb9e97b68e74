"""Rules for the companion objects (every Kubernetes object in the watched folders but Workspaces).

Each finding sits at the offending key, as for workspaces. An object with an error is not applied
(and, if an earlier revision applied it, keeps that version); every other object and workspace
goes on. Schemas are the Kubernetes OpenAPI schemas that `kubernetes-validate` ships, for the
cluster version the repository's `.kaito-gitops.yaml` names (`kubernetesVersion`).
"""

from __future__ import annotations

import functools
import re

import jsonschema

from .. import kinds
from ..companions import KubeObject, ObjectKey, Reference, key_text, provided_by, references
from ..findings import Finding, Severity
from ..loading import Document
from ..render.inference import headless_name
from ..render.tuning import config_name
from ..workspace import Workspace
from .schema import schema_findings

DEFAULT_KUBERNETES_VERSION = "1.33"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECRET_HELP = (
    "a Secret with its data in git is readable by everyone who can read the repository; commit a "
    "SealedSecret (bitnami.com), an ExternalSecret (external-secrets.io) or a SOPS-encrypted file instead, "
    "or create the Secret in the cluster"
)


def identity_problem(doc: Document) -> Finding | None:
    """An object must say what it is and what it is called before anything else is checked."""
    if not doc.api_version or not doc.kind:
        missing = [
            k for k in ("apiVersion", "kind") if not isinstance(doc.data.get(k), str) or not doc.data[k]
        ]
        return doc.finding((), "object-identity", f"not a Kubernetes object: missing {' and '.join(missing)}")
    md = doc.data.get("metadata")
    if not isinstance(md, dict) or not isinstance(md.get("name"), str) or not md["name"]:
        where = ("metadata",) if isinstance(md, dict) else ()
        return doc.finding(where, "object-identity", f"{doc.kind} has no metadata.name", at_key=bool(where))
    return None


def check_object(obj: KubeObject, policy: kinds.ObjectPolicy, crd_kinds: dict[str, bool]) -> list[Finding]:
    """Kind, allow-list, Secret refusal, namespace and name of one object (not its schema)."""
    doc, name = obj.document, obj.kind_name
    if name == "Secret" and doc.api_version == "v1":
        return [doc.finding(("kind",), "object-secret-in-git", SECRET_HELP)]
    known = obj.info is not None or name in crd_kinds or name in policy.allowed
    if not known:
        every = {k.name for k in kinds.KNOWN} | set(crd_kinds) | set(policy.allowed)
        return [
            doc.finding(
                ("kind",),
                "object-kind-unknown",
                f"unknown kind {name} (apiVersion {obj.api_version}){kinds.suggest(name, every)}; a kind "
                "from a CRD is applied when the repository holds its CustomResourceDefinition or the operator "
                f"allows it with --allow-kind {name}",
            )
        ]
    if name not in policy.allowed and name not in crd_kinds:
        why = (
            "cluster-scoped"
            if obj.info is not None and not obj.info.namespaced
            else ("RBAC" if "rbac" in name else "not on the default list")
        )
        return [
            doc.finding(
                ("kind",),
                "object-kind-not-allowed",
                f"{name} is {why}, so kaito-gitops does not apply it unless the operator runs the daemon "
                f"with --allow-kind {name}",
            )
        ]
    out = []
    if obj.namespace and not policy.manages(obj.namespace):
        where = ("metadata", "namespace") if "namespace" in doc.data["metadata"] else ("metadata",)
        managed = (
            ", ".join(policy.managed_namespaces)
            if policy.managed_namespaces
            else "every namespace but kube-system, kube-public and kube-node-lease"
        )
        out.append(
            doc.finding(
                where,
                "object-namespace-not-managed",
                f"namespace {obj.namespace} is not managed by this daemon (it manages {managed})",
            )
        )
    if not DNS_SUBDOMAIN.match(obj.name) or len(obj.name) > 253:
        out.append(
            doc.finding(
                ("metadata", "name"),
                "object-name",
                f"{obj.name!r} is not a valid Kubernetes name: lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit",
            )
        )
    return out


@functools.lru_cache(maxsize=4)
def _definitions(folder: str, version: str):
    """The shared definitions every kind's schema refers to (several MiB parsed): once per version."""
    from kubernetes_validate import utils
    from referencing import Resource

    return Resource.from_contents(utils.schema_contents(f"{folder}/_definitions.json", version))


@functools.lru_cache(maxsize=256)
def _validator(kind: str, api_version: str, version: str) -> jsonschema.protocols.Validator | None:
    """kubernetes-validate's strict schema for one kind, built once (it rebuilds it on every call)."""
    try:
        from kubernetes_validate import utils
    except ImportError:
        return None
    from referencing import Registry, Resource

    have = [v for v in utils.all_versions() if utils.major_minor(v) <= utils.major_minor(version)]
    if not have:
        return None
    folder = f"kubernetes-json-schema/v{have[-1]}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", version)
    except (FileNotFoundError, utils.VersionNotSupportedError):
        return None
    registry = _definitions(folder, version) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schemas_available() -> bool:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        return False
    return True


def check_schema(obj: KubeObject, version: str) -> list[Finding]:
    """Kubernetes' own schema for built-in kinds; kinds of CRDs are checked by their server."""
    if obj.info is None or obj.info.crd or obj.kind_name == "ConfigMap":  # ConfigMaps: check_schema of ours
        return []
    validator = _validator(obj.kind, obj.api_version, version)
    if validator is None:
        return []
    return schema_findings(obj.document, validator)


def workspace_object_keys(ws: Workspace) -> set[ObjectKey]:
    """What a workspace renders, for telling a companion that would overwrite it."""
    if ws.inference is not None:
        return {("Service", ws.namespace, ws.name), ("Service", ws.namespace, headless_name(ws))}
    return {("ConfigMap", ws.namespace, config_name(ws))}


def conflict(obj: KubeObject, owners: dict[ObjectKey, Workspace]) -> Finding | None:
    ws = owners.get(obj.key)
    if ws is None:
        return None
    return obj.document.finding(
        ("metadata", "name"),
        "object-conflict",
        f"{key_text(obj.key)} is what workspace {ws.namespace}/{ws.name} ({ws.path}) creates; rename one of them",
    )


def duplicate(obj: KubeObject, first: KubeObject) -> Finding:
    line, _ = first.document.positions.value(("metadata", "name"))
    return obj.document.finding(
        ("metadata", "name"),
        "object-duplicate",
        f"{key_text(obj.key)} is also defined in {first.path}:{line}; each object must live in one file",
    )


def missing_references(ws: Workspace, objects: dict[ObjectKey, KubeObject]) -> list[Finding]:
    """Warnings for what the workspace mounts or reads that the repository does not hold: it may
    exist in the cluster (the daemon checks at run time, and waits for it)."""
    out = []
    seen: set[ObjectKey] = set()
    for ref in references(ws):
        if ref.key in seen or provided_by(objects, ref):
            continue
        seen.add(ref.key)
        what = (
            "is not in the repository (rightly: Secrets do not belong in git); create it in the cluster, or "
            "commit a SealedSecret or ExternalSecret for it"
            if ref.kind == "Secret"
            else "is not in the repository; the workspace waits until it exists in the cluster"
        )
        out.append(
            ws.document.finding(
                ref.field, "object-reference-missing", f"{_ref_text(ref)} {what}", Severity.WARNING
            )
        )
    return out


def _ref_text(ref: Reference) -> str:
    return f"{ref.kind} {ref.namespace}/{ref.name}"


def crd_kinds(objects: list[KubeObject]) -> dict[str, bool]:
    """Kinds the repository's own CustomResourceDefinitions define -> namespaced."""
    out = {}
    for o in objects:
        if o.kind_name != "CustomResourceDefinition.apiextensions.k8s.io":
            continue
        spec = o.document.data.get("spec")
        if not isinstance(spec, dict):
            continue
        names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
        kind, group = names.get("kind"), spec.get("group")
        if isinstance(kind, str) and isinstance(group, str):
            out[f"{kind}.{group}"] = spec.get("scope", "Namespaced") != "Cluster"
    return out
