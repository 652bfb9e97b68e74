"""The other Kubernetes objects in the watched folders (PVCs, ConfigMaps, Secret wrappers, ...):
validated with file:line:col, applied with server-side apply before the workspaces, drift-restored,
pruned under the zero-prune guard, rendered, shown in plans, and stood in for by the local target.

Against the Kubernetes API double through the official client, with real git remotes.
"""

from __future__ import annotations

import json

import pytest
import structlog.testing
import yaml
from doubles.kube_api import SCALED_OBJECT, SEALED_SECRET
from doubles.kube_fixtures import gpu_node
from kubernetes import client
from support.workspaces import smol_ws

from reconciler import kinds
from reconciler.companions import references
from reconciler.daemon import Daemon, DaemonSettings
from reconciler.plandiff import diff_states
from reconciler.planning import plan_revision
from reconciler.planview import as_json, text
from reconciler.provisioners.none import NoneProvisioner
from reconciler.report.review_comment import comment_body
from reconciler.source.git import GitSource
from reconciler.targets.kubernetes import KubernetesTarget
from reconciler.targets.local import LocalTarget
from reconciler.targets.render import RenderTarget
from reconciler.validation import validate_sources

# Kaito's examples/fine-tuning/kaito_workspace_tuning_phi_3_with_pvc_volume.yaml, unchanged
KAITO_PVC = """\
kind: PersistentVolumeClaim
apiVersion: v1
metadata:
  name: pvc-azurefile-input
spec:
  accessModes:
    - ReadWriteMany
  resources:
    requests:
      storage: 100Gi
  storageClassName: azurefile-csi
---
kind: PersistentVolumeClaim
apiVersion: v1
metadata:
  name: pvc-azurefile-output
spec:
  accessModes:
    - ReadWriteMany
  resources:
    requests:
      storage: 100Gi
  storageClassName: azurefile-csi
---
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: workspace-tuning-phi-3
resource:
  instanceType: "Standard_NC6s_v3"
  labelSelector:
    matchLabels:
      app: tuning-phi-3
tuning:
  preset:
    name: phi-3-mini-128k-instruct
  method: qlora
  input:
    volumeSource:
      persistentVolumeClaim:
        claimName: pvc-azurefile-input
  output:
    volumeSource:
      persistentVolumeClaim:
        claimName: pvc-azurefile-output
"""
PHI_NODE = gpu_node(
    "node-phi",
    {
        "app": "tuning-phi-3",
        "kaito.sh/workspace": "workspace-tuning-phi-3",
        "kaito.sh/workspacenamespace": "default",
    },
)


def cm(name: str, data: str = "v", ns: str = "") -> str:
    where = f"\n  namespace: {ns}" if ns else ""
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{where}\ndata:\n  key: '{data}'\n"


def encoded(files: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(p, t.encode()) for p, t in files.items()]


def node_for(ws: str) -> dict:
    return gpu_node(
        f"n-{ws}", {"apps": ws, "kaito.sh/workspace": ws, "kaito.sh/workspacenamespace": "default"}
    )


def make(kube, remote, tmp_path, paths=("workspaces",), target=None, **kw) -> Daemon:
    settings = DaemonSettings(paths=list(paths), workers=2, backoff_min=0.05, backoff_max=0.2, **kw)
    target = target or KubernetesTarget(client.ApiClient(kube.client_config()), timeout=(2, 5))
    return Daemon(GitSource(remote.url, "main", tmp_path / "cache"), target, NoneProvisioner(), settings)


def names(kube, kind: str) -> list[str]:
    return sorted(o["metadata"]["name"] for o in kube.objects(kind))


def reports(d: Daemon) -> dict[str, object]:
    return {r.key[2]: r for r in d.last_pass.objects}


def patch_kinds(kube) -> list[str]:
    return [q.path.split("/")[-2] for q in kube.requests if q.method == "PATCH"]


# -- Kaito's PVC example, end to end ------------------------------------------------------


def test_kaito_pvc_example_creates_both_claims_and_the_job_that_mounts_them(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/tuning-pvc.yaml": KAITO_PVC})
    kube_api.put_object(PHI_NODE)
    d = make(kube_api, git_remote, tmp_path)
    r = d.run_pass()
    assert not r.errors, r.errors
    assert names(kube_api, "PersistentVolumeClaim") == ["pvc-azurefile-input", "pvc-azurefile-output"]
    job = kube_api.get_object("batch/v1", "Job", "default", "workspace-tuning-phi-3")
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"pvc-azurefile-input", "pvc-azurefile-output"}
    kinds_in_order = patch_kinds(kube_api)
    last_pvc = max(i for i, k in enumerate(kinds_in_order) if k == "persistentvolumeclaims")
    assert last_pvc < kinds_in_order.index("jobs"), "the claims exist before the Job that mounts them"
    pvc = kube_api.get_object("v1", "PersistentVolumeClaim", "default", "pvc-azurefile-input")
    assert pvc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kaito-gitops"
    assert pvc["metadata"]["annotations"]["kaito-gitops.io/source"] == "workspaces/tuning-pvc.yaml"
    assert [m["manager"] for m in pvc["metadata"]["managedFields"]] == ["kaito-gitops"]
    assert pvc["spec"]["storageClassName"] == "azurefile-csi"
    # health comes from the live object: a bound claim says so
    assert {k: v.health for k, v in reports(d).items()} == {
        "pvc-azurefile-input": "Pending (not bound yet)",
        "pvc-azurefile-output": "Pending (not bound yet)",
    }
    kube_api.set_status("v1", "PersistentVolumeClaim", "default", "pvc-azurefile-input", {"phase": "Bound"})
    again = d.run_pass()
    assert again.writes == 0 and reports(d)["pvc-azurefile-input"].health == "Bound"
    # the file goes: all three go with it (a commit deleted it, so the empty repository may prune)
    git_remote.write({"workspaces/tuning-pvc.yaml": None}, "remove the tuning run")
    gone = d.run_pass()
    assert gone.removed == [("default", "workspace-tuning-phi-3")] and not gone.objects_held
    assert kube_api.objects("PersistentVolumeClaim") == [] and kube_api.objects("Job") == []


def test_render_writes_the_claims_beside_the_job(git_remote, tmp_path):
    git_remote.write({"workspaces/tuning-pvc.yaml": KAITO_PVC})
    out = tmp_path / "out"
    d = make(None, git_remote, tmp_path, target=RenderTarget(out))
    assert not d.run_pass().errors
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.yaml"))
    assert files == [
        "default/_objects/persistentvolumeclaim-pvc-azurefile-input.yaml",
        "default/_objects/persistentvolumeclaim-pvc-azurefile-output.yaml",
        "default/workspace-tuning-phi-3/configmap-workspace-tuning-phi-3-training-config.yaml",
        "default/workspace-tuning-phi-3/job-workspace-tuning-phi-3.yaml",
    ]
    assert d.run_pass().writes == 0
    git_remote.write({"workspaces/tuning-pvc.yaml": None}, "remove")
    d.run_pass()
    assert list(out.rglob("*.yaml")) == []


# -- order and waiting ----------------------------------------------------------------------


def test_namespaces_then_configuration_then_network_then_workloads_then_workspaces(
    kube_api, git_remote, tmp_path
):
    deploy = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: gateway, namespace: team}\nspec:\n"
        "  selector: {matchLabels: {app: gw}}\n  template:\n    metadata: {labels: {app: gw}}\n"
        "    spec: {containers: [{name: gw, image: nginx:1.27}]}\n"
    )
    objects = "---\n".join(
        [
            deploy,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: team}\n"
            "spec: {podSelector: {}}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: gw, namespace: team}\n"
            "spec: {selector: {app: gw}, ports: [{port: 80}]}\n",
            cm("settings", ns="team"),
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: runner, namespace: team}\n",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n",
        ]
    )
    git_remote.write({"workspaces/objects.yaml": objects, "workspaces/a.yaml": smol_ws("a")})
    kube_api.put_object(
        gpu_node("n-a", {"apps": "a", "kaito.sh/workspace": "a", "kaito.sh/workspacenamespace": "default"})
    )
    d = make(kube_api, git_remote, tmp_path, policy=kinds.ObjectPolicy.from_flags(["Namespace"], []))
    r = d.run_pass()
    assert not r.errors and r.object_writes == 6
    order = patch_kinds(kube_api)
    assert order == [
        "namespaces",
        "configmaps",
        "serviceaccounts",
        "networkpolicies",
        "services",
        "deployments",
        "services",  # the workspace's own objects come last
        "services",
        "statefulsets",
    ], order
    assert d.run_pass().writes == 0


def test_a_workspace_waits_without_nodes_or_pods_for_a_claim_that_is_not_there(
    kube_api, git_remote, tmp_path
):
    only_ws = KAITO_PVC.split("---\n")[2]
    git_remote.write({"workspaces/ws.yaml": only_ws})
    kube_api.put_object(PHI_NODE)
    d = make(kube_api, git_remote, tmp_path)
    for _ in range(2):  # not a crash loop: the same calm status every pass
        r = d.run_pass()
        assert not r.errors and r.writes == 0
    st = d.statuses[("default", "workspace-tuning-phi-3")]
    assert st.state == "Pending"
    cond = st.condition("ResourceReady")
    assert cond.status == "False" and cond.reason == "WaitingForObjects"
    assert "PersistentVolumeClaim default/pvc-azurefile-input (tuning.input.volumeSource" in cond.message
    assert "pvc-azurefile-output" in cond.message and kube_api.objects("Job") == []
    # someone creates the claims with kubectl: the workspace goes ahead on the next pass
    for doc in KAITO_PVC.split("---\n")[:2]:
        kube_api.put_object(yaml.safe_load(doc))
    r = d.run_pass()
    assert not r.errors and names(kube_api, "Job") == ["workspace-tuning-phi-3"]
    assert (
        d.statuses[("default", "workspace-tuning-phi-3")].condition("ResourceReady").reason
        != "WaitingForObjects"
    )


# -- safety ---------------------------------------------------------------------------------

SECRET = "apiVersion: v1\nkind: Secret\nmetadata: {name: hf}\nstringData: {HF_TOKEN: hf_s3cr3tvalue}\n"
ROLE = (
    "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: reader}\n"
    "rules: [{apiGroups: [''], resources: [pods], verbs: [get]}]\n"
)


def test_a_raw_secret_and_a_kind_not_allowed_are_refused_and_the_rest_applied(kube_api, git_remote, tmp_path):
    git_remote.write(
        {
            "workspaces/secret.yaml": SECRET,
            "workspaces/role.yaml": ROLE,
            "workspaces/cm.yaml": cm("fine"),
        }
    )
    d = make(kube_api, git_remote, tmp_path)
    with structlog.testing.capture_logs() as logged:
        r = d.run_pass()
        d.run_pass()  # the same revision: its invalid files are not logged again
    assert not r.errors
    assert names(kube_api, "ConfigMap") == ["fine"]
    assert kube_api.objects("Secret") == [] and kube_api.objects("Role") == []
    rep = reports(d)
    assert "workspaces/secret.yaml:2:7: error: kind:" in rep["hf"].error and "SealedSecret" in rep["hf"].error
    assert "--allow-kind Role.rbac.authorization.k8s.io" in rep["reader"].error
    invalid = sorted((e["file"], e["first_error"][:25]) for e in logged if e["event"] == "invalid file")
    assert invalid == [
        ("workspaces/role.yaml", "workspaces/role.yaml:2:7:"),
        ("workspaces/secret.yaml", "workspaces/secret.yaml:2:"),
    ], "each invalid file once per revision, with its first error"
    assert "hf_s3cr3tvalue" not in repr(logged) and "hf_s3cr3tvalue" not in json.dumps(
        [o.error for o in rep.values()]
    )
    # the operator allows Role: the same repository applies it (and still never the Secret)
    d2 = make(kube_api, git_remote, tmp_path / "2", policy=kinds.ObjectPolicy.from_flags(["Role"], []))
    d2.run_pass()
    assert names(kube_api, "Role") == ["reader"] and kube_api.objects("Secret") == []


def test_objects_in_namespaces_the_daemon_does_not_manage_are_refused(validate):
    rev = validate(
        {"a.yaml": cm("x", ns="kube-system") + "---\n" + cm("y", ns="team")},
        policy=kinds.ObjectPolicy.from_flags([], ["team"]),
    )
    [f] = [f for f in rev.findings if f.is_error]
    assert f.rule == "object-namespace-not-managed" and (f.line, f.col) == (5, 14)
    assert set(rev.valid_objects()) == {("ConfigMap", "team", "y")}
    rev = validate({"a.yaml": cm("x", ns="kube-system")})  # the default: everything but the system ones
    assert [f.rule for f in rev.findings] == ["object-namespace-not-managed"]


def test_moving_the_folder_away_does_not_prune_the_objects(kube_api, git_remote, tmp_path):
    git_remote.write(
        {"workspaces/cm.yaml": cm("keep-me"), "workspaces/pvc.yaml": KAITO_PVC.split("---\n")[0]}
    )
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    assert names(kube_api, "ConfigMap") == ["keep-me"]
    # a reorganisation moves the files outside the watched folder: nothing in git deletes them
    git_remote.write(
        {
            "workspaces/cm.yaml": None,
            "workspaces/pvc.yaml": None,
            "elsewhere/cm.yaml": cm("keep-me"),
            "elsewhere/pvc.yaml": KAITO_PVC.split("---\n")[0],
        },
        "move",
    )
    r = d.run_pass()
    assert sorted(r.objects_held) == [
        ("ConfigMap", "default", "keep-me"),
        ("PersistentVolumeClaim", "default", "pvc-azurefile-input"),
    ]
    assert names(kube_api, "ConfigMap") == ["keep-me"], "held, not pruned"
    # a daemon started without history cannot tell either; the operator says so explicitly
    assert make(kube_api, git_remote, tmp_path / "2").run_pass().objects_held
    assert names(kube_api, "PersistentVolumeClaim") == ["pvc-azurefile-input"]
    make(kube_api, git_remote, tmp_path / "3", allow_empty_prune=True).run_pass()
    assert kube_api.objects("ConfigMap") == [] and kube_api.objects("PersistentVolumeClaim") == []


def test_a_configmap_changed_out_of_band_is_restored(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/cm.yaml": cm("tuned", "from-git")})
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    core = client.CoreV1Api(client.ApiClient(kube_api.client_config()))
    core.patch_namespaced_config_map("tuned", "default", {"data": {"key": "edited"}})
    r = d.run_pass()
    assert r.writes == 1 and r.object_writes == 1
    assert kube_api.get_object("v1", "ConfigMap", "default", "tuned")["data"] == {"key": "from-git"}
    assert d.run_pass().writes == 0


# -- bad input -------------------------------------------------------------------------------


def test_bad_objects_are_errors_for_themselves_only(kube_api, git_remote, tmp_path):
    scaled = (
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: scaler}\n"
        "spec: {scaleTargetRef: {name: gateway}}\n"
    )
    files = {
        "workspaces/noid.yaml": "kind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n",
        "workspaces/noname.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {labels: {a: b}}\n",
        "workspaces/typo.yaml": "apiVersion: v1\nkind: ConfigMapp\nmetadata: {name: t}\n",
        "workspaces/scaled.yaml": scaled,
        "workspaces/one.yaml": cm("same", "1"),
        "workspaces/two.yaml": cm("same", "2"),
        "workspaces/pvc.yaml": "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: p}\n"
        "spec: {accessModes: ReadWriteOnce, resources: {requests: {storage: 1Gi}}}\n",
        "workspaces/good.yaml": cm("fine") + "---\n" + smol_ws("a"),
    }
    rev = validate_sources(encoded(files))
    errors = {(f.path, f.line, f.col, f.rule) for f in rev.findings if f.is_error}
    assert errors == {
        ("workspaces/noid.yaml", 1, 1, "object-identity"),
        ("workspaces/noname.yaml", 3, 1, "object-identity"),
        ("workspaces/typo.yaml", 2, 7, "object-kind-unknown"),
        ("workspaces/one.yaml", 4, 9, "object-duplicate"),
        ("workspaces/two.yaml", 4, 9, "object-duplicate"),
        ("workspaces/pvc.yaml", 4, 21, "schema-type"),
    }, sorted(errors)
    messages = {f.rule: f.message for f in rev.findings}
    assert "did you mean ConfigMap?" in messages["object-kind-unknown"]
    assert (
        "missing apiVersion" in messages["object-identity"] or "metadata.name" in messages["object-identity"]
    )
    assert "also defined in workspaces/" in messages["object-duplicate"]
    git_remote.write(files)
    kube_api.put_object(
        gpu_node("n-a", {"apps": "a", "kaito.sh/workspace": "a", "kaito.sh/workspacenamespace": "default"})
    )
    d = make(kube_api, git_remote, tmp_path)
    r = d.run_pass()
    assert not r.errors and names(kube_api, "StatefulSet") == ["a"], "the workspace is untouched"
    assert names(kube_api, "ConfigMap") == ["fine"] and kube_api.objects("PersistentVolumeClaim") == []
    rep = reports(d)
    assert (
        "does not serve ScaledObject.keda.sh" in rep["scaler"].error
        and "CustomResourceDefinition" in rep["scaler"].error
    )
    assert "also defined in" in rep["same"].error
    # KEDA gets installed: the next pass applies it, nothing else is written
    kube_api.add_resource(SCALED_OBJECT)
    r = d.run_pass()
    assert r.writes == 1 and names(kube_api, "ScaledObject") == ["scaler"] and not reports(d)["scaler"].error


def test_a_kind_defined_by_a_crd_in_the_repository_or_allowed_by_the_operator_is_accepted(validate):
    crd = (
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.acme.io}\n"
        "spec:\n  group: acme.io\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets}\n"
        "  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]\n"
    )
    widget = "apiVersion: acme.io/v1\nkind: Widget\nmetadata: {name: w}\n"
    rev = validate({"w.yaml": widget})
    assert [f.rule for f in rev.findings] == ["object-kind-unknown"]
    rev = validate({"w.yaml": widget}, policy=kinds.ObjectPolicy.from_flags(["Widget.acme.io"], []))
    assert rev.findings == [] and set(rev.valid_objects()) == {("Widget.acme.io", "default", "w")}
    # a CRD is cluster-scoped: it needs the operator's word; its kinds then come with it
    rev = validate({"crd.yaml": crd, "w.yaml": widget})
    assert [f.rule for f in rev.findings] == ["object-kind-not-allowed"]
    policy = kinds.ObjectPolicy.from_flags(["CustomResourceDefinition"], [])
    rev = validate({"crd.yaml": crd, "w.yaml": widget}, policy=policy)
    assert rev.findings == [] and len(rev.valid_objects()) == 2


def test_sealed_secrets_stand_in_for_the_secret_a_workspace_names(kube_api, git_remote, tmp_path, validate):
    sealed = (
        "apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata: {name: push}\n"
        "spec: {encryptedData: {.dockerconfigjson: AgBy3i4OJSWK+PiTySYZZA==}}\n"
    )
    tune = (
        "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: t}\nresource:\n  instanceType: "
        "Standard_NC24ads_A100_v4\n  labelSelector: {matchLabels: {apps: t}}\ntuning:\n  preset: {name: "
        "phi-3-mini-128k-instruct}\n  method: qlora\n  input: {urls: ['https://example.com/d.parquet']}\n"
        "  output: {image: 'registry.example.com/a/t:1', imagePushSecret: push}\n"
    )
    assert [f.rule for f in validate({"t.yaml": tune}).findings] == ["object-reference-missing"]
    assert validate({"t.yaml": tune, "s.yaml": sealed}).findings == []
    kube_api.add_resource(SEALED_SECRET)
    kube_api.put_object(node_for("t"))
    git_remote.write({"workspaces/t.yaml": tune, "workspaces/s.yaml": sealed})
    d = make(kube_api, git_remote, tmp_path)
    assert not d.run_pass().errors
    assert names(kube_api, "SealedSecret") == ["push"] and names(kube_api, "Job") == ["t"]


# -- plans and pull requests -------------------------------------------------------------------


def test_the_plan_and_the_pull_request_comment_show_each_object_change_with_a_diff():
    base = validate_sources(encoded({"w/cm.yaml": cm("tuned", "old"), "w/gone.yaml": cm("gone")}))
    head = validate_sources(
        encoded({"w/cm.yaml": cm("tuned", "new"), "w/pvc.yaml": KAITO_PVC.split("---\n")[0]})
    )
    diff = diff_states(plan_revision(base), plan_revision(head))
    actions = {(c.key[2], c.action) for c in diff.objects}
    assert actions == {("tuned", "update"), ("gone", "delete"), ("pvc-azurefile-input", "create")}
    [change] = [c for c in diff.objects if c.action == "update"]
    assert "-  key: old\n+  key: new\n" in change.diff and "object-hash" not in change.diff
    shown = text(diff)
    assert "Other objects: 1 to create, 1 to change, 1 to delete" in shown
    assert (
        "~ ConfigMap default/tuned  (w/cm.yaml)" in shown
        and "+ PersistentVolumeClaim default/pvc-azurefile-input" in shown
    )
    body = comment_body(
        diff, head.findings, repo_html="https://github.com/o/r", head_sha="a" * 40, base_ref="main"
    )
    assert "Other objects: 1 created, 1 updated, 1 deleted" in body
    assert (
        "`~ ConfigMap default/tuned` (`w/cm.yaml`)" in body
        and "```diff" in body
        and "  +  key: new\n" in body
    )
    data = json.loads(as_json(diff))
    assert {o["name"]: o["action"] for o in data["objects"]} == {
        "gone": "delete",
        "pvc-azurefile-input": "create",
        "tuned": "update",
    }


# -- the local target -----------------------------------------------------------------------------


def test_locally_a_claim_is_a_folder_a_configmap_files_and_other_kinds_not_applicable(tmp_path):
    files = {
        "w/tuning-pvc.yaml": KAITO_PVC,
        "w/cm.yaml": cm("settings", "abc"),
        "w/np.yaml": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: {}}\n",
    }
    rev = validate_sources(encoded(files), target="local")
    state = plan_revision(rev)
    target = LocalTarget(tmp_path / "state")
    try:
        res = target.apply_objects(state.objects, set(), prune=True)
        assert res.writes == 3 and not res.errors
        assert res.health[("NetworkPolicy.networking.k8s.io", "default", "np")] == "not applicable locally"
        claim = tmp_path / "state" / "_volumes" / "default" / "pvc-azurefile-input"
        assert claim.is_dir()
        assert (tmp_path / "state" / "_configmaps" / "default" / "settings" / "key").read_text() == "abc"
        assert target.apply_objects(state.objects, set(), prune=True).writes == 0
        # the tuning run reads its data from the input claim's folder and writes to the output's
        plan = state.plans[("default", "workspace-tuning-phi-3")]
        steps = target._workload(plan, "sig", None).steps
        cmd = steps[-1]
        assert cmd[cmd.index("--data-dir") + 1] == str(claim)
        assert cmd[cmd.index("--output-dir") + 1] == str(claim.parent / "pvc-azurefile-output")
        refs = references(plan.workspace)
        assert target.missing(refs) == []
        # the file goes: its claim folders and the ConfigMap's go with it; held ones stay
        held = {("ConfigMap", "default", "settings")}
        res = target.apply_objects({}, held, prune=True)
        assert sorted(res.deleted) == [
            "PersistentVolumeClaim default/pvc-azurefile-input",
            "PersistentVolumeClaim default/pvc-azurefile-output",
        ]
        assert not claim.exists() and [r.name for r in target.missing(refs)] == [
            "pvc-azurefile-input",
            "pvc-azurefile-output",
        ]
    finally:
        target.close()


@pytest.mark.parametrize(("version", "known"), [("1.29", False), ("1.30", True), ("v1.37", True)])
def test_object_schemas_follow_the_repository_kubernetes_version(validate, version, known):
    """Service.spec.trafficDistribution arrived in Kubernetes 1.30: older clusters reject it."""
    settings = f"kubernetesVersion: '{version}'\n"
    svc = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
        "spec:\n  ports: [{port: 80}]\n  trafficDistribution: PreferClose\n"
    )
    rev = validate({".kaito-gitops.yaml": settings, "s.yaml": svc})
    assert rev.kubernetes_version == version.removeprefix("v")
    found = [(f.path, f.line, f.col, f.rule) for f in rev.findings]
    if known:
        assert found == [] and set(rev.valid_objects()) == {("Service", "default", "s")}
    else:
        assert found == [("s.yaml", 6, 3, "schema-unknown-field")] and not rev.valid_objects()
        assert "trafficDistribution" in rev.findings[0].message


def test_validate_checks_objects_as_the_daemon_with_the_same_flags_would(tmp_path, capsys):
    from reconciler.cli import main

    (tmp_path / "role.yaml").write_text(ROLE)
    (tmp_path / "pvc.yaml").write_text(KAITO_PVC)
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "role.yaml:2:7: error: kind: Role.rbac.authorization.k8s.io is RBAC" in out
    assert main(["validate", str(tmp_path), "--allow-kind", "Role"]) == 0
    assert main(["validate", str(tmp_path), "--managed-namespace", "llm"]) == 1
    out = capsys.readouterr().out
    assert "pvc.yaml:4:3: error: metadata: namespace default is not managed by this daemon" in out


def test_status_md_lists_each_object_with_its_health_or_its_error(kube_api, git_remote, tmp_path):
    from reconciler.report.statusview import status_files

    git_remote.write({"workspaces/pvc.yaml": KAITO_PVC.split("---\n")[0], "workspaces/secret.yaml": SECRET})
    d = make(kube_api, git_remote, tmp_path)
    r = d.run_pass()
    md = status_files(r.reports, d.revision, r.objects)["STATUS.md"]
    assert "## Other objects" in md
    assert (
        "| PersistentVolumeClaim default/pvc-azurefile-input | workspaces/pvc.yaml | Pending (not bound yet) |"
        in md
    )
    assert "| Secret default/hf | workspaces/secret.yaml | - | revision " in md and "SealedSecret" in md
    assert "hf_s3cr3tvalue" not in md


def test_locally_a_secret_is_a_folder_the_user_makes_and_workloads_read_it(tmp_path):
    tune = (
        "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: t}\nresource:\n  instanceType: "
        "Standard_NC24ads_A100_v4\n  labelSelector: {matchLabels: {apps: t}}\ntuning:\n  preset:\n    name: "
        "phi-3-mini-128k-instruct\n    presetOptions: {modelAccessSecret: hf}\n  method: qlora\n"
        "  input: {urls: ['https://example.com/d.parquet']}\n"
        "  output: {image: 'registry.example.com/a/t:1', imagePushSecret: push}\n"
    )
    state = plan_revision(validate_sources(encoded({"t.yaml": tune}), target="local"))
    plan = state.plans[("default", "t")]
    target = LocalTarget(tmp_path / "state", docker_config="")
    try:
        w = target._workload(plan, "sig", None)
        assert "--push-image" not in w.steps[-1] and "HF_TOKEN" not in w.env
        assert "_secrets/default/push/.dockerconfigjson" in target._notes[("default", "t")][0]
        for name, key, value in (
            ("push", ".dockerconfigjson", '{"auths": {}}'),
            ("hf", "HF_TOKEN", "hf_abc\n"),
        ):
            path = tmp_path / "state" / "_secrets" / "default" / name / key
            path.parent.mkdir(parents=True)
            path.write_text(value)
        w = target._workload(plan, "sig", None)
        cmd = w.steps[-1]
        assert cmd[cmd.index("--docker-config") + 1] == str(
            tmp_path / "state/_secrets/default/push/.dockerconfigjson"
        )
        assert w.env["HF_TOKEN"] == "hf_abc" and target._notes[("default", "t")] == []
    finally:
        target.close()


def test_a_kind_that_cannot_be_listed_is_an_error_for_its_objects_and_nothing_of_it_is_pruned(
    kube_api, git_remote, tmp_path
):
    sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: runner}\n"
    git_remote.write({"workspaces/sa.yaml": sa, "workspaces/cm.yaml": cm("fine")})
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    git_remote.write({"workspaces/sa.yaml": None}, "drop the service account")
    kube_api.fail_next(1, 403, methods=["GET"], path_contains="/serviceaccounts")
    r = d.run_pass()
    assert not r.errors and names(kube_api, "ServiceAccount") == ["runner"], "not pruned while unknown"
    kube_api.fail_next(1, 403, methods=["GET"], path_contains="/serviceaccounts")
    git_remote.write({"workspaces/sa.yaml": sa}, "back")
    d.run_pass()
    assert "cannot list ServiceAccount" in reports(d)["runner"].error
    assert not reports(d)["fine"].error
    git_remote.write({"workspaces/sa.yaml": None}, "drop it again")
    d.run_pass()  # listed again: pruned as usual
    assert kube_api.objects("ServiceAccount") == []


@pytest.mark.parametrize(
    ("kind", "status", "word"),
    [
        ("PersistentVolumeClaim", {"phase": "Bound"}, "Bound"),
        ("PersistentVolumeClaim", {"phase": "Lost"}, "Lost (not bound yet)"),
        ("Deployment.apps", {"conditions": [{"type": "Available", "status": "True"}]}, "Available"),
        ("Deployment.apps", {"conditions": [{"type": "Available", "status": "False"}]}, "Progressing"),
        (
            "CustomResourceDefinition.apiextensions.k8s.io",
            {"conditions": [{"type": "Established", "status": "True"}]},
            "Established",
        ),
        ("CustomResourceDefinition.apiextensions.k8s.io", {}, "NotEstablished"),
        ("ConfigMap", {}, "Applied"),
        ("Widget.acme.io", {"phase": "whatever"}, "Applied"),
    ],
)
def test_health_words(kind, status, word):
    from reconciler.targets.kube_objects import health

    assert health(kind, {"status": status}) == word


def test_a_sops_encrypted_secret_is_left_alone_with_a_warning(validate):
    sops = (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: hf}\nstringData:\n  HF_TOKEN: ENC[AES256_GCM,data:abc=]\n"
        "sops:\n  version: 3.9.0\n  age: [{recipient: age1xyz}]\n"
    )
    rev = validate({"s.yaml": sops})
    [f] = rev.findings
    assert (f.rule, f.is_error, f.line, f.col) == ("document-ignored", False, 6, 1) and "SOPS" in f.message
    assert not rev.objects


def test_without_kubernetes_schemas_validate_says_it_did_not_check_them(validate, monkeypatch):
    from reconciler.validation import objects as object_rules

    monkeypatch.setattr(object_rules, "schemas_available", lambda: False)  # as on a base install
    rev = validate({"a.yaml": cm("one"), "b.yaml": cm("two")})
    [f] = rev.findings
    assert f.rule == "object-schema-unchecked" and not f.is_error and "kaito-gitops[schemas]" in f.message
    assert len(rev.valid_objects()) == 2
