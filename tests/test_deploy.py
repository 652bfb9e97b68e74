"""deploy/ stays installable and honest: manifests, RBAC, configuration, docs and Dockerfiles.

* Every kustomization under deploy/ (and each component on top of an overlay) renders with
  `kubectl kustomize`, and every object validates against the Kubernetes 1.31 schema (strict).
  The one CRD kind, ServiceMonitor, has no schema there: it is checked against a small hand
  schema of the fields Prometheus Operator requires and the ones we rely on.
* RBAC is proven from the code, not from a list kept by hand: the real daemon runs passes
  (inference, tuning with pod logs, drift, prune) and leader election against the Kubernetes
  API double; every request it makes is mapped to what the API server's authorizer would check
  (group, resource[/subresource], verb, namespace, name), and the rendered roles must allow
  each one and grant nothing that none of them needed.
* The Deployment's `kaito-gitops run` arguments and every rendered config.yaml resolve with the
  real parser; docs/install.md's commands, flags and settings exist.
* The Dockerfiles are checked statically (no Docker engine here): pinned bases, numeric
  non-root users, no piped downloads, pip without a cache, versions that match the project's.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from dataclasses import fields as dc_fields
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs" / "install.md"
K8S_VERSION = "1.31.0"
SA = ("kaito-gitops", "kaito-gitops")  # (namespace, name) of the daemon's ServiceAccount

needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) is not installed"
)


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def _kustomizations() -> dict[str, str]:
    """deploy-relative folder -> kind (Kustomization or Component)."""
    out = {}
    for p in sorted(DEPLOY.rglob("kustomization.yaml")):
        doc = yaml.safe_load(p.read_text()) or {}
        out[p.parent.relative_to(DEPLOY).as_posix()] = doc.get("kind", "Kustomization")
    return out


KUSTOMIZATIONS = _kustomizations()
BUILDABLE = [k for k, kind in KUSTOMIZATIONS.items() if kind == "Kustomization"]
COMPONENTS = [k for k, kind in KUSTOMIZATIONS.items() if kind == "Component"]
OVERLAYS = [k for k in BUILDABLE if k.startswith("overlays/")]


def _kustomize(folder: Path) -> list[dict]:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {folder} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@functools.cache
def rendered(target: str) -> tuple[dict, ...]:
    """Objects of a kustomization; "overlays/aks+components" = that overlay with every component."""
    if "+" not in target:
        return tuple(_kustomize(DEPLOY / target))
    import tempfile

    overlay = target.split("+")[0]
    with tempfile.TemporaryDirectory() as tmp:
        rel = os.path.relpath(DEPLOY, tmp)  # kustomize refuses absolute paths to other roots
        (Path(tmp) / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [f"{rel}/{overlay}"],
                    "components": [f"{rel}/{c}" for c in COMPONENTS],
                }
            )
        )
        return tuple(_kustomize(Path(tmp)))


RENDERINGS = [*BUILDABLE, *(f"{o}+components" for o in OVERLAYS)]


def one(objs, kind: str) -> dict:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def daemon_container(objs) -> dict:
    return one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_the_layout_is_what_the_docs_describe():
    assert {"base", "overlays/aks", "overlays/byo-nodes"} <= set(BUILDABLE)
    assert {"components/webhook-ingress", "components/servicemonitor", "components/monitoring"} <= set(
        COMPONENTS
    )


# --------------------------------------------------------------------------------------------
# schema validation
# --------------------------------------------------------------------------------------------

DURATION = {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"}  # Prometheus durations: 30s, 5m
# monitoring.coreos.com/v1 ServiceMonitor: the fields the operator requires (spec.selector,
# spec.endpoints) and the ones this install relies on. kubernetes-validate has no CRD schemas.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {"type": "object", "minProperties": 1}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port", "path"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                        },
                    },
                },
            },
        },
    },
}
# monitoring.coreos.com/v1 PrometheusRule: groups of named rules, each an alert with an expression
# (tests/test_monitoring.py parses the expressions and checks the metrics they read).
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "expr": {"type": "string"},
                                        "for": DURATION,
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
HAND_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_SCHEMA,
}


@needs_kubectl
@pytest.mark.parametrize("target", RENDERINGS)
def test_every_rendered_object_is_valid(target):
    import jsonschema
    import kubernetes_validate

    objs = rendered(target)
    assert objs, f"{target} renders nothing"
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"])
        if key in HAND_SCHEMAS:
            jsonschema.validate(obj, HAND_SCHEMAS[key])
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{target}: {obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")


@needs_kubectl
def test_the_service_monitor_and_ingress_point_at_the_ops_service():
    objs = rendered("overlays/aks+components")
    svc = one(objs, "Service")
    ports = {p["name"] for p in svc["spec"]["ports"]}
    sm = one(objs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= ports
    assert [e["path"] for e in sm["spec"]["endpoints"]] == ["/metrics"]
    ingress = one(objs, "Ingress")
    paths = [p for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/webhook", "Exact")], "only /webhook is public"
    assert all(p["backend"]["service"]["name"] == svc["metadata"]["name"] for p in paths)
    assert all(p["backend"]["service"]["port"]["name"] in ports for p in paths)


@needs_kubectl
@pytest.mark.parametrize("target", BUILDABLE)
def test_optional_pieces_stay_out_of_base_and_overlays(target):
    kinds = {o["kind"] for o in rendered(target)}
    assert not kinds & {"Ingress", "ServiceMonitor", "PrometheusRule"}, (
        f"{target} must not include the optional components"
    )


# --------------------------------------------------------------------------------------------
# the Deployment and its configuration
# --------------------------------------------------------------------------------------------


def run_parser() -> argparse.ArgumentParser:
    from reconciler.runconfig import add_arguments

    p = argparse.ArgumentParser(prog="kaito-gitops run")
    add_arguments(p)
    return p


def runconfig_keys() -> set[str]:
    from reconciler.runconfig import RunConfig

    return {f.name.replace("_", "-") for f in dc_fields(RunConfig)} | {"config"}


def resolved_config(objs, tmp_path: Path):
    """The daemon's RunConfig as the rendered Deployment would resolve it."""
    from reconciler.runconfig import resolve

    c = daemon_container(objs)
    argv = [*c.get("command", []), *c.get("args", [])]
    assert argv[:2] == ["kaito-gitops", "run"], argv
    args = run_parser().parse_args(argv[2:])
    config_file = Path(args.config)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    mount = mounts[str(config_file.parent)]
    cm_name = volumes[mount["name"]]["configMap"]["name"]
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name)
    text = cm["data"][config_file.name]
    local = tmp_path / config_file.name
    local.write_text(text)
    args.config = str(local)
    env = {
        e["name"]: e["value"]
        for e in c.get("env", [])
        if "value" in e and e["name"].startswith("KAITO_GITOPS_")
    }
    return resolve(args, environ=env), yaml.safe_load(text)


@needs_kubectl
@pytest.mark.parametrize("target", BUILDABLE)
def test_run_arguments_and_every_config_key_resolve(target, tmp_path):
    objs = rendered(target)
    if not any(o["kind"] == "Deployment" for o in objs):
        pytest.skip(f"{target} has no Deployment")
    cfg, data = resolved_config(objs, tmp_path)
    unknown = set(data) - runconfig_keys()
    assert not unknown, f"not settings of kaito-gitops run: {unknown}"
    assert cfg.leader_election and cfg.target == "kubernetes"
    expected = {"overlays/aks": "aks", "overlays/byo-nodes": "none", "base": "none"}[target]
    assert cfg.provisioner == expected
    if cfg.provisioner == "aks":
        assert cfg.aks_subscription and cfg.aks_resource_group and cfg.aks_cluster
    c = daemon_container(objs)
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    from reconciler.runconfig import listen_address

    assert listen_address(cfg.listen)[1] == ports["http"]
    # writable paths are volumes, credentials are files in Secret volumes
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = c["volumeMounts"]

    def volume_of(path: str) -> dict:
        best = max(
            (m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")),
            key=lambda m: len(m["mountPath"]),
            default=None,
        )
        assert best is not None, f"{path} is on no volume"
        return {**volumes[best["name"]], "readOnly": best.get("readOnly", False)}

    assert "emptyDir" in volume_of(cfg.cache_dir + "/x"), "the git cache must be on a writable volume"
    for name in (
        "git_token_file",
        "git_ssh_key_file",
        "git_known_hosts_file",
        "webhook_secret_file",
        "github_token_file",
        "github_app_key_file",
    ):
        path = getattr(cfg, name)
        if path:
            v = volume_of(path)
            assert "secret" in v and v["readOnly"], f"{name}={path} must be a read-only Secret file"


@needs_kubectl
@pytest.mark.parametrize("target", BUILDABLE)
def test_the_deployment_is_hardened_and_sized(target):
    objs = rendered(target)
    dep = one(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = daemon_container(objs)
    assert dep["spec"]["replicas"] == 2
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"] and "add" not in csc["capabilities"]
    assert psc["runAsUser"] == dockerfile_user("daemon")[0], "the Deployment runs as the image's user"
    # the Service account and the rules are the ones the RBAC test proves
    assert (dep["metadata"]["namespace"], pod["serviceAccountName"]) == SA
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["MALLOC_ARENA_MAX"]["value"] == "2"
    for e in c["env"]:  # secrets are files; the one variable the daemon allows is the webhook secret
        if "secretKeyRef" in (e.get("valueFrom") or {}):
            assert e["name"] == "KAITO_GITOPS_WEBHOOK_SECRET"
    assert not [x for x in c.get("envFrom", []) if "secretRef" in x]
    for m in c["volumeMounts"]:
        vol = next(v for v in pod["volumes"] if v["name"] == m["name"])
        if "secret" in vol:
            assert m.get("readOnly") is True
        elif m["mountPath"] not in ("/tmp", "/var/cache/kaito-gitops"):
            assert m.get("readOnly") is True, f"{m['mountPath']} should be read-only"
    assert {
        m["mountPath"]
        for m in c["volumeMounts"]
        if "emptyDir" in next(v for v in pod["volumes"] if v["name"] == m["name"])
    } == {"/tmp", "/var/cache/kaito-gitops"}
    assert env["HOME"]["value"] == "/tmp"
    # probes on the ops port; see docs/install.md "Health" for why readiness is /healthz
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]["httpGet"]["port"] in ("http", 8080)
    res = c["resources"]
    assert res["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert res["limits"] == {"cpu": "1", "memory": "512Mi"}
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one(objs, "Service")["spec"]["selector"].items() <= labels.items()
    strategy = dep["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "the PDB and rolling updates keep one replica up"


@needs_kubectl
@pytest.mark.parametrize("target", BUILDABLE)
def test_nothing_we_install_looks_like_a_workload_the_daemon_manages(target):
    """The daemon lists and prunes everything labelled managed-by=kaito-gitops: not itself."""
    from reconciler.render.common import LABEL_MANAGED_BY, MANAGED_BY

    for obj in rendered(target):
        for labels in (
            obj["metadata"].get("labels") or {},
            ((obj.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {},
        ):
            assert labels.get(LABEL_MANAGED_BY) != MANAGED_BY, f"{obj['kind']}/{obj['metadata']['name']}"


@needs_kubectl
def test_workload_identity_is_wired_on_aks_only():
    aks, byo = rendered("overlays/aks"), rendered("overlays/byo-nodes")
    sa = one(aks, "ServiceAccount")
    client_id = sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", client_id)
    assert (
        one(aks, "Deployment")["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"]
        == "true"
    )
    assert "azure.workload.identity/client-id" not in (
        one(byo, "ServiceAccount")["metadata"].get("annotations") or {}
    )
    assert (
        "azure.workload.identity/use" not in one(byo, "Deployment")["spec"]["template"]["metadata"]["labels"]
    )


# --------------------------------------------------------------------------------------------
# RBAC, derived from the requests the real daemon makes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attr:
    """What the API server's RBAC authorizer checks for one request."""

    group: str
    resource: str  # "pods" or "pods/log"
    verb: str
    namespace: str  # "" for cluster-scoped objects and all-namespace lists
    name: str


def rbac_attributes(method: str, path: str, query: dict, status: int) -> list[Attr]:
    """Like the API server's request info resolver: /api/v1/... and /apis/<group>/<version>/..."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 3):
        return []  # discovery: /api, /apis, /apis/<group>
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    if not rest:
        return []  # discovery
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if method == "GET":
        verb = ("watch" if query.get("watch") in ("true", "1") else "list") if not name else "get"
    else:
        verb = {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }[method]
    attrs = [Attr(group, resource, verb, namespace, name)]
    if method == "PATCH" and status == 201:
        # server-side apply of an object that does not exist yet is authorized as patch AND create
        attrs.append(Attr(group, resource, "create", namespace, name))
    return attrs


def test_the_request_mapping_matches_the_api_server():
    assert rbac_attributes("GET", "/api/v1/configmaps", {"labelSelector": "x"}, 200) == [
        Attr("", "configmaps", "list", "", "")
    ]
    assert rbac_attributes("GET", "/api/v1/namespaces/llm/pods/p-1/log", {"container": "c"}, 200) == [
        Attr("", "pods/log", "get", "llm", "p-1")
    ]
    assert rbac_attributes("PATCH", "/apis/apps/v1/namespaces/a/statefulsets/s", {}, 201) == [
        Attr("apps", "statefulsets", "patch", "a", "s"),
        Attr("apps", "statefulsets", "create", "a", "s"),
    ]
    assert rbac_attributes("DELETE", "/apis/batch/v1/namespaces/a/jobs/j", {}, 200)[0].verb == "delete"
    assert rbac_attributes("GET", "/api/v1/nodes", {}, 200) == [Attr("", "nodes", "list", "", "")]
    assert rbac_attributes("GET", "/apis/coordination.k8s.io/v1", {}, 200) == []


WS_TUNING = (ROOT / "example-repo" / "workspaces" / "tuning-phi-3.yaml").read_text()
# one object of every kind on the default allow-list (reconciler/kinds.py), applied beside the workspaces
COMPANIONS = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: c-settings}
data: {mode: fast}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: c-cache}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: c-runner}
---
apiVersion: bitnami.com/v1alpha1
kind: SealedSecret
metadata: {name: c-sealed}
spec: {encryptedData: {token: AgBy3i4OJSWK}}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: c-external}
spec: {secretStoreRef: {name: vault, kind: ClusterSecretStore}, target: {name: c-external}}
---
apiVersion: v1
kind: Service
metadata: {name: c-gateway}
spec: {selector: {app: c-gateway}, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-deny}
spec: {podSelector: {}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: c-route}
spec: {rules: [{backendRefs: [{name: a, port: 80}]}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: c-pdb}
spec: {minAvailable: 1, selector: {matchLabels: {app: c-gateway}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: c-gateway}
spec:
  selector: {matchLabels: {app: c-gateway}}
  template:
    metadata: {labels: {app: c-gateway}}
    spec: {containers: [{name: gw, image: "nginx:1.27"}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: c-hpa}
spec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: c-gateway}, minReplicas: 1, maxReplicas: 2}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: c-scaler}
spec: {scaleTargetRef: {name: c-gateway}}
"""


@pytest.fixture(scope="module")
def daemon_requests(tmp_path_factory) -> list[Attr]:
    """Every request of a real daemon: apply, pod logs, drift, prune, leader election."""
    from doubles.kube_api import EXTERNAL_SECRET, HTTP_ROUTE, SCALED_OBJECT, SEALED_SECRET, KubeAPIServer
    from doubles.kube_fixtures import workspace_node
    from support.gitserver import GitRemote
    from support.workspaces import smol_ws

    from reconciler.leader import LeaseElector
    from reconciler.runcmd import build_daemon
    from reconciler.runconfig import resolve

    tmp = tmp_path_factory.mktemp("rbac")
    remote = GitRemote(tmp / "git", "gitops.git")  # file:// remote, fetched like a hosted one
    remote.write(
        {
            "workspaces/a.yaml": smol_ws("a"),
            "workspaces/b.yaml": smol_ws("b"),
            # its results go to a claim the cluster already has: looked up before the Job is applied
            "workspaces/t.yaml": WS_TUNING.replace(
                "    image: myregistry.azurecr.io/adapters/phi-3-dolly:0.1.0\n    imagePushSecret: acr-push\n",
                "    volumeSource: {persistentVolumeClaim: {claimName: results}}\n",
            ),
            # mounts a ConfigMap that only the cluster has: the daemon looks it up before applying
            "workspaces/c.yaml": smol_ws("c").replace(
                "inference:\n", "inference:\n  config: c-cluster-config\n"
            ),
            "workspaces/objects.yaml": COMPANIONS,
        }
    )
    with KubeAPIServer() as kube:
        for crd_kind in (SEALED_SECRET, EXTERNAL_SECRET, HTTP_ROUTE, SCALED_OBJECT):
            kube.add_resource(crd_kind)
        kube.put_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c-cluster-config"}})
        kube.put_object(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "results", "namespace": "llm"},
            }
        )
        for ws, ns in (("a", "default"), ("b", "default"), ("c", "default"), ("tuning-phi-3", "llm")):
            kube.put_object(workspace_node(ws, ns))
        kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig")
        # the deployed settings, with the repository, cluster and cache of this test
        args = run_parser().parse_args(
            [
                "--repo",
                remote.url,
                "--kubeconfig",
                str(kubeconfig),
                "--cache-dir",
                str(tmp / "cache"),
                "--provisioner",
                "none",
                "--status",
                "off",
                "--path",
                "workspaces",
                "--leader-election",
            ]
        )
        cfg = resolve(args, environ={})
        daemon = build_daemon(cfg)  # the wiring of `kaito-gitops run`: KubernetesTarget, Daemon
        try:
            first = daemon.run_pass()
            # three inference workspaces (2 Services + a StatefulSet each), one tuning (ConfigMap + Job),
            # and the 12 other objects
            assert not first.errors and first.writes == 11 + 12, first
            assert not [o for o in first.objects if o.error], first.objects
            kube.reconcile_workloads()  # the Job's pod appears; it starts running
            [pod] = [p for p in kube.objects("Pod") if p["metadata"]["namespace"] == "llm"]
            kube.set_pod_phase("llm", pod["metadata"]["name"], "Running")
            kube.reconcile_workloads()
            before = len(kube.requests)
            second = daemon.run_pass()  # observes the running tuning job: reads its pod's log
            assert any(q.path.endswith("/log") for q in kube.requests[before:]), (
                "the tuning pod's log was read"
            )
            assert not second.errors
            kube.delete_object("apps/v1", "StatefulSet", "default", "a")  # drift: deleted out of band
            assert daemon.run_pass().writes == 1
            remote.write(
                {"workspaces/b.yaml": None, "workspaces/t.yaml": None, "workspaces/objects.yaml": None},
                "remove b, t and the other objects",
            )
            pruned = daemon.run_pass()
            assert sorted(pruned.removed) == [("default", "b"), ("llm", "tuning-phi-3")], pruned
            assert kube.objects("Job") == [] and kube.objects("Deployment") == []
            assert [c["metadata"]["name"] for c in kube.objects("ConfigMap")] == ["c-cluster-config"]
            # leader election in the daemon's namespace, under the configured Lease name
            dep_ns = SA[0]
            a = LeaseElector(daemon.target.api_client, dep_ns, cfg.lease_name, "kaito-gitops-a")
            b = LeaseElector(daemon.target.api_client, dep_ns, cfg.lease_name, "kaito-gitops-b")
            assert a.try_acquire() and a.try_acquire() and not b.try_acquire()
            a.release()
            assert b.try_acquire()
        finally:
            daemon.close()
        requests = kube.requests
    attrs = [a for q in requests for a in rbac_attributes(q.method, q.path, q.query, q.status)]
    non_resource = {q.path for q in requests if not rbac_attributes(q.method, q.path, q.query, q.status)}
    # discovery (/api, /apis, /api/v1, /apis/<group>/<version>) is open to every authenticated user
    discovery = re.compile(r"^/(version/?|api(/v1)?|apis(/[^/]+/[^/]+)?)$")
    assert not {p for p in non_resource if not discovery.match(p)}, non_resource
    return attrs


@dataclass(frozen=True)
class Grant:
    rule: dict
    namespace: str  # "" = every namespace (ClusterRoleBinding)
    source: str

    def allows(self, a: Attr) -> bool:
        r = self.rule
        if self.namespace and a.namespace != self.namespace:
            return False
        if a.group not in r.get("apiGroups", []) or a.resource not in r.get("resources", []):
            return False
        if a.verb not in r.get("verbs", []):
            return False
        return not r.get("resourceNames") or a.name in r["resourceNames"]


def rbac_objects(target: str) -> list[dict]:
    """The rendered RBAC; without kubectl, base/rbac.yaml as written (no overlay patches RBAC)."""
    if shutil.which("kubectl"):
        return list(rendered(target))
    return [d for d in yaml.safe_load_all((DEPLOY / "base" / "rbac.yaml").read_text()) if d]


def grants_for_daemon(objs) -> list[Grant]:
    roles = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
    }
    out = []
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = {
            (s.get("namespace", ""), s["name"]) for s in b["subjects"] if s["kind"] == "ServiceAccount"
        }
        if SA not in subjects:
            continue
        ns = b["metadata"]["namespace"] if b["kind"] == "RoleBinding" else ""
        ref = b["roleRef"]
        role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"]))
        assert role is not None, f"{b['kind']}/{b['metadata']['name']} refers to a missing {ref['kind']}"
        out += [Grant(r, ns, f"{ref['kind']}/{ref['name']}") for r in role["rules"]]
    return out


@pytest.mark.parametrize("target", OVERLAYS)
def test_rbac_allows_every_request_the_daemon_makes(target, daemon_requests):
    grants = grants_for_daemon(rbac_objects(target))
    missing = sorted(
        {a for a in daemon_requests if not any(g.allows(a) for g in grants)},
        key=lambda a: (a.group, a.resource, a.verb),
    )
    assert not missing, "forbidden for the daemon:\n" + "\n".join(map(str, missing))


@pytest.mark.parametrize("target", OVERLAYS)
def test_rbac_grants_nothing_the_daemon_never_used(target, daemon_requests):
    unused = []
    for g in grants_for_daemon(rbac_objects(target)):
        r = g.rule
        assert not r.get("nonResourceURLs"), f"{g.source}: nonResourceURLs"
        for group in r.get("apiGroups", []):
            for resource in r.get("resources", []):
                for verb in r.get("verbs", []):
                    for name in r.get("resourceNames") or [None]:
                        # a cluster-wide grant must be needed outside the daemon's own namespace
                        # (else a Role there would do); a namespaced one inside its namespace
                        used = any(
                            a.group == group
                            and a.resource == resource
                            and a.verb == verb
                            and (name is None or a.name == name)
                            and (a.namespace == g.namespace if g.namespace else a.namespace != SA[0])
                            for a in daemon_requests
                        )
                        if not used:
                            unused.append(f"{g.source}: {group or 'core'}/{resource} {verb} {name or ''}")
    assert not unused, "granted but never requested:\n" + "\n".join(unused)


@pytest.mark.parametrize("target", BUILDABLE)
def test_rbac_never_touches_secrets_or_wildcards(target):
    for obj in rbac_objects(target):
        if obj["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in obj.get("rules", []):
            values = [
                v
                for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
                for v in rule.get(key, [])
            ]
            assert "*" not in values and not any("*" in v for v in values), (
                f"{obj['metadata']['name']}: {rule}"
            )
            assert not any(v.split("/")[0] == "secrets" for v in rule.get("resources", [])), rule
        assert not obj.get("aggregationRule")


@needs_kubectl
def test_the_lease_role_matches_the_daemon_settings(tmp_path):
    """The Role sits in the pod's namespace (where runcmd looks for the Lease) and names its Lease."""
    objs = rendered("overlays/aks")
    cfg, _ = resolved_config(objs, tmp_path)
    role = next(o for o in objs if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == one(objs, "Deployment")["metadata"]["namespace"]
    assert not cfg.lease_namespace, "the Lease lives in the pod's own namespace"
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named and all(r["resourceNames"] == [cfg.lease_name] for r in named)


# --------------------------------------------------------------------------------------------
# docs/install.md
# --------------------------------------------------------------------------------------------


def doc_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, indented ones (inside list items) dedented."""
    return [
        (m.group(1), textwrap.dedent(m.group(2))) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.DOTALL)
    ]


def shell_lines(body: str) -> list[list[str]]:
    """Commands of a shell block: continuations joined, heredoc bodies and comments dropped."""
    out, heredoc = [], None
    for line in body.replace("\\\n", " ").splitlines():
        if heredoc:
            if line.strip() == heredoc:
                heredoc = None
            continue
        m = re.search(r"<<-?'?(\w+)'?", line)
        if m:
            heredoc = m.group(1)
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        cmd: list[str] = []
        for w in [*words, "&&"]:
            if w in ("&&", "||", ";", "|"):
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def doc_commands(name: str) -> list[list[str]]:
    text = DOCS.read_text()
    cmds = [
        c for lang, body in doc_blocks(text) if lang in ("sh", "bash", "console") for c in shell_lines(body)
    ]
    outside = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    cmds += [shlex.split(s) for s in re.findall(r"`([^`\n]+)`", outside) if s.split()[0] == name and " " in s]
    out = []
    for c in cmds:
        words = [w for w in c if not re.fullmatch(r"[A-Z_]+=.*", w)] if c else []
        if words and os.path.basename(words[0]) == name:
            out.append(words)
    return out


def test_every_kaito_gitops_command_in_the_docs_parses():
    from reconciler.cli import build_parser

    cmds = doc_commands("kaito-gitops")
    assert len(cmds) >= 5 and {c[1] for c in cmds} >= {"status", "validate", "plan"}
    for cmd in cmds:
        try:
            args = build_parser().parse_args(cmd[1:])
        except SystemExit:
            pytest.fail(f"docs/install.md: `{shlex.join(cmd)}` does not parse")
        assert args.command == cmd[1]


def _all_flags() -> set[str]:
    from reconciler.cli import build_parser

    flags = set()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for p in sub.choices.values():
        for action in p._actions:
            flags |= set(action.option_strings)
    return flags


def test_every_flag_and_setting_the_docs_name_exists():
    text = DOCS.read_text()
    outside = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    spans = re.findall(r"`([^`\n]+)`", outside)
    flags = [s for s in spans if s.startswith("--")]
    assert flags and not set(flags) - _all_flags(), set(flags) - _all_flags()
    keys = runconfig_keys()
    settings = [m.group(1) for s in spans if (m := re.fullmatch(r"([a-z][a-z0-9-]*): \S.*", s))]
    assert settings and not set(settings) - keys, set(settings) - keys
    blocks = [body for lang, body in doc_blocks(text) if lang == "yaml" and body.startswith("# config.yaml")]
    assert len(blocks) >= 3
    from reconciler.runconfig import resolve

    for body in blocks:
        data = yaml.safe_load(body)
        assert not set(data) - keys, set(data) - keys
    # the first is a complete configuration
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as fh:
        fh.write(blocks[0])
        fh.flush()
        cfg = resolve(run_parser().parse_args(["--config", fh.name]), environ={})
        assert cfg.provisioner == "aks" and cfg.github_repo


def test_every_kustomization_and_path_in_the_docs_exists():
    cmds = doc_commands("kubectl")
    ks = [c[c.index("-k") + 1] for c in cmds if "-k" in c]
    assert "deploy/overlays/aks" in ks and "deploy/overlays/byo-nodes" in ks
    for k in ks:
        assert (ROOT / k / "kustomization.yaml").is_file(), f"kubectl -k {k}: no kustomization there"
    for c in cmds:
        if c[:2] == ["kubectl", "apply"] and "-f" in c:
            assert (ROOT / c[c.index("-f") + 1]).is_file()
    for p in re.findall(r"`((?:deploy|reconciler)/[^`\s]*)`", DOCS.read_text()):
        assert (ROOT / p).exists(), f"docs/install.md names {p}, which does not exist"


@needs_kubectl
def test_the_docs_match_the_identity_the_code_and_manifests_use():
    from reconciler.render.common import MANAGED_BY
    from reconciler.render.nodepool import TAG_MANAGED_BY

    text = DOCS.read_text()
    sa = one(rendered("overlays/aks"), "ServiceAccount")["metadata"]
    assert f"system:serviceaccount:{sa['namespace']}:{sa['name']}" in text
    assert "az aks show" in text and "oidcIssuerProfile.issuerUrl" in text
    query = f"[?tags.\\\"{TAG_MANAGED_BY}\\\"=='{MANAGED_BY}']"
    assert query in text, "the node pool query must use the tag the provisioner writes"
    role = json.loads(re.search(r"<<EOF\n(\{.*?\})\nEOF", text, re.DOTALL).group(1))
    assert sorted(role["Actions"]) == sorted(
        [
            "Microsoft.ContainerService/managedClusters/read",
            "Microsoft.ContainerService/managedClusters/agentPools/read",
            "Microsoft.ContainerService/managedClusters/agentPools/write",
            "Microsoft.ContainerService/managedClusters/agentPools/delete",
        ]
    )
    assert not role["NotActions"] and not role["DataActions"]
    for secret in ("kaito-gitops-git", "kaito-gitops-github", "kaito-gitops-webhook"):
        pod = one(rendered("overlays/aks"), "Deployment")["spec"]["template"]["spec"]
        assert secret in {v.get("secret", {}).get("secretName") for v in pod["volumes"]}
        assert f"create secret generic {secret}" in text


# --------------------------------------------------------------------------------------------
# Dockerfiles (static: no Docker engine here)
# --------------------------------------------------------------------------------------------

IMAGES = ("daemon", "inference", "tuning")


def dockerfile(image: str) -> str:
    return (DEPLOY / "images" / image / "Dockerfile").read_text()


def instructions(image: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile(image))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def base_images(image: str) -> list[str]:
    """FROM images with global ARG defaults substituted; stage names left out."""
    args, stages, out = {}, set(), []
    for word, rest in instructions(image):
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args.setdefault(k.strip(), v.strip().strip('"'))
        elif word == "FROM":
            parts = rest.split()
            ref = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), parts[0])
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
            if ref not in stages:
                out.append(ref)
    return out


def dockerfile_user(image: str) -> tuple[int, int] | None:
    users = [rest for word, rest in instructions(image) if word == "USER"]
    if not users:
        return None
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and (not group or group.isdigit()), (
        f"{image}: USER must be numeric, not {users[-1]}"
    )
    return int(user), int(group or user)


@pytest.mark.parametrize("image", IMAGES)
def test_bases_are_pinned_to_a_version(image):
    refs = base_images(image)
    assert refs
    for ref in refs:
        name, _, tag = ref.partition("@")[0].rpartition(":")
        assert name and "/" not in tag, f"{image}: {ref} has no tag"
        assert tag != "latest" and "latest" not in tag, f"{image}: {ref}"
        assert re.search(r"\d+\.\d+(\.\d+)?", tag), f"{image}: {ref} is not pinned to a version"
    assert re.search(r"digest|sha256", dockerfile(image)), f"{image}: say how CI pins by digest"


@pytest.mark.parametrize("image", IMAGES)
def test_no_piped_downloads_and_pip_without_cache(image):
    text = re.sub(r"\\\n", " ", dockerfile(image))
    code = "\n".join(f"{w} {r}" for w, r in instructions(image))
    assert not re.search(r"\b(curl|wget)\b[^\n]*\|\s*(ba|z)?sh\b", text)
    assert not re.search(r"\b(curl|wget)\b", code), "downloads only through apt and pip"
    for m in re.finditer(r"pip (install|wheel)[^&;\n]*", code):
        assert "--no-cache-dir" in m.group(0), f"{image}: {m.group(0)}"
    assert (DEPLOY / "images" / image / "Dockerfile.dockerignore").is_file()


@pytest.mark.parametrize("image", IMAGES)
def test_copied_sources_exist_and_are_not_ignored(image):
    ignore = (DEPLOY / "images" / image / "Dockerfile.dockerignore").read_text().split()
    allowed = {p.lstrip("!").rstrip("/") for p in ignore if p.startswith("!")}
    for word, rest in instructions(image):
        if word == "COPY" and "--from" not in rest:
            *sources, _dest = rest.split()
            for s in sources:
                assert (ROOT / s).exists(), f"{image}: COPY {s}: no such path"
                assert s.rstrip("/") in allowed, f"{image}: COPY {s} is excluded by the dockerignore"


def test_the_daemon_image_is_slim_non_root_and_runs_the_cli():
    user = dockerfile_user("daemon")
    assert user is not None and user[0] > 0 and user[1] > 0
    ins = instructions("daemon")
    assert ("ENTRYPOINT", '["kaito-gitops"]') in ins and ("CMD", '["run"]') in ins
    code = "\n".join(r for _, r in ins)
    assert re.search(r"apt-get install [^\n]*\bgit\b", code)
    pip = re.search(r"pip install --no-cache-dir[^&\n]* \"?\.(\[schemas\])?\"?(\s|$)", code)
    assert pip, "installs the project from the build context"
    assert "[schemas]" in pip.group(0), "with Kubernetes' schemas for the other objects (docs/objects.md)"
    assert "[ml]" not in code and "torch" not in code, "the daemon image has no ML stack"
    assert all("slim" in ref for ref in base_images("daemon"))


def test_the_inference_image_matches_the_pinned_sglang():
    pinned = re.search(
        r"^sglang==(\S+)", (ROOT / "requirements" / "sglang-parse.txt").read_text(), re.M
    ).group(1)
    [base] = [r for r in base_images("inference") if "sglang" in r]
    tag = base.partition("@")[0].rpartition(":")[2]
    assert tag.removeprefix("v").split("-")[0] == pinned, (
        f"lmsysorg/sglang tag {base} must match sglang=={pinned} in requirements/sglang-parse.txt"
    )
    assert "requirements/sglang-parse.txt" in dockerfile("inference")
    user = dockerfile_user("inference")
    assert user is not None and user[0] > 0
    code = "\n".join(r for _, r in instructions("inference"))
    assert "--no-deps" in code and "runtime.inference" in code
    constraints = _constraints()
    assert "import oras" in (ROOT / "runtime" / "oci.py").read_text()  # adapter pulls need oras
    for pkg in ("oras", "ruamel.yaml"):
        m = re.search(rf'"{re.escape(pkg)}==([^"]+)"', code)
        assert m, f"the inference image must install {pkg}"
        assert m.group(1) == constraints[pkg.lower()], f"{pkg} differs from requirements/constraints.txt"


def test_the_tuning_image_has_the_ml_extra_on_the_tested_torch():
    [base] = [r for r in base_images("tuning") if "pytorch" in r]
    torch = _constraints()["torch"]
    assert base.partition("@")[0].rpartition(":")[2].split("-")[0] == torch, (base, torch)
    code = "\n".join(r for _, r in instructions("tuning"))
    assert "[ml]" in code and "-c /tmp/constraints.txt" in code and "runtime.tuning" in code
    dockerfile_user("tuning")  # numeric when set


def _constraints() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out
