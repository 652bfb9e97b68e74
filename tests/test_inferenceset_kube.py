"""An autoscaled InferenceSet on the kubernetes target, against the API and ARM doubles.

The daemon applies the set's activator (Deployment and Service `<set>`) and `<set>-members`
through the kubernetes client; the autoscaler reads the activator's and members' /metrics through
the API server's service proxy; member StatefulSets and their AKS node pools (Azure SDK) follow
its decisions 0 -> 1 -> 3 -> 0. The doubles run no pods: small servers that speak Prometheus'
text format stand in for the activator and the members behind their Services.
"""

from __future__ import annotations

import contextlib

from pytest_httpserver import HTTPServer
from support.wait import run_passes_until
from test_daemon_kube import make
from test_eval_preview_cluster import cluster  # noqa: F401 - the doubles with pools and pods that come up
from test_inferenceset_local import SET
from werkzeug import Response

from reconciler.provisioners.aks import AksProvisioner
from reconciler.scaler import Scaler


@contextlib.contextmanager
def exporting(**values):
    """A Prometheus text endpoint (pytest-httpserver) whose figures the test changes as it goes."""
    server = HTTPServer()
    server.values = {k.replace("__", ":"): v for k, v in values.items()}
    server.expect_request("/metrics").respond_with_handler(
        lambda _: Response("".join(f"{k} {v}\n" for k, v in server.values.items()), content_type="text/plain")
    )
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


def statefulsets(kube):
    return sorted(o["metadata"]["name"] for o in kube.objects("StatefulSet"))


def member_pools(arm):
    return sorted(
        p["properties"]["tags"]["kaito-gitops.workspace"]
        for p in arm.pools().values()
        if "kaito-gitops.workspace" in (p["properties"].get("tags") or {})
    )


def test_member_statefulsets_services_and_pools_follow_the_autoscaler_from_zero_to_three_and_back(
    cluster,  # noqa: F811
    git_remote,
    tmp_path,
):
    kube, arm = cluster
    git_remote.write({"workspaces/smol.yaml": SET.replace("scale-down-after: 10s", "scale-down-after: 60s")})
    d = make(
        kube, git_remote, tmp_path, provisioner=AksProvisioner(arm.client(), arm.resource_group, arm.cluster)
    )
    d.target.reach = "proxy"
    clock = [1000.0]
    scaler = Scaler(d, clock=lambda: clock[0])
    d.run_pass()
    # the activator holds the set's Service while no member runs; the members have their own
    svc = kube.get_object("v1", "Service", "default", "smol")
    assert svc["spec"]["selector"] == {"kaito-gitops.io/activator": "smol"}
    members_svc = kube.get_object("v1", "Service", "default", "smol-members")
    assert members_svc["spec"]["selector"] == {"inferenceset.kaito.sh/created-by": "smol"}
    act = kube.get_object("apps/v1", "Deployment", "default", "smol-activator")
    container = act["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["--upstream", "http://smol-members.default.svc"]
    assert "nvidia.com/gpu" not in str(container["resources"]), "the activator is a CPU pod"
    assert statefulsets(kube) == [] and member_pools(arm) == []
    # the double has no Deployment controller: the activator's pod, as the ReplicaSet would make it
    kube.put_object(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "smol-activator-1",
                "namespace": "default",
                "labels": {"kaito-gitops.io/activator": "smol"},
            },
            "spec": act["spec"]["template"]["spec"],
        }
    )
    kube.set_pod_phase("default", "smol-activator-1", "Running")

    with (
        exporting(
            kaito_gitops_activator_held_requests=0, kaito_gitops_activator_requests_total=0
        ) as activator,
        exporting(sglang__num_running_reqs=0, sglang__num_queue_reqs=0) as m0,
        exporting(sglang__num_running_reqs=0, sglang__num_queue_reqs=0) as m1,
        exporting(sglang__num_running_reqs=0, sglang__num_queue_reqs=0) as m2,
    ):
        for name, server in (("smol", activator), ("smol-0", m0), ("smol-1", m1), ("smol-2", m2)):
            kube.set_service_backend("default", name, f"127.0.0.1:{server.port}")
        scaler.tick()
        assert d.count_of(("default", "smol")) == 0, "no request, no member"

        # a request waits at the activator: one member, on a pool of its own
        activator.values.update(
            {"kaito_gitops_activator_held_requests": 1, "kaito_gitops_activator_requests_total": 1}
        )
        scaler.tick()
        run_passes_until(
            d,
            lambda: statefulsets(kube) == ["smol-0"] and d.target.rolled_out(("default", "smol-0")),
            30,
            "member 0 ready",
        )
        assert member_pools(arm) == ["default/smol-0"]
        activator.values["kaito_gitops_activator_held_requests"] = 0
        clock[0] += 2
        scaler.tick()
        assert d.scaling[("default", "smol")].cold_start_seconds == 2.0

        # six requests in flight at member 0, target 2 per replica: three members
        m0.values["sglang:num_running_reqs"] = 6
        clock[0] += 2
        scaler.tick()
        run_passes_until(
            d,
            lambda: statefulsets(kube) == ["smol-0", "smol-1", "smol-2"] and len(member_pools(arm)) == 3,
            30,
            "three members on three pools",
        )
        m0.values["sglang:num_running_reqs"] = 0

        # quiet, but not for a whole window yet: nothing goes
        clock[0] += 30
        scaler.tick()
        d.run_pass()
        assert statefulsets(kube) == ["smol-0", "smol-1", "smol-2"]

        # a whole window without a request: every member and every pool goes; the activator stays
        clock[0] += 61
        scaler.tick()
        ev = d.scaling[("default", "smol")].last_event
        assert (ev.old, ev.new, ev.reason) == (3, 0, "no request for 1m0s")
        run_passes_until(d, lambda: statefulsets(kube) == [] and member_pools(arm) == [], 30, "back to zero")
        assert kube.get_object("apps/v1", "Deployment", "default", "smol-activator") is not None
        assert d.scaling[("default", "smol")].gpu_seconds_saved > 0
