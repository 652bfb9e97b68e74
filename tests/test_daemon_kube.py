"""The daemon against a real git remote and the Kubernetes API double, through the official client.

Covers server-side apply, zero-write passes, drift, prune, API faults, restarts, status from
observed pods/nodes, the AKS provisioner end to end, and leader election.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from doubles.kube_fixtures import gpu_node, workspace_node
from kubernetes import client
from support.net import http_status
from support.serving import serving
from support.wait import run_passes_until, wait_until
from support.webhooks import deliver
from support.workspaces import smol_ws

from reconciler.daemon import Daemon, DaemonSettings
from reconciler.leader import LeaseElector
from reconciler.provisioners.none import NoneProvisioner
from reconciler.render.common import RenderSettings
from reconciler.source.git import GitSource
from reconciler.targets.kubernetes import KubernetesTarget

ROOT = Path(__file__).resolve().parent.parent
TUNE = (ROOT / "example-repo" / "workspaces" / "tuning-phi-3.yaml").read_text()


def make(kube, remote, tmp_path, provisioner=None, render=None, **kw):
    api = client.ApiClient(kube.client_config())
    target = KubernetesTarget(api, timeout=(2, 2))
    settings = DaemonSettings(paths=["workspaces"], workers=4, backoff_min=0.05, backoff_max=0.2, **kw)
    return Daemon(
        GitSource(remote.url, "main", tmp_path / "cache"),
        target,
        provisioner or NoneProvisioner(),
        settings,
        render,
    )


def names(kube, kind):
    return sorted(o["metadata"]["name"] for o in kube.objects(kind))


def test_apply_then_a_pass_without_changes_writes_nothing(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a"), "workspaces/t.yaml": TUNE})
    kube_api.put_object(workspace_node("a"))
    kube_api.put_object(workspace_node("tuning-phi-3", "llm", name="node-t"))
    d = make(kube_api, git_remote, tmp_path)
    r = d.run_pass()
    assert not r.errors and r.writes == 5
    applies = [q for q in kube_api.requests if q.method == "PATCH"]
    assert all(
        q.content_type.startswith("application/apply-patch") and q.query.get("fieldManager") == "kaito-gitops"
        for q in applies
    )
    order = [q.path.split("/")[-2] for q in applies if "/default/" in q.path]
    assert order == ["services", "services", "statefulsets"], "config, then services, then the workload"
    assert names(kube_api, "StatefulSet") == ["a"] and names(kube_api, "Job") == ["tuning-phi-3"]
    sts = kube_api.get_object("apps/v1", "StatefulSet", "default", "a")
    assert sts["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kaito-gitops"
    before = kube_api.write_count()
    for _ in range(3):
        assert d.run_pass().writes == 0
    assert kube_api.write_count() == before, "an unchanged repository costs zero writes"


def test_drift_is_restored_and_removed_files_are_pruned(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a"), "workspaces/b.yaml": smol_ws("b")})
    kube_api.put_object(workspace_node("a"))
    kube_api.put_object(workspace_node("b"))
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    # someone deletes a managed object, someone else edits one with kubectl
    kube_api.delete_object("apps/v1", "StatefulSet", "default", "a")
    apps = client.AppsV1Api(client.ApiClient(kube_api.client_config()))
    apps.patch_namespaced_stateful_set(
        "b",
        "default",
        {"spec": {"replicas": 5}},
        field_manager="kubectl",
        _content_type="application/merge-patch+json",
        _preload_content=False,
    )
    r = d.run_pass()
    assert r.writes == 2
    assert kube_api.get_object("apps/v1", "StatefulSet", "default", "a") is not None
    assert kube_api.get_object("apps/v1", "StatefulSet", "default", "b")["spec"]["replicas"] == 1
    # prune: the file goes, its objects go
    git_remote.write({"workspaces/b.yaml": None}, "remove b")
    r = d.run_pass()
    assert r.removed == [("default", "b")]
    assert names(kube_api, "StatefulSet") == ["a"] and "b" not in names(kube_api, "Service")
    metrics = d.metrics.text().decode()
    assert 'workspace="a"' in metrics and 'workspace="b"' not in metrics, "a removed workspace's series go"


def test_zero_workspaces_never_prunes_everything_without_the_flag(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    kube_api.put_object(workspace_node("a"))
    make(kube_api, git_remote, tmp_path).run_pass()
    git_remote.write({"workspaces/a.yaml": None, "workspaces/.keep": ""}, "oops, everything moved")
    r = make(kube_api, git_remote, tmp_path).run_pass()
    assert not r.removed and ("default", "a") in r.held
    assert names(kube_api, "StatefulSet") == ["a"]


def test_api_errors_back_off_one_workspace_and_the_rest_converge(kube_api, git_remote, tmp_path):
    git_remote.write({f"workspaces/w{i}.yaml": smol_ws(f"w{i}") for i in range(4)})
    for i in range(4):
        kube_api.put_object(workspace_node(f"w{i}"))
    d = make(kube_api, git_remote, tmp_path)
    kube_api.fail_next(3, status=500, methods=["PATCH"], path_contains="statefulsets/w2")
    r = d.run_pass()
    assert list(r.errors) == [("default", "w2")] and "Kubernetes API 500" in r.errors[("default", "w2")]
    assert names(kube_api, "StatefulSet") == ["w0", "w1", "w3"]
    assert d.reports()[2].status.last_error.startswith("Kubernetes API 500")
    run_passes_until(d, lambda: "w2" in names(kube_api, "StatefulSet"), what="w2 after its backoff", step=0.1)
    assert names(kube_api, "StatefulSet") == ["w0", "w1", "w2", "w3"]


def test_api_down_or_slow_keeps_health_and_converges_afterwards(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    kube_api.put_object(workspace_node("a"))
    d = make(kube_api, git_remote, tmp_path, interval=0.1)
    errors: list[str] = []  # every workspace error of every pass
    d.on_pass.append(lambda _d, result: errors.extend(result.errors.values()))
    kube_api.set_available(False)
    with serving(d) as url:
        wait_until(lambda: d._global_failures >= 2, what="passes failing while the API is down")
        assert http_status(url + "/healthz") == 200, "the daemon stays healthy while the API is down"
        assert http_status(url + "/readyz") == 503, "not ready before a pass has completed"
        assert not names(kube_api, "StatefulSet") and not errors
        # the workload's apply answers after 3 s; the client gives up after 2 (a PATCH is not retried)
        kube_api.set_latency(3, path_contains="statefulsets/a")
        kube_api.set_available(True)
        wait_until(
            lambda: any("Read timed out" in e for e in errors), what=lambda: f"a read timeout in {errors}"
        )
        kube_api.set_latency(0)
        wait_until(lambda: names(kube_api, "StatefulSet") == ["a"], what="the workload after the slow API")
        assert http_status(url + "/readyz") == 200


def test_git_remote_down_keeps_health_and_objects_then_converges(kube_api, git_remote, tmp_path):
    """An unreachable remote is not an empty repository: nothing is pruned while it is gone."""
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    kube_api.put_object(workspace_node("a"))
    kube_api.put_object(workspace_node("b"))
    d = make(kube_api, git_remote, tmp_path, interval=0.1)
    with serving(d) as url:
        wait_until(lambda: names(kube_api, "StatefulSet") == ["a"], what="the first apply")
        git_remote.daemon.stop()
        git_remote.write(
            {"workspaces/b.yaml": smol_ws("b")}
        )  # pushed to the bare repo while it is unreachable
        wait_until(lambda: d._global_failures >= 2, what="fetches failing while git is down")
        assert http_status(url + "/healthz") == 200, "the daemon stays healthy while git is down"
        assert d.metrics.fetch_failures._value.get() >= 2
        assert names(kube_api, "StatefulSet") == ["a"], "nothing pruned or changed while the remote is gone"
        git_remote.daemon.start()  # same port: --reuseaddr
        wait_until(lambda: names(kube_api, "StatefulSet") == ["a", "b"], what="b after git is back")
        assert d.revision == git_remote.head()


def test_killed_mid_pass_and_restarted_converges_without_duplicates(kube_api, git_remote, tmp_path):
    git_remote.write({f"workspaces/w{i}.yaml": smol_ws(f"w{i}") for i in range(3)})
    for i in range(3):
        kube_api.put_object(workspace_node(f"w{i}"))
    # the process "dies" after the services: every workload write fails, then it is gone
    kube_api.fail_next(3, status=500, methods=["PATCH"], path_contains="statefulsets")
    make(kube_api, git_remote, tmp_path).run_pass()
    assert names(kube_api, "StatefulSet") == [] and len(names(kube_api, "Service")) == 6
    fresh = make(kube_api, git_remote, tmp_path)  # a new process: nothing in memory
    run_passes_until(fresh, lambda: len(names(kube_api, "StatefulSet")) == 3, what="every workload")
    assert names(kube_api, "StatefulSet") == ["w0", "w1", "w2"]
    assert len(names(kube_api, "Service")) == 6, "no duplicates"


def test_status_conditions_follow_pods_and_nodes(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    [rep] = d.reports()
    assert rep.status.condition("ResourceReady").reason == "NodeNotFound" and rep.status.state == "Pending"
    kube_api.put_object(workspace_node("a", gpus=0))  # the GPU device plugin has not reported yet
    d.run_pass()
    assert d.reports()[0].status.condition("ResourceReady").reason == "NodePluginsNotReady"
    kube_api.put_object(workspace_node("a"))
    d.run_pass()
    kube_api.reconcile_workloads()
    d.run_pass()
    s = d.reports()[0].status
    assert (
        s.condition("ResourceReady").status == "True"
        and s.condition("InferenceReady").reason == "WorkspaceInferenceStatusPending"
    )
    pod = kube_api.get_object("v1", "Pod", "default", "a-0")
    assert pod is not None
    # the model server runs out of memory
    kube_api.set_status(
        "v1",
        "Pod",
        "default",
        "a-0",
        {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "a",
                    "ready": False,
                    "restartCount": 3,
                    "image": "x",
                    "imageID": "",
                    "containerID": "c",
                    "state": {
                        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}
                    },
                    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                }
            ],
        },
    )
    d.run_pass()
    s = d.reports()[0].status
    assert s.condition("InferenceReady").reason == "ContainerOOMKilled" and s.state == "NotReady"
    kube_api.set_pod_phase("default", "a-0", "Running")
    kube_api.reconcile_workloads()
    d.run_pass()
    s = d.reports()[0].status
    assert s.condition("InferenceReady").status == "True" and s.state == "Ready"
    assert s.endpoint == "http://a.default.svc.cluster.local"
    first = s.condition("InferenceReady").last_transition_time
    d.run_pass()
    assert d.reports()[0].status.condition("InferenceReady").last_transition_time == first


def test_unschedulable_and_image_pull_reasons(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    kube_api.put_object(workspace_node("a"))
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    kube_api.reconcile_workloads()
    kube_api.set_status(
        "v1",
        "Pod",
        "default",
        "a-0",
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    )
    d.run_pass()
    c = d.reports()[0].status.condition("InferenceReady")
    assert c.reason == "Unschedulable" and "Insufficient nvidia.com/gpu" in c.message
    kube_api.set_status(
        "v1",
        "Pod",
        "default",
        "a-0",
        {
            "phase": "Pending",
            "initContainerStatuses": [],
            "containerStatuses": [
                {
                    "name": "a",
                    "ready": False,
                    "restartCount": 0,
                    "image": "x",
                    "imageID": "",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}},
                }
            ],
        },
    )
    d.run_pass()
    c = d.reports()[0].status.condition("InferenceReady")
    assert c.reason == "ImagePullError" and "pull access denied" in c.message


def test_tuning_job_lifecycle(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/t.yaml": TUNE})
    kube_api.put_object(workspace_node("tuning-phi-3", "llm", name="node-t"))
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    assert d.reports()[0].status.state == "Pending"
    kube_api.reconcile_workloads()
    pods = [p["metadata"]["name"] for p in kube_api.objects("Pod")]
    kube_api.set_pod_phase("llm", pods[0], "Running")
    kube_api.reconcile_workloads()
    # the trainer logs its progress as JSON lines (runtime/progress.py); the daemon reads the newest
    kube_api.set_pod_log(
        "llm",
        pods[0],
        "\n".join(
            [
                '{"event": "phase", "phase": "training", "step": 0, "total_steps": 400}',
                '{"event": "progress", "state": "Running", "step": 120, "total_steps": 400, "loss": 1.234, '
                '"epoch": 0.9, "eta_seconds": 611, "learning_rate": 0.0002}',
                "some other line",
            ]
        )
        + "\n",
        container="tuning-phi-3",
    )
    d.run_pass()
    s = d.reports()[0].status
    assert s.state == "Running" and s.condition("JobStarted").status == "True"
    assert (s.progress.step, s.progress.total_steps, s.progress.loss) == (120, 400, 1.234)
    assert "step 120/400" in s.condition("WorkspaceSucceeded").message
    job = kube_api.get_object("batch/v1", "Job", "llm", "tuning-phi-3")
    kube_api.set_status(
        "batch/v1", "Job", "llm", "tuning-phi-3", {**(job.get("status") or {}), "active": 0, "succeeded": 1}
    )
    d.run_pass()
    s = d.reports()[0].status
    assert s.state == "Succeeded" and s.condition("WorkspaceSucceeded").status == "True"


def metrics_text(d) -> str:
    from prometheus_client import generate_latest

    return generate_latest(d.metrics.registry).decode()


def test_aks_nodes_then_workload_and_quota_in_status(kube_api, git_remote, tmp_path):
    from doubles.arm import ArmDouble, quota_exceeded

    from reconciler.daemon import spend
    from reconciler.provisioners.aks import AksProvisioner
    from reconciler.report.statusview import status_files

    git_remote.write({"workspaces/a.yaml": smol_ws("a"), "workspaces/b.yaml": smol_ws("b")})
    with ArmDouble(tmp_path / "arm", auto_advance=False) as arm:

        def pool_ready(pool):  # AKS brings nodes up with the pool's labels; the GPU plugin reports GPUs
            props = pool["properties"]
            for i in range(props["count"]):
                kube_api.put_object(gpu_node(f"aks-{pool['name']}-{i}", props["nodeLabels"]))

        arm.on_pool_ready(pool_ready)
        arm.fail_next(
            quota_exceeded(limit=24, usage=20, required=36), method="PUT"
        )  # the first pool hits quota
        prov = AksProvisioner(arm.client(), arm.resource_group, arm.cluster)
        d = make(kube_api, git_remote, tmp_path, provisioner=prov)
        d.run_pass()
        reports = {r.key[1]: r for r in d.reports()}
        quota = [r for r in reports.values() if r.status.condition("ResourceReady").reason == "QuotaExceeded"]
        creating = [
            r
            for r in reports.values()
            if r.status.condition("ResourceReady").reason == "AgentPoolProvisioning"
        ]
        assert len(quota) == 1 and len(creating) == 1
        assert "in use 20, this pool needs 36 more" in quota[0].status.condition("ResourceReady").message
        assert not names(kube_api, "StatefulSet"), "no workload before its nodes"
        ok = creating[0].key[1]
        pool = next(
            n
            for n, p in arm.pools().items()
            if p["properties"].get("tags", {}).get("kaito-gitops.workspace") == f"default/{ok}"
        )
        arm.advance(pool)
        r = d.run_pass()
        assert names(kube_api, "StatefulSet") == [ok]
        assert {r.key[1]: r.status.condition("ResourceReady").status for r in d.reports()}[ok] == "True"
        # spend: the one pool that exists, at its list price; the one refused for quota costs nothing
        assert spend(r.reports) == {"default": (1, 3.2)}
        assert "| default | 1 | $3.20 | $2,336 |" in status_files(r.reports, r.revision)["STATUS.md"]
        assert 'kaito_gitops_spend_dollars_per_hour{namespace="default"} 3.2' in metrics_text(d)
        # removing the workspace removes its workload, then its pool: billed until the pool is gone
        git_remote.write({f"workspaces/{ok}.yaml": None}, "remove")
        r = d.run_pass()
        assert not names(kube_api, "StatefulSet")
        assert arm.pool(pool)["properties"]["provisioningState"] == "Deleting"
        assert spend(r.reports) == {"default": (1, 3.2)}
        arm.advance(pool)
        r = d.run_pass()
        assert arm.pool(pool) is None and ("default", ok) in r.removed
        d.run_pass()
        assert spend(d.last_pass.reports) == {}
        assert "kaito_gitops_spend_dollars_per_hour{" not in metrics_text(d)


def test_one_leader_at_a_time(kube_api):
    a_api, b_api = client.ApiClient(kube_api.client_config()), client.ApiClient(kube_api.client_config())
    a = LeaseElector(a_api, "kaito-system", "kaito-gitops-leader", "a", lease_seconds=2)
    b = LeaseElector(b_api, "kaito-system", "kaito-gitops-leader", "b", lease_seconds=2)
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    assert a.try_acquire() is True, "the holder renews"
    a.release()
    assert b.try_acquire() is True and a.try_acquire() is False
    lease = kube_api.get_object("coordination.k8s.io/v1", "Lease", "kaito-system", "kaito-gitops-leader")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] >= 1
    time.sleep(2.2)  # b stops renewing: its lease expires
    assert a.try_acquire() is True


def test_a_leader_stuck_renewing_stops_leading_when_its_lease_runs_out(kube_api):
    api = client.ApiClient(kube_api.client_config())
    a = LeaseElector(api, "kaito-system", "kaito-gitops-leader", "a", lease_seconds=1, renew_every=0.1)
    a.start()
    try:
        wait_until(a.is_leader, 5, "the lease")
        kube_api.set_latency(4, path_contains="/leases/")  # every renewal now hangs for 4 s
        time.sleep(1.5)
        assert not a.is_leader(), "still acting 1.5 s into a 1 s lease it could not renew"
        kube_api.set_latency(0)
        wait_until(a.is_leader, 10, "the lease again")
    finally:
        kube_api.set_latency(0)
        a.stop()


def test_webhook_push_is_applied_in_one_pass(kube_api, git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    kube_api.put_object(workspace_node("a"))
    kube_api.put_object(workspace_node("b"))
    d = make(kube_api, git_remote, tmp_path, interval=3600)
    secret = b"hook"
    with serving(d, secret=secret) as url:
        wait_until(lambda: d.last_pass is not None, 10, "the first pass")
        passes = d.metrics.pass_seconds._sum.get()
        sha = git_remote.write({"workspaces/b.yaml": smol_ws("b")}, "add b")
        body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
        other_branch = json.dumps({"ref": "refs/heads/feature", "after": sha}).encode()
        assert deliver(url + "/webhook", body, "push", None) == 401
        assert deliver(url + "/webhook", other_branch, "push", secret) == 202
        time.sleep(0.3)
        assert "b" not in names(kube_api, "StatefulSet")
        assert d.metrics.pass_seconds._sum.get() == passes, (
            "an unsigned push or another branch's runs no pass"
        )
        assert deliver(url + "/webhook", body, "push", secret) == 202
        wait_until(lambda: "b" in names(kube_api, "StatefulSet"), 10, "b after the webhook", step=0.01)
        # the object lands mid-pass; the pass finishes just after
        wait_until(lambda: d.metrics.pass_seconds._sum.get() > passes, 10, "the pass to finish", step=0.01)


def test_bring_your_own_nodes_are_sized_from_their_gpu_labels(kube_api, git_remote, tmp_path):
    byo = (
        (ROOT / "tests" / "fixtures" / "workspaces" / "byo-nodes.yaml")
        .read_text()
        .replace("  config: cluster-only-config\n", "")
    )
    git_remote.write({"workspaces/byo.yaml": byo})
    kube_api.put_object(gpu_node("gpu-a", {"pool": "gpu-a100"}, gpus=4))
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    c = d.reports()[0].status.condition("ResourceReady")
    assert c.reason == "NodeGPULabelsMissing" and "nvidia.com/gpu.product" in c.message
    assert not names(kube_api, "StatefulSet"), "nothing runs on nodes that cannot be sized"
    gfd = {
        "pool": "gpu-a100",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "nvidia.com/gpu.count": "4",
        "nvidia.com/gpu.memory": "81920",
        "nvidia.com/cuda.compute.major": "8",
        "nvidia.com/cuda.compute.minor": "0",
    }
    kube_api.put_object(gpu_node("gpu-a", gfd, gpus=4))
    d.run_pass()
    sts = kube_api.get_object("apps/v1", "StatefulSet", "default", "phi-4-byo")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    cmd = container["command"]
    assert cmd[cmd.index("--dp-size") + 1] == "4" and cmd[cmd.index("--dtype") + 1] == "bfloat16"
    assert d.reports()[0].status.condition("ResourceReady").status == "True"
    assert d.run_pass().writes == 0, "sizing from the same labels again changes nothing"


def test_your_own_nodes_need_only_the_label_selector_and_instance_type_is_a_hint(
    kube_api, git_remote, tmp_path
):
    """As `kaito-gitops run --provisioner none` sets it up (deploy/overlays/byo-nodes)."""
    phi = (ROOT / "example-repo" / "workspaces" / "inference-phi-3.yaml").read_text()
    placeholder = (
        phi.replace("name: phi-3-mini\n", "name: phi-3-any\n", 1)
        .replace("Standard_NC24ads_A100_v4", "<your-vm-sku>")
        .replace("phi-3-serving", "phi-3-any-serving")  # each file's ConfigMap is its own object
    )
    git_remote.write({"workspaces/phi.yaml": phi, "workspaces/any.yaml": placeholder})
    kube_api.put_object(gpu_node("mine-1", {"apps": "phi-3-mini"}))  # the user's node: no kaito.sh labels
    d = make(kube_api, git_remote, tmp_path, render=RenderSettings(byo_nodes=True))
    d.run_pass()
    by_name = {r.key[1]: r for r in d.reports()}
    assert by_name["phi-3-mini"].status.condition("ResourceReady").status == "True"
    assert not by_name["phi-3-any"].errors, "a placeholder size is a warning with your own nodes"
    assert by_name["phi-3-any"].status.condition("ResourceReady").reason == "NodeGPULabelsMissing"
    sts = kube_api.get_object("apps/v1", "StatefulSet", "llm", "phi-3-mini")
    terms = sts["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert [e["key"] for e in terms[0]["matchExpressions"]] == ["apps"]
    assert "phi-3-any" not in names(kube_api, "StatefulSet"), (
        "unsized until the nodes say what GPUs they have"
    )


def test_a_push_rewrites_only_the_changed_byo_workspace(kube_api, git_remote, tmp_path):
    """Sizing from node labels must not stamp every workspace with the new revision on each push."""
    byo = (ROOT / "tests" / "fixtures" / "workspaces" / "byo-nodes.yaml").read_text()
    byo = byo.replace("  config: cluster-only-config\n", "")
    files = {f"workspaces/w{i}.yaml": byo.replace("name: phi-4-byo", f"name: w{i}") for i in range(3)}
    git_remote.write(files)
    gfd = {
        "pool": "gpu-a100",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
        "nvidia.com/gpu.count": "4",
        "nvidia.com/gpu.memory": "81920",
    }
    kube_api.put_object(gpu_node("gpu-a", gfd, gpus=4))
    d = make(kube_api, git_remote, tmp_path)
    d.run_pass()
    assert names(kube_api, "StatefulSet") == ["w0", "w1", "w2"]
    first = {
        o["metadata"]["name"]: o["metadata"]["annotations"]["kaito-gitops.io/revision"]
        for o in kube_api.objects("StatefulSet")
    }
    git_remote.write(
        {"workspaces/w1.yaml": files["workspaces/w1.yaml"] + "# a comment: new revision, same workspace\n"}
    )
    git_remote.write(
        {
            "workspaces/w2.yaml": files["workspaces/w2.yaml"].replace(
                "name: phi-4\n", "name: phi-4-mini-instruct\n"
            )
        }
    )
    r = d.run_pass()
    now = {
        o["metadata"]["name"]: o["metadata"]["annotations"]["kaito-gitops.io/revision"]
        for o in kube_api.objects("StatefulSet")
    }
    changed = sorted(k for k in now if now[k] != first[k])
    assert changed == ["w2"], f"only the changed workspace is rewritten, not {changed}"
    assert now["w2"] == r.revision[:12]


def test_a_workspace_that_failed_then_left_git_is_forgotten(kube_api, git_remote, tmp_path):
    """Its backoff must not keep the loop spinning, and it must not show as Deleting forever."""
    git_remote.write({"workspaces/a.yaml": smol_ws("a"), "workspaces/b.yaml": smol_ws("b")})
    kube_api.put_object(workspace_node("a"))
    kube_api.put_object(workspace_node("b"))
    kube_api.fail_next(50, status=403, methods=["PATCH"], path_contains="/services/b")
    d = make(kube_api, git_remote, tmp_path, interval=60)
    d.run_pass()
    assert ("default", "b") in d._backoff and "b" not in names(kube_api, "StatefulSet")
    git_remote.write({"workspaces/b.yaml": None})
    for _ in range(3):
        d.run_pass()
    assert [r.key for r in d.reports()] == [("default", "a")]
    assert not d._backoff and d._next_wait() > 30, "nothing is due: wait the interval"
