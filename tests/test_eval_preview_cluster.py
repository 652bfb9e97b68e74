"""Eval previews in the cluster (`--preview-target kubernetes`), end to end against the doubles:
the daemon's reviewer deploys a pull request's workspace in `pr-<number>` on a node pool of its
own (ARM double, through the Azure SDK), waits for it through the kubernetes client (API double),
asks it and the deployed workspace through the API server's service proxy, and posts the figures
and the kaito-gitops/eval status (GitHub double). The daemon's own passes never touch the preview;
closing the pull request or its time to live tears it down.

The API double runs no pods: what listens behind each Service is a small OpenAI-style server per
revision, which answers as the deployed model (Paris) or as the pull request's (Lyon). The real
model behind real endpoints is test_eval_preview.py's (local previews, SmolLM2 and its adapters).
"""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from doubles.arm import ArmDouble
from doubles.kube_fixtures import gpu_node
from kubernetes import client
from support.wait import wait_until
from support.workspaces import smol_ws
from test_daemon_kube import make
from test_deploy import DEPLOY, grants_for_daemon, rbac_attributes
from test_github_review import OWNER, REPO, bot_comments, open_pr, reviewer, world  # noqa: F401

from reconciler.evals.cluster_preview import Caps, ClusterPreviewer
from reconciler.evals.preview import CONTEXT, PreviewJob, PreviewRunner
from reconciler.provisioners.aks import AksProvisioner

SUITE = """\
workspaces: [smol]
defaults: {max_tokens: 16}
cases:
  - {id: capital-of-france, prompt: What is the capital of France?, contains: Paris}
thresholds: {pass_rate: 1.0}
"""
A100, A100_2 = "Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4"


class _Answer(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "smollm2-135m-instruct", "object": "model"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.asked += 1
        message = {"role": "assistant", "content": self.server.reply}
        self._send(
            {
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11},
            }
        )


@contextlib.contextmanager
def answering(reply: str):
    """What the pods behind a Service would be: a chat endpoint that always says `reply`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.reply, server.asked = reply, 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def kubelet(kube, arm):
    """Pools finish what they started, pods come from their StatefulSets and turn ready."""
    stop = threading.Event()

    def run():
        while not stop.wait(0.1):
            for name, pool in arm.pools().items():
                if pool["properties"].get("provisioningState") in ("Creating", "Updating", "Deleting"):
                    arm.advance(name)
            kube.reconcile_workloads()
            for pod in kube.objects("Pod"):
                conds = (pod.get("status") or {}).get("conditions") or []
                if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                    kube.set_pod_phase(pod["metadata"]["namespace"], pod["metadata"]["name"], "Running")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def in_namespace(kube, kind, namespace):
    return sorted(
        o["metadata"]["name"] for o in kube.objects(kind) if o["metadata"].get("namespace") == namespace
    )


def preview_pools(arm):
    return {
        n: p for n, p in arm.pools().items() if "kaito-gitops.preview" in (p["properties"].get("tags") or {})
    }


@pytest.fixture
def cluster(kube_api, tmp_path):
    with ArmDouble(tmp_path / "arm", auto_advance=False) as arm:

        def pool_ready(pool):  # AKS brings nodes up with the pool's labels
            props = pool["properties"]
            for i in range(props["count"]):
                kube_api.put_object(gpu_node(f"aks-{pool['name']}-{i}", props["nodeLabels"]))

        arm.on_pool_ready(pool_ready)
        with kubelet(kube_api, arm):
            yield kube_api, arm


def assert_rbac_covers(requests):
    """deploy/base plus components/previews allow every request the daemon and its previews made,
    and the component grants nothing they did not use. (The service proxy is for a daemon outside
    the cluster, with its user's own credentials; in the cluster, previews are asked by DNS.)"""
    docs = [
        d
        for f in ("base/rbac.yaml", "components/previews/rbac.yaml")
        for d in yaml.safe_load_all((DEPLOY / f).read_text())
        if d
    ]
    grants = grants_for_daemon(docs)
    used = {
        a
        for q in requests
        for a in rbac_attributes(q.method, q.path, q.query, q.status)
        if a.resource != "services/proxy"
    }
    missing = sorted(str(a) for a in used if not any(g.allows(a) for g in grants))
    assert not missing, "forbidden for the daemon:\n" + "\n".join(missing)
    for g in (g for g in grants if g.source == "ClusterRole/kaito-gitops-previews"):
        for verb in g.rule["verbs"]:
            assert any(a.resource == "namespaces" and a.verb == verb for a in used), (
                f"{verb} namespaces unused"
            )


def previewer(kube, arm, clock, **caps):
    return ClusterPreviewer(
        client.ApiClient(kube.client_config()),
        AksProvisioner(arm.client(), arm.resource_group, arm.cluster, previews=True),
        caps=Caps(**{"ttl": 3600.0, "max_previews": 1, "max_price_per_hour": 10.0, **caps}),
        timeout=60,
        reach="proxy",
        refresh_every=0.2,
        clock=lambda: clock[0],
    )


def verdict(gh, sha):
    states = [s for s in gh.statuses(OWNER, REPO, sha) if s["context"] == CONTEXT]
    return states[-1] if states and states[-1]["state"] != "pending" else None


def test_a_pr_previewed_in_its_own_namespace_and_pool_then_torn_down_on_close_and_at_its_ttl(
    world,  # noqa: F811
    cluster,
    tmp_path,
):
    kube, arm = cluster
    remote, gh = world.remote, world.gh
    remote.write({"workspaces/smol.yaml": smol_ws("smol"), "workspaces/evals/geo.yaml": SUITE}, "base")
    # the daemon deploys the base on its own pool; the suite's base figures come from it
    daemon = make(
        kube, remote, tmp_path, provisioner=AksProvisioner(arm.client(), arm.resource_group, arm.cluster)
    )

    def deployed():
        daemon.run_pass()
        sts = kube.get_object("apps/v1", "StatefulSet", "default", "smol")
        return sts and (sts.get("status") or {}).get("readyReplicas") == 1

    wait_until(deployed, timeout=30, what="the base deployed by the daemon")
    [main_pool] = [
        n for n, p in arm.pools().items() if "kaito-gitops.workspace" in (p["properties"].get("tags") or {})
    ]
    clock = [1_000_000.0]
    with answering("Paris.") as base_pods, answering("Lyon.") as head_pods:
        kube.set_service_backend("default", "smol", f"127.0.0.1:{base_pods.server_port}")
        kube.set_service_backend("pr-7", "smol", f"127.0.0.1:{head_pods.server_port}")
        kube.set_service_backend("pr-9", "smol", f"127.0.0.1:{base_pods.server_port}")
        head = open_pr(world, 7, {"workspaces/smol.yaml": smol_ws("smol", sku=A100)}, "smol on an A100")
        r = reviewer(remote, gh, world.tmp)
        r.previews = PreviewRunner(previewer(kube, arm, clock), r.on_preview, upkeep_every=0.2)
        try:
            r.review_now(7)
            [c] = bot_comments(gh, 7)
            # the cost is in the comment before anything starts
            assert "### Eval :hourglass_flowing_sand:" in c["body"], c["body"]
            assert f"namespace `pr-7` of the cluster on 1 × {A100} at $3.67/h" in c["body"], c["body"]
            assert "or 1 h after its last push (at most $3.67 a push)" in c["body"], c["body"]
            wait_until(lambda: verdict(gh, head), timeout=60, what="the eval verdict")
            st = verdict(gh, head)
            assert st["state"] == "failure" and "fail: geo (pass rate 0.00 < 1.00)" in st["description"], st
            [c] = bot_comments(gh, 7)
            assert "| `geo` | `default/smol` | 100% → 0% (-100%) |" in c["body"], c["body"]
            assert "in namespace `pr-7` of the cluster" in c["body"] and "Lyon" in c["body"]
            assert base_pods.asked == 1 and head_pods.asked == 1, "each asked once, through the service proxy"
            # the preview: its namespace (with its expiry), its workload, its own pool
            ns = kube.get_object("v1", "Namespace", None, "pr-7")
            assert ns["metadata"]["labels"]["kaito-gitops.io/preview"] == "7"
            assert ns["metadata"]["annotations"]["kaito-gitops.io/expires-at"] == "1970-01-12T14:46:40Z"
            assert in_namespace(kube, "StatefulSet", "pr-7") == ["smol"]
            [pool] = preview_pools(arm)
            assert arm.pool(pool)["properties"]["vmSize"] == A100 and pool != main_pool
            # the daemon's passes leave the preview alone, and the preview's left the deployed one
            daemon.run_pass()
            assert in_namespace(kube, "StatefulSet", "pr-7") == ["smol"] and pool in arm.pools()
            assert kube.get_object("apps/v1", "StatefulSet", "default", "smol")["spec"]["template"]
            # a second push: the preview follows it (its pool replaced by a bigger one), and only
            # pods of the new template answer for it
            head7b = open_pr(world, 7, {"workspaces/smol.yaml": smol_ws("smol", sku=A100_2)}, "two A100s")
            r.review_now(7)
            wait_until(lambda: verdict(gh, head7b), timeout=60, what="the verdict of the second push")
            assert verdict(gh, head7b)["state"] == "failure", verdict(gh, head7b)
            [pool] = preview_pools(arm)
            assert arm.pool(pool)["properties"]["vmSize"] == A100_2 and head_pods.asked == 2
            [c] = bot_comments(gh, 7)
            assert f"(1 × {A100_2}, $7.35/h until merge" in c["body"], c["body"]
            # a second pull request while pr-7 is up: over --preview-max 1, refused at once
            head8 = open_pr(
                world, 8, {"workspaces/smol.yaml": smol_ws("smol", sku="Standard_NC40ads_H100_v5")}
            )
            r.review_now(8)
            [c8] = bot_comments(gh, 8)
            assert "1 preview(s) run in the cluster already (pr-7)" in c8["body"], c8["body"]
            assert verdict(gh, head8)["state"] == "error"
            assert kube.get_object("v1", "Namespace", None, "pr-8") is None
            # closing pr-7 tears it down: workload, namespace, then its pool (not the daemon's)
            gh.close_pull(OWNER, REPO, 7, merged=False)
            r.poll()  # no webhook: the open list no longer has it, so the reviewer looks again
            wait_until(lambda: not preview_pools(arm), timeout=30, what="the preview's pool released")
            assert kube.get_object("v1", "Namespace", None, "pr-7") is None
            assert not in_namespace(kube, "StatefulSet", "pr-7") and main_pool in arm.pools()
            # a preview nobody closes ends at its time to live, even one the daemon did not start
            head9 = open_pr(world, 9, {"workspaces/smol.yaml": smol_ws("smol", sku=A100)}, "again")
            r.review_now(9)
            wait_until(lambda: verdict(gh, head9), timeout=60, what="the pr-9 verdict")
            assert verdict(gh, head9)["state"] == "success", verdict(gh, head9)
            assert preview_pools(arm) and kube.get_object("v1", "Namespace", None, "pr-9")
            r.previews.close()
            later = previewer(kube, arm, clock, max_previews=2, max_price_per_hour=5.0)  # a restart
            job = PreviewJob(
                11,
                "b" * 40,
                "main",
                [],
                [
                    ("workspaces/smol.yaml", smol_ws("smol", sku=A100).encode()),
                    ("workspaces/evals/geo.yaml", SUITE.encode()),
                ],
                ("geo",),
            )
            assert "the previews up now $3.67/h, over --preview-max-price $5.00/h" in later.describe(job)[1]
            later.upkeep()
            assert kube.get_object("v1", "Namespace", None, "pr-9"), "not expired yet"
            clock[0] += 3601
            later.upkeep()
            assert kube.get_object("v1", "Namespace", None, "pr-9") is None
            wait_until(
                lambda: (later.upkeep(), not preview_pools(arm))[1], timeout=30, what="pr-9's pool released"
            )
            assert_rbac_covers(kube.requests)
        finally:
            r.close()
            daemon.close()


def test_a_preview_over_the_price_cap_or_in_a_namespace_not_ours_is_refused(world, cluster, tmp_path):  # noqa: F811
    kube, arm = cluster
    files = [
        ("workspaces/smol.yaml", smol_ws("smol", sku=A100).encode()),
        ("workspaces/evals/geo.yaml", SUITE.encode()),
    ]
    job = PreviewJob(5, "f" * 40, "main", files, files, ("geo",))
    cheap = previewer(kube, arm, [0.0], max_price_per_hour=2.0)
    where, why = cheap.describe(job)
    assert "1 × Standard_NC24ads_A100_v4 at $3.67/h" in where
    assert (
        why
        == "not previewed: it needs $3.67/h and the previews up now $0.00/h, over --preview-max-price $2.00/h"
    )
    kube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pr-5"}})
    with pytest.raises(
        RuntimeError, match="namespace pr-5 exists and is not kaito-gitops' preview of pull request 5"
    ):
        previewer(kube, arm, [0.0]).run(job)  # the runner turns this into the comment's error
    assert not preview_pools(arm) and not in_namespace(kube, "StatefulSet", "pr-5"), "nothing was started"
    previewer(kube, arm, [0.0]).forget(5)  # pull request 5 closes: a namespace not ours stays
    assert kube.get_object("v1", "Namespace", None, "pr-5") is not None


def test_a_newer_push_cancels_the_running_preview(world, cluster, tmp_path):  # noqa: F811
    from reconciler.provisioners.none import NoneProvisioner

    kube, _ = cluster
    done = []
    # no node carries the workspace's labels and nothing provisions them: the preview would wait
    # out its whole timeout
    slow = ClusterPreviewer(
        client.ApiClient(kube.client_config()), NoneProvisioner(), timeout=300, refresh_every=0.2
    )
    runner = PreviewRunner(slow, done.append, upkeep_every=0.2)
    files = [
        ("workspaces/smol.yaml", smol_ws("smol").encode()),
        ("workspaces/evals/geo.yaml", SUITE.encode()),
    ]
    try:
        first = PreviewJob(4, "1" * 40, "main", files, files, ("geo",))
        runner.submit(first)
        wait_until(
            lambda: runner.running == first and slow._stages, timeout=10, what="the first preview waiting"
        )
        second = PreviewJob(4, "2" * 40, "main", files, files, ("geo",))
        assert runner.submit(second) == 1
        wait_until(lambda: done, timeout=15, what="the first outcome, cut short (not after its 300 s)")
        [cut] = done
        assert cut.job == first and "superseded by a newer push" in cut.section, cut.section
        wait_until(lambda: runner.running == second, timeout=10, what="the newer push previewed next")
    finally:
        runner.close()


def test_a_pool_azure_refuses_ends_the_preview_at_once_with_the_reason(world, cluster, tmp_path):  # noqa: F811
    from doubles.arm import quota_exceeded

    kube, arm = cluster
    arm.fail_next(quota_exceeded(limit=24, usage=20, required=24), method="PUT")
    files = [
        ("workspaces/smol.yaml", smol_ws("smol", sku=A100).encode()),
        ("workspaces/evals/geo.yaml", SUITE.encode()),
    ]
    outcome = previewer(kube, arm, [0.0]).run(PreviewJob(6, "c" * 40, "main", files, files, ("geo",)))
    # not a wait of the preview's whole timeout (60 s here): the provisioner says waiting will not help
    assert outcome.state == "error" and "its nodes cannot be made:" in outcome.section, outcome.section
    assert "Request an increase to at least 44" in outcome.section, outcome.section
