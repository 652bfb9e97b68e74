"""The other Kubernetes objects in the watched folders: PVCs, ConfigMaps, Secret wrappers, ...

Pure: read from loaded documents, and stamped into the form every target applies (ownership
label, source file, object hash), exactly as a workspace's own objects are. A companion is
not tied to one workspace; the daemon applies all of them before the workspaces, in kind order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from . import kinds
from .loading import Document, Path
from .render.common import ANNOTATION_SOURCE, LABEL_MANAGED_BY, MANAGED_BY, stamp
from .workspace import Workspace

# (kind name as in kinds.py, namespace or "" when cluster-scoped, name)
ObjectKey = tuple[str, str, str]

# Companions carry this label so a target can tell them from a workspace's own objects
LABEL_COMPANION = "kaito-gitops.io/companion"


@dataclass(frozen=True, slots=True)
class KubeObject:
    document: Document
    api_version: str
    kind: str
    name: str
    namespace: str  # "" for a cluster-scoped kind
    info: kinds.KindInfo | None  # None: a kind of a CRD kaito-gitops has no entry for

    @property
    def path(self) -> str:
        return self.document.path

    @property
    def kind_name(self) -> str:
        return kinds.kind_name(self.api_version, self.kind)

    @property
    def key(self) -> ObjectKey:
        return (self.kind_name, self.namespace, self.name)

    @property
    def rank(self) -> int:
        return self.info.rank if self.info else kinds.RANK_WORKLOAD

    @classmethod
    def read(cls, doc: Document, default_namespace: str, namespaced: bool = True) -> KubeObject:
        md = doc.data.get("metadata") if isinstance(doc.data.get("metadata"), dict) else {}
        name = md.get("name") if isinstance(md.get("name"), str) else ""
        ns = md.get("namespace") if isinstance(md.get("namespace"), str) else ""
        info = kinds.lookup(kinds.kind_name(doc.api_version, doc.kind))
        if info is not None:
            namespaced = info.namespaced
        return cls(
            doc, doc.api_version, doc.kind, name, (ns or default_namespace) if namespaced else "", info
        )


def key_text(key: ObjectKey) -> str:
    kind, ns, name = key
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"


def desired_body(obj: KubeObject) -> dict:
    """What a target applies: the object as written, namespaced, owned and hashed."""
    from .planning import plain_copy

    body = plain_copy(obj.document.data)
    body.pop("status", None)
    md = body.setdefault("metadata", {})
    for server_side in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        md.pop(server_side, None)
    if obj.namespace:
        md["namespace"] = obj.namespace
    md["labels"] = {**(md.get("labels") or {}), LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPANION: "true"}
    md["annotations"] = {**(md.get("annotations") or {}), ANNOTATION_SOURCE: obj.path}
    return stamp(body)


@dataclass(frozen=True, slots=True)
class Reference:
    """An object a workspace needs by name (it mounts it, or reads a key from it)."""

    kind: str  # PersistentVolumeClaim | ConfigMap | Secret
    namespace: str
    name: str
    field: Path  # where the workspace names it

    @property
    def key(self) -> ObjectKey:
        return (self.kind, self.namespace, self.name)


# Where a volumeSource names another object: (path inside the volumeSource, kind).
_VOLUME_REFS = (
    (("persistentVolumeClaim", "claimName"), "PersistentVolumeClaim"),
    (("secret", "secretName"), "Secret"),
    (("configMap", "name"), "ConfigMap"),
)


def at_path(data, path: Path):
    for p in path:
        if isinstance(p, int):
            if not isinstance(data, list) or p >= len(data):
                return None
        elif not isinstance(data, dict) or p not in data:
            return None
        data = data[p]
    return data


def _volume_refs(source, at: Path) -> Iterator[tuple[Path, str]]:
    if not isinstance(source, dict):
        return
    for inner, kind in _VOLUME_REFS:
        yield (*at, *inner), kind
    sources = at_path(source, ("projected", "sources"))
    for i in range(len(sources) if isinstance(sources, list) else 0):
        for key, kind in (("secret", "Secret"), ("configMap", "ConfigMap")):
            yield (*at, "projected", "sources", i, key, "name"), kind


def reference_paths(data: dict) -> Iterator[tuple[Path, str]]:
    """Every place a workspace names a Secret, ConfigMap or PVC, with that object's kind."""
    for section in ("inference", "tuning"):
        opts = (section, "preset", "presetOptions")
        pulls = at_path(data, (*opts, "imagePullSecrets"))
        for i in range(len(pulls) if isinstance(pulls, list) else 0):
            yield (*opts, "imagePullSecrets", i), "Secret"
        yield (*opts, "modelAccessSecret"), "Secret"
        yield (section, "config"), "ConfigMap"
    adapters = at_path(data, ("inference", "adapters"))
    for i in range(len(adapters) if isinstance(adapters, list) else 0):
        src = ("inference", "adapters", i, "source")
        pulls = at_path(data, (*src, "imagePullSecrets"))
        for j in range(len(pulls) if isinstance(pulls, list) else 0):
            yield (*src, "imagePullSecrets", j), "Secret"
        yield from _volume_refs(at_path(data, (*src, "volumeSource")), (*src, "volumeSource"))
    pulls = at_path(data, ("tuning", "input", "imagePullSecrets"))
    for i in range(len(pulls) if isinstance(pulls, list) else 0):
        yield ("tuning", "input", "imagePullSecrets", i), "Secret"
    yield ("tuning", "output", "imagePushSecret"), "Secret"
    for part in ("input", "output"):
        at = ("tuning", part, "volumeSource")
        yield from _volume_refs(at_path(data, at), at)


def references(ws: Workspace) -> list[Reference]:
    """Every PVC, ConfigMap and Secret the workspace's pods mount or read, where the file names it.
    (tuning.config is merged into a ConfigMap of our own, so it is not needed at run time.)"""
    out = []
    for path, kind in reference_paths(ws.document.data):
        value = at_path(ws.document.data, path)
        if isinstance(value, str) and value and path != ("tuning", "config"):
            out.append(Reference(kind, ws.namespace, value, path))
    return out


# What can stand in the repository for a Secret the workspace names: the wrappers create it
SECRET_SOURCES = ("SealedSecret.bitnami.com", "ExternalSecret.external-secrets.io")


def secret_name(obj: KubeObject) -> str:
    """The Secret a wrapper creates: an ExternalSecret may name it in spec.target.name."""
    spec = obj.document.data.get("spec")
    target = spec.get("target") if isinstance(spec, dict) else None
    named = target.get("name") if isinstance(target, dict) else None
    return named if isinstance(named, str) and named else obj.name


def provided_by(objects: dict[ObjectKey, KubeObject], ref: Reference) -> bool:
    """Whether the repository's objects create what `ref` names."""
    if ref.key in objects:
        return True
    if ref.kind == "Secret":
        return any(
            o.kind_name in SECRET_SOURCES and o.namespace == ref.namespace and secret_name(o) == ref.name
            for o in objects.values()
        )
    return False
