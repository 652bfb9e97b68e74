"""The `aks` provisioner through the real Azure SDK against the local ARM double.

The double advances a long-running operation only when the test says so (auto_advance=False),
so these tests see what a daemon sees across passes while AKS takes minutes: nothing waits.
"""

from __future__ import annotations

import dataclasses
import time
import types

import pytest
from doubles.arm import (
    ArmDouble,
    allocation_failed,
    authorization_failed,
    quota_exceeded,
    sku_not_available,
    throttled,
)
from planfixtures import example_and_fixture_state

from reconciler.provisioners.aks import AksProvisioner, arm_scope
from reconciler.render.nodepool import TAG_MANAGED_BY, TAG_WORKSPACE
from reconciler.status import NodeState


@pytest.fixture
def arm(tmp_path):
    with ArmDouble(tmp_path, auto_advance=False) as a:
        yield a


def plan_named(name):
    return next(p for k, p in example_and_fixture_state().plans.items() if k[1] == name)


def with_pool(plan, **changes):
    pool = dataclasses.replace(plan.node_pool, **changes)
    return dataclasses.replace(plan, node_pool=pool, nodes=pool.count)


def provisioner(arm) -> AksProvisioner:
    p = AksProvisioner(arm.client(), arm.resource_group, arm.cluster)
    p.refresh()
    return p


def puts(arm, pool):
    return [r for r in arm.requests if r.method == "PUT" and r.path.endswith(f"/agentPools/{pool}")]


def gpu_nodes(n, gpus=2, ready=True):
    return [NodeState(f"aks-node-{i}", ready, gpus) for i in range(n)]


def test_create_is_started_then_observed_until_nodes_have_gpus(arm):
    plan = plan_named("llama-70b")
    spec = plan.node_pool
    p = provisioner(arm)
    status = p.ensure(plan, [])
    assert not status.ready and status.reason == "AgentPoolProvisioning"
    [put] = puts(arm, spec.name)
    props = put.body["properties"]
    assert props["vmSize"] == "Standard_NC48ads_A100_v4" and props["count"] == 2 and props["mode"] == "User"
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule"] and props["osSKU"] == "AzureLinux"
    assert props["nodeLabels"]["kaito.sh/workspace"] == "llama-70b" and props["gpuProfile"] == {
        "driver": "Install"
    }
    assert props["tags"][TAG_WORKSPACE] == "llm/llama-70b" and props["osDiskSizeGB"] == 220
    # later passes observe; no second PUT while AKS works
    p.refresh()
    assert p.ensure(plan, []).reason == "AgentPoolProvisioning"
    assert len(puts(arm, spec.name)) == 1
    arm.advance(spec.name)
    p.refresh()
    assert p.ensure(plan, []).reason == "NodesNotReady"
    assert p.ensure(plan, gpu_nodes(2, gpus=0)).reason == "NodePluginsNotReady"
    ok = p.ensure(plan, gpu_nodes(2))
    assert ok.ready and ok.nodes == ("aks-node-0", "aks-node-1")
    assert p.owned() == {("llm", "llama-70b")}


def test_a_restarted_daemon_resumes_without_a_duplicate_pool(arm):
    plan = plan_named("llama-70b")
    provisioner(arm).ensure(plan, [])  # the old process started the create, then died
    fresh = provisioner(arm)  # knows nothing but what ARM says
    assert fresh.ensure(plan, []).reason == "AgentPoolProvisioning"
    assert len(puts(arm, plan.node_pool.name)) == 1
    assert len([n for n in arm.pools() if n != "nodepool1"]) == 1


def test_quota_failure_is_explained_with_its_numbers_and_not_hammered(arm):
    plan = plan_named("llama-70b")
    arm.fail_next(
        quota_exceeded(family="standardNCADSA100v4Family", limit=24, usage=0, required=96), method="PUT"
    )
    p = provisioner(arm)
    status = p.ensure(plan, [])
    assert not status.ready and status.reason == "QuotaExceeded"
    assert (
        "standardNCADSA100v4Family (Cores) in eastus: limit 24, in use 0, this pool needs 96 more. "
        "Request an increase to at least 96"
    ) in status.message
    assert status.retry_after and status.retry_after > 600
    p.refresh()
    assert p.ensure(plan, []).reason == "QuotaExceeded"
    assert len(puts(arm, plan.node_pool.name)) == 1, "no retry storm while the quota is short"
    # the user picks a smaller pool: retried at once
    smaller = with_pool(plan, count=1, tags={**plan.node_pool.tags, "kaito-gitops.pool-hash": "other"})
    assert p.ensure(smaller, []).reason == "AgentPoolProvisioning"


def test_failure_during_provisioning_shows_up_on_a_later_pass(arm):
    plan = plan_named("llama-70b")
    arm.fail_provisioning(quota_exceeded(limit=24, usage=24, required=96))
    p = provisioner(arm)
    p.ensure(plan, [])
    arm.advance(plan.node_pool.name)
    p.refresh()
    status = p.ensure(plan, [])
    assert status.reason == "QuotaExceeded" and "in use 24" in status.message


@pytest.mark.parametrize(
    ("error", "reason", "words", "retried"),
    [
        (
            sku_not_available("Standard_NC48ads_A100_v4"),
            "SkuNotAvailable",
            "not available in this region",
            False,
        ),
        (allocation_failed(), "ZonalAllocationFailed", "no capacity", True),
        (
            authorization_failed("/subscriptions/x/resourceGroups/rg-kaito"),
            "AuthorizationFailed",
            "grant it a role",
            True,
        ),
    ],
)
def test_other_failures(arm, error, reason, words, retried):
    arm.fail_next(error, method="PUT")
    status = provisioner(arm).ensure(plan_named("llama-70b"), [])
    assert status.reason == reason and words in status.message
    assert (status.retry_after is not None) == retried


def test_throttling_honours_retry_after(arm):
    plan = plan_named("llama-70b")
    arm.fail_next(throttled(retry_after=None, retry_after_ms=300), method="PUT")
    p = provisioner(arm)
    status = p.ensure(plan, [])
    assert status.reason == "Throttled" and 0 < status.retry_after <= 0.3
    again = p.ensure(plan, [])
    assert again.reason == "Throttled" and len(puts(arm, plan.node_pool.name)) == 1, (
        "no PUT before Retry-After"
    )
    time.sleep(again.retry_after)
    assert p.ensure(plan, []).reason == "AgentPoolProvisioning"
    assert len(puts(arm, plan.node_pool.name)) == 2


def test_scale_and_replace(arm):
    plan = plan_named("llama-70b")
    p = provisioner(arm)
    p.ensure(plan, [])
    arm.advance(plan.node_pool.name)
    p.refresh()
    bigger = with_pool(plan, count=3, tags={**plan.node_pool.tags, "kaito-gitops.pool-hash": "count3"})
    assert p.ensure(bigger, []).reason == "AgentPoolProvisioning"
    assert puts(arm, plan.node_pool.name)[-1].body["properties"]["count"] == 3
    arm.advance(plan.node_pool.name)
    p.refresh()
    # a new VM size cannot be changed in place: the pool is deleted, then created again
    h100 = with_pool(
        bigger,
        vm_size="Standard_NC80adis_H100_v5",
        tags={**plan.node_pool.tags, "kaito-gitops.pool-hash": "h100"},
    )
    assert p.ensure(h100, []).reason == "AgentPoolReplacing"
    assert [r.method for r in arm.requests][-1] == "DELETE"
    p.refresh()
    assert p.ensure(h100, []).reason == "AgentPoolReplacing"
    arm.advance(plan.node_pool.name)
    p.refresh()
    assert p.ensure(h100, []).reason == "AgentPoolProvisioning"
    assert puts(arm, plan.node_pool.name)[-1].body["properties"]["vmSize"] == "Standard_NC80adis_H100_v5"


def test_release_and_garbage_collection_of_a_leaked_pool(arm):
    arm.put_pool(
        "ghost1a2b3c",
        {
            "vmSize": "Standard_NC24ads_A100_v4",
            "count": 1,
            "mode": "User",
            "tags": {TAG_MANAGED_BY: "kaito-gitops", TAG_WORKSPACE: "team/ghost"},
        },
    )
    arm.put_pool(
        "notours", {"vmSize": "Standard_D4s_v3", "count": 1, "mode": "User", "tags": {"owner": "ops"}}
    )
    p = provisioner(arm)
    assert p.owned() == {("team", "ghost")}, "only pools tagged as ours"
    assert p.release(("team", "ghost")) is False
    assert arm.pool("ghost1a2b3c")["properties"]["provisioningState"] == "Deleting"
    arm.advance("ghost1a2b3c")
    p.refresh()
    assert p.release(("team", "ghost")) is True and p.owned() == set()
    assert arm.pool("notours") is not None


def test_a_pool_we_do_not_own_is_never_touched(arm):
    plan = plan_named("llama-70b")
    arm.put_pool(plan.node_pool.name, {"vmSize": "Standard_D4s_v3", "count": 1, "mode": "User"})
    status = provisioner(arm).ensure(plan, [])
    assert status.reason == "AgentPoolConflict" and not puts(arm, plan.node_pool.name)


def test_workload_identity_from_config(arm, monkeypatch):
    for k, v in arm.workload_identity_env().items():
        monkeypatch.setenv(k, v)
    cfg = types.SimpleNamespace(
        authority_host="",
        arm_endpoint=arm.base_url,
        arm_audience="",
        aks_subscription=arm.subscription_id,
        aks_resource_group=arm.resource_group,
        aks_cluster=arm.cluster,
    )
    p = AksProvisioner.from_config(cfg)
    p.client._config.polling_interval = 0
    p.refresh()
    assert "nodepool1" in p.pools
    assert any(r.path.endswith("/oauth2/v2.0/token") for r in arm.requests)


def test_arm_scope_for_sovereign_clouds():
    assert arm_scope("https://management.chinacloudapi.cn") == "https://management.chinacloudapi.cn/.default"
    assert arm_scope("https://127.0.0.1:8443") == "https://management.azure.com/.default"
    assert (
        arm_scope("https://arm.contoso.internal", "https://management.usgovcloudapi.net")
        == "https://management.usgovcloudapi.net/.default"
    )
