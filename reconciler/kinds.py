"""Which Kubernetes kinds kaito-gitops applies from the watched folders, and in what order. Pure data.

A kind is named `Kind` for the core group and `Kind.group` otherwise (as `kubectl api-resources`
prints it). The default allow-list holds namespaced kinds a workspace commonly needs beside it;
cluster-scoped kinds and RBAC are known (so a typo still gets "did you mean") but applied only
when the operator names them with `--allow-kind`. Kinds of other CRDs are applied when the
operator names them too, or when the repository itself holds their CustomResourceDefinition.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

# Apply order, by rank; removal runs in reverse.
RANK_CLUSTER = 0  # Namespaces, CRDs: what other objects live in or are instances of
RANK_CONFIG = 1  # what pods read or mount: ConfigMaps, Secret wrappers, PVCs, ServiceAccounts, RBAC
RANK_NETWORK = 2  # Services, policies, routes
RANK_WORKLOAD = 3  # workloads, then what scales or watches them
RANK_WORKSPACE = 4  # the workspaces' own objects come after every companion


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: str
    group: str  # "" for the core group
    namespaced: bool
    rank: int
    default: bool  # on the default allow-list
    crd: bool = False  # served only where its CustomResourceDefinition is installed
    health: str = ""  # how status reads its health: see targets.kube_objects.health
    version: str = "v1"  # the version listed to find what we applied (any served version lists them all)

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def _k(kind, group, rank, *, namespaced=True, default=True, crd=False, health="", version="v1") -> KindInfo:
    return KindInfo(kind, group, namespaced, rank, default, crd, health, version)


KNOWN: tuple[KindInfo, ...] = (
    _k("Namespace", "", RANK_CLUSTER, namespaced=False, default=False),
    _k(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        RANK_CLUSTER,
        namespaced=False,
        default=False,
        health="established",
    ),
    _k("ConfigMap", "", RANK_CONFIG),
    _k("PersistentVolumeClaim", "", RANK_CONFIG, health="bound"),
    _k("ServiceAccount", "", RANK_CONFIG),
    _k("SealedSecret", "bitnami.com", RANK_CONFIG, crd=True, version="v1alpha1"),
    _k("ExternalSecret", "external-secrets.io", RANK_CONFIG, crd=True),
    _k("Secret", "", RANK_CONFIG, default=False),  # refused with data in git: see validation.objects
    _k("Role", "rbac.authorization.k8s.io", RANK_CONFIG, default=False),
    _k("RoleBinding", "rbac.authorization.k8s.io", RANK_CONFIG, default=False),
    _k("ClusterRole", "rbac.authorization.k8s.io", RANK_CONFIG, namespaced=False, default=False),
    _k("ClusterRoleBinding", "rbac.authorization.k8s.io", RANK_CONFIG, namespaced=False, default=False),
    _k("StorageClass", "storage.k8s.io", RANK_CONFIG, namespaced=False, default=False),
    _k("PersistentVolume", "", RANK_CONFIG, namespaced=False, default=False),
    _k("Service", "", RANK_NETWORK),
    _k("NetworkPolicy", "networking.k8s.io", RANK_NETWORK),
    _k("HTTPRoute", "gateway.networking.k8s.io", RANK_NETWORK, crd=True),
    _k("PodDisruptionBudget", "policy", RANK_NETWORK),
    _k("Deployment", "apps", RANK_WORKLOAD, health="available"),
    _k("HorizontalPodAutoscaler", "autoscaling", RANK_WORKLOAD, version="v2"),
    _k("ScaledObject", "keda.sh", RANK_WORKLOAD, crd=True, version="v1alpha1"),
    _k("StatefulSet", "apps", RANK_WORKLOAD, default=False),
    _k("DaemonSet", "apps", RANK_WORKLOAD, default=False),
    _k("Job", "batch", RANK_WORKLOAD, default=False),
    _k("CronJob", "batch", RANK_WORKLOAD, default=False),
    _k("ServiceMonitor", "monitoring.coreos.com", RANK_WORKLOAD, default=False, crd=True),
)

_BY_NAME = {k.name: k for k in KNOWN}
DEFAULT_ALLOWED = frozenset(k.name for k in KNOWN if k.default)
# Kaito's own kinds: a Workspace is ours to plan; the others are not applied (yet) and say so
KAITO_GROUP = "kaito.sh"


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def kind_name(api_version: str, kind: str) -> str:
    group = group_of(api_version)
    return f"{kind}.{group}" if group else kind


def lookup(name: str) -> KindInfo | None:
    return _BY_NAME.get(name)


def normalize(text: str) -> str:
    """A kind as an operator writes it on --allow-kind (`PersistentVolumeClaim`, `Role`,
    `certificates.cert-manager.io` is not accepted: kinds, not resources) -> its full name."""
    text = text.strip()
    if text in _BY_NAME:
        return text
    matches = [k.name for k in KNOWN if k.kind == text]
    return matches[0] if len(matches) == 1 else text


def suggest(name: str, candidates: set[str]) -> str:
    """'; did you mean X?' for a misspelt kind, or ''."""
    lowered = {c.lower(): c for c in candidates}
    near = lowered.get(name.lower()) or next(
        iter(difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.75)), None
    )
    return f"; did you mean {near}?" if near else ""


@dataclass(frozen=True)
class ObjectPolicy:
    """What the operator lets the daemon apply: set on `kaito-gitops run` (and `validate`, to check
    a repository the way the daemon will), never in the repository the policy guards."""

    allowed: frozenset[str] = DEFAULT_ALLOWED
    managed_namespaces: tuple[str, ...] = ()  # () = every namespace but the system ones

    @classmethod
    def from_flags(cls, allow_kinds: list[str], managed_namespaces: list[str]) -> ObjectPolicy:
        return cls(DEFAULT_ALLOWED | {normalize(k) for k in allow_kinds}, tuple(managed_namespaces))

    def manages(self, namespace: str) -> bool:
        if self.managed_namespaces:
            return namespace in self.managed_namespaces
        return namespace not in SYSTEM_NAMESPACES


SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
