"""The ARM / Entra ID double, driven by the real azure-mgmt-containerservice and azure-identity clients."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential
from azure.mgmt.containerservice import models as m
from doubles.arm import (
    ARM_SCOPE,
    LRO_STYLE_HEADER,
    POOL_TYPE,
    PROVISIONING_STATE,
    ArmDouble,
    StaticTokenCredential,
    allocation_failed,
    authorization_failed,
    internal_error,
    quota_exceeded,
    service_unavailable,
    sku_not_available,
    throttled,
)

GPU_SKU = "Standard_NC24ads_A100_v4"


@pytest.fixture
def arm(tmp_path: Path):
    with ArmDouble(tmp_path) as double:
        yield double


def gpu_pool(count: int = 1, vm_size: str = GPU_SKU, **kw) -> m.AgentPool:
    return m.AgentPool(
        vm_size=vm_size,
        count=count,
        mode="User",
        os_type="Linux",
        os_sku="Ubuntu",
        os_disk_size_gb=kw.pop("os_disk_size_gb", 1024),
        node_labels=kw.pop(
            "node_labels", {"kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "default"}
        ),
        node_taints=["sku=gpu:NoSchedule"],
        tags={"managed-by": "kaito-gitops"},
        gpu_profile=m.GPUProfile(driver="Install"),
        **kw,
    )


def create(arm: ArmDouble, name: str, pool: m.AgentPool | None = None, client=None, **kw):
    client = client or arm.client()
    poller = client.agent_pools.begin_create_or_update(
        arm.resource_group, arm.cluster, name, pool or gpu_pool(), **kw
    )
    return poller.result()


def raw(arm: ArmDouble, method: str, path: str, *, token: str | None = None, **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or arm.static_token}"} if token != "" else {}
    return requests.request(
        method, arm.base_url + path, headers=headers, verify=str(arm.ca_path), timeout=10, **kw
    )


# -- create / update / delete -------------------------------------------------------------------


def test_create_follows_azure_async_operation(arm: ArmDouble) -> None:
    ready: list[dict] = []
    arm.on_pool_ready(ready.append)

    result = create(arm, "gpu1")

    assert result.provisioning_state == "Succeeded"
    assert result.id == arm.pool_id("gpu1")
    assert result.type == POOL_TYPE
    assert (result.vm_size, result.count, result.os_disk_size_gb) == (GPU_SKU, 1, 1024)
    assert result.node_taints == ["sku=gpu:NoSchedule"]
    assert result.gpu_profile.driver == "Install"
    stored = arm.pool("gpu1")["properties"]
    assert stored["nodeLabels"]["kaito.sh/workspace"] == "phi"
    assert stored["tags"] == {"managed-by": "kaito-gitops"}
    assert stored["osSKU"] == "Ubuntu" and stored["mode"] == "User"
    assert [p["name"] for p in ready] == ["gpu1"]
    assert ready[0]["properties"]["provisioningState"] == "Succeeded"

    calls = [(r.method, r.path.split("/")[1], r.status) for r in arm.requests]
    # PUT, one in-progress poll, the Succeeded poll, then the SDK's final GET of the resource.
    assert calls == [
        ("PUT", "subscriptions", 201),
        ("GET", "operations", 200),
        ("GET", "operations", 200),
        ("GET", "subscriptions", 200),
    ]
    put = arm.requests[0]
    assert put.api_version == "2026-08-01"
    assert put.headers["Authorization"] == "<redacted>"
    assert put.body["properties"]["vmSize"] == GPU_SKU
    assert put.body["properties"]["gpuProfile"] == {"driver": "Install"}


def test_create_follows_provisioning_state(tmp_path: Path) -> None:
    with ArmDouble(tmp_path, lro_style=PROVISIONING_STATE, in_progress_polls=2) as arm:
        assert create(arm, "gpu1").provisioning_state == "Succeeded"
        calls = [(r.method, r.path.split("/")[1], r.status) for r in arm.requests]
        assert calls == [("PUT", "subscriptions", 201)] + [("GET", "subscriptions", 200)] * 3
        assert not any("operations" in r.path for r in arm.requests)


def test_lro_style_can_be_chosen_per_request(arm: ArmDouble) -> None:
    create(arm, "gpu1", headers={LRO_STYLE_HEADER: PROVISIONING_STATE})
    assert not any(r.path.startswith("/operations/") for r in arm.requests)
    arm.clear_requests()
    create(arm, "gpu2")
    assert any(r.path.startswith("/operations/") for r in arm.requests)


def test_scale_is_an_update(arm: ArmDouble) -> None:
    ready: list[dict] = []
    arm.on_pool_ready(ready.append)
    create(arm, "gpu1")
    arm.clear_requests()

    client = arm.client()
    pool = client.agent_pools.get(arm.resource_group, arm.cluster, "gpu1")
    pool.count = 3
    result = client.agent_pools.begin_create_or_update(arm.resource_group, arm.cluster, "gpu1", pool).result()

    assert result.count == 3 and result.provisioning_state == "Succeeded"
    assert [r.status for r in arm.requests if r.method == "PUT"] == [200]
    assert [p["properties"]["count"] for p in ready] == [1, 3]


def test_vm_size_change_is_refused(arm: ArmDouble) -> None:
    create(arm, "gpu1")
    with pytest.raises(HttpResponseError) as caught:
        create(arm, "gpu1", gpu_pool(vm_size="Standard_NC48ads_A100_v4"))
    assert caught.value.status_code == 400
    assert caught.value.error.code == "PropertyChangeNotAllowed"
    assert caught.value.error.message == "Changing property 'vmSize' is not allowed."
    assert arm.pool("gpu1")["properties"]["vmSize"] == GPU_SKU


def test_delete_polls_location_then_pool_is_gone(arm: ArmDouble) -> None:
    deleted: list[dict] = []
    arm.on_pool_deleted(deleted.append)
    create(arm, "gpu1")
    arm.clear_requests()
    client = arm.client()

    assert client.agent_pools.begin_delete(arm.resource_group, arm.cluster, "gpu1").result() is None

    calls = [(r.method, r.path.split("/")[1], r.status) for r in arm.requests]
    assert calls == [("DELETE", "subscriptions", 202), ("GET", "deletes", 202), ("GET", "deletes", 204)]
    assert arm.requests[1].api_version is None  # the Location URL is polled verbatim
    with pytest.raises(ResourceNotFoundError) as caught:
        client.agent_pools.get(arm.resource_group, arm.cluster, "gpu1")
    assert caught.value.error.code == "NotFound"
    assert [p["name"] for p in deleted] == ["gpu1"]
    # Deleting what is gone answers 204 at once.
    arm.clear_requests()
    assert client.agent_pools.begin_delete(arm.resource_group, arm.cluster, "gpu1").result() is None
    assert [r.status for r in arm.requests] == [204]


def test_list_pools_and_get_cluster(arm: ArmDouble) -> None:
    arm.put_pool("leaked1", {"vmSize": GPU_SKU, "nodeLabels": {"kaito.sh/workspace": "old"}})
    create(arm, "gpu1")
    client = arm.client()

    pools = {p.name: p for p in client.agent_pools.list(arm.resource_group, arm.cluster)}
    assert sorted(pools) == ["gpu1", "leaked1", "nodepool1"]
    assert pools["nodepool1"].mode == "System"
    assert pools["leaked1"].node_labels == {"kaito.sh/workspace": "old"}

    cluster = client.managed_clusters.get(arm.resource_group, arm.cluster)
    assert cluster.location == "eastus" and cluster.provisioning_state == "Succeeded"
    assert sorted(p.name for p in cluster.agent_pool_profiles) == ["gpu1", "leaked1", "nodepool1"]

    arm.add_cluster("aks2")
    client.agent_pools.begin_create_or_update(arm.resource_group, "aks2", "gpu9", gpu_pool()).result()
    assert sorted(arm.pools("aks2")) == ["gpu9", "nodepool1"]
    assert "gpu9" not in arm.pools()
    with pytest.raises(ResourceNotFoundError) as caught:
        list(client.agent_pools.list(arm.resource_group, "nope"))
    assert caught.value.error.code == "ResourceNotFound"


def test_last_system_pool_cannot_be_deleted(arm: ArmDouble) -> None:
    with pytest.raises(HttpResponseError) as caught:
        arm.client().agent_pools.begin_delete(arm.resource_group, arm.cluster, "nodepool1").result()
    assert caught.value.error.code == "OperationNotAllowed"


def test_pool_name_is_validated(arm: ArmDouble) -> None:
    for bad in ("GPU1", "gpu-1", "1gpu", "abcdefghijklm"):
        with pytest.raises(HttpResponseError) as caught:
            create(arm, bad)
        assert caught.value.status_code == 400
        assert caught.value.error.code == "InvalidParameter"
        assert caught.value.error.target == "agentPoolProfile.name"
    assert create(arm, "abcdefghijkl").provisioning_state == "Succeeded"  # 12 characters is the limit


# -- long operations observed on later passes -----------------------------------------------------


def test_manual_mode_advances_only_when_told(tmp_path: Path) -> None:
    with ArmDouble(tmp_path, auto_advance=False) as arm:
        ready: list[dict] = []
        arm.on_pool_ready(ready.append)
        client = arm.client()
        client.agent_pools.begin_create_or_update(
            arm.resource_group, arm.cluster, "gpu1", gpu_pool(), polling=False
        )
        for _ in range(3):
            assert (
                client.agent_pools.get(arm.resource_group, arm.cluster, "gpu1").provisioning_state
                == "Creating"
            )
        # AKS refuses a second operation while one runs.
        with pytest.raises(ResourceExistsError) as caught:
            create(arm, "gpu1", gpu_pool(count=2), polling=False)
        assert caught.value.error.code == "OperationNotAllowed"

        arm.advance("gpu1")
        assert (
            client.agent_pools.get(arm.resource_group, arm.cluster, "gpu1").provisioning_state == "Succeeded"
        )
        assert [p["name"] for p in ready] == ["gpu1"]

        client.agent_pools.begin_delete(arm.resource_group, arm.cluster, "gpu1", polling=False)
        assert (
            client.agent_pools.get(arm.resource_group, arm.cluster, "gpu1").provisioning_state == "Deleting"
        )
        arm.advance("gpu1")
        assert arm.pool("gpu1") is None
        with pytest.raises(KeyError):
            arm.advance("gpu1")


def test_manual_mode_keeps_a_blocking_poller_waiting(tmp_path: Path) -> None:
    with ArmDouble(tmp_path, auto_advance=False) as arm:
        poller = arm.client().agent_pools.begin_create_or_update(
            arm.resource_group, arm.cluster, "gpu1", gpu_pool()
        )
        poller.wait(0.2)
        assert not poller.done()
        polls = sum(r.path.startswith("/operations/") for r in arm.requests)
        assert polls < 20  # retry-after-ms on in-progress answers keeps the poller from spinning
        arm.advance("gpu1")
        assert poller.result(timeout=10).provisioning_state == "Succeeded"


# -- injected failures ----------------------------------------------------------------------------


def test_quota_exceeded_answered_at_once(arm: ArmDouble) -> None:
    arm.fail_next(quota_exceeded(), method="PUT", pool="gpu1")
    with pytest.raises(HttpResponseError) as caught:
        create(arm, "gpu1", gpu_pool(count=2))
    err = caught.value
    assert err.status_code == 400 and err.error.code == "QuotaExceeded"
    assert "standardNCADSA100v4Family Cores quota" in err.error.message
    assert "Current Limit: 24, Current Usage: 0, Additional Required: 48" in err.error.message
    assert "(Minimum) New Limit Required: 48" in err.error.message
    assert arm.pool("gpu1") is None
    assert create(arm, "gpu1").provisioning_state == "Succeeded"  # the injection was used up


def test_quota_exceeded_as_failed_operation(arm: ArmDouble) -> None:
    ready: list[dict] = []
    arm.on_pool_ready(ready.append)
    arm.fail_provisioning(quota_exceeded(limit=24, usage=24, required=24), pool="gpu1")
    with pytest.raises(HttpResponseError) as caught:
        create(arm, "gpu1")
    err = caught.value
    assert err.error.code == "QuotaExceeded"
    assert "Current Usage: 24, Additional Required: 24, (Minimum) New Limit Required: 48" in err.error.message
    assert err.error.details[0].code == "QuotaExceeded"

    op_url = next(r.path for r in arm.requests if r.path.startswith("/operations/"))
    body = raw(arm, "GET", op_url).json()
    assert body["status"] == "Failed" and body["error"]["code"] == "QuotaExceeded"
    assert body["error"]["details"][0]["target"] == "standardNCADSA100v4Family"
    props = arm.pool("gpu1")["properties"]
    assert props["provisioningState"] == "Failed"
    assert props["status"]["provisioningError"]["code"] == "QuotaExceeded"
    assert ready == []
    # A failed pool can be PUT again (an update), and then it succeeds.
    assert create(arm, "gpu1").provisioning_state == "Succeeded"
    assert "status" not in arm.pool("gpu1")["properties"]


def test_failed_provisioning_state_poll(tmp_path: Path) -> None:
    with ArmDouble(tmp_path, lro_style=PROVISIONING_STATE) as arm:
        arm.fail_provisioning(allocation_failed(zonal=True))
        with pytest.raises(HttpResponseError):
            create(arm, "gpu1")
        # The SDK reports no error model here (the resource body has none); the pool carries it.
        pool = arm.client().agent_pools.get(arm.resource_group, arm.cluster, "gpu1")
        assert pool.provisioning_state == "Failed"
        assert pool.status.provisioning_error.code == "ZonalAllocationFailed"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (sku_not_available(GPU_SKU), 400, "SkuNotAvailable"),
        (allocation_failed(zonal=False), 400, "AllocationFailed"),
        (internal_error(), 500, "InternalServerError"),
        (service_unavailable(retry_after=1), 503, "ServiceUnavailable"),
        (throttled(retry_after=1), 429, "SubscriptionRequestsThrottled"),
    ],
)
def test_injected_errors_surface_without_retries(arm: ArmDouble, error, status: int, code: str) -> None:
    arm.fail_next(error, method="PUT")
    with pytest.raises(HttpResponseError) as caught:
        create(arm, "gpu1")
    assert (caught.value.status_code, caught.value.error.code) == (status, code)


def test_authorization_failed_names_client_action_and_scope(arm: ArmDouble) -> None:
    scope = arm.pool_id("gpu1")
    arm.fail_next(authorization_failed(scope), method="PUT")
    with pytest.raises(HttpResponseError) as caught:
        create(arm, "gpu1")
    err = caught.value
    assert err.status_code == 403 and err.error.code == "AuthorizationFailed"
    assert f"The client '{arm.client_id}'" in err.error.message
    assert "'Microsoft.ContainerService/managedClusters/agentPools/write'" in err.error.message
    assert f"over scope '{scope}'" in err.error.message


def test_throttling_retry_after_ms_is_honoured(arm: ArmDouble) -> None:
    # Without the header, the second retry would back off 30 * 2 = 60 s; with it, 10 ms.
    client = arm.client(retry_total=3, retry_backoff_factor=30)
    arm.fail_next(throttled(retry_after=None, retry_after_ms=10), method="PUT", times=2)
    started = time.monotonic()
    assert create(arm, "gpu1", client=client).provisioning_state == "Succeeded"
    assert time.monotonic() - started < 10
    assert [r.status for r in arm.requests if r.method == "PUT"] == [429, 429, 201]


def test_throttling_integer_retry_after(arm: ArmDouble) -> None:
    arm.fail_next(throttled(retry_after=1), method="PUT")
    answer = raw(arm, "PUT", arm.pool_id("gpu1") + "?api-version=2026-08-01", json={"properties": {}})
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
    assert answer.json()["error"]["code"] == "SubscriptionRequestsThrottled"

    arm.fail_next(throttled(retry_after=1), method="PUT")
    assert create(arm, "gpu1", client=arm.client(retry_total=1)).provisioning_state == "Succeeded"
    with pytest.raises(TypeError):
        throttled(retry_after=0.5)  # the SDK parses Retry-After with int()


def test_throttled_poll_is_retried(arm: ArmDouble) -> None:
    arm.fail_next(throttled(retry_after=None, retry_after_ms=5), method="GET", pool="gpu1")
    assert create(arm, "gpu1", client=arm.client(retry_total=2)).provisioning_state == "Succeeded"
    assert [r.status for r in arm.requests if r.path.startswith("/operations/")] == [429, 200, 200]


def test_etag_preconditions(arm: ArmDouble) -> None:
    etag = create(arm, "gpu1").e_tag
    with pytest.raises(ResourceModifiedError) as caught:
        create(arm, "gpu1", gpu_pool(count=2), etag="stale", match_condition=MatchConditions.IfNotModified)
    assert caught.value.error.code == "PreconditionFailed"
    update = gpu_pool(count=2)
    result = create(arm, "gpu1", update, etag=etag, match_condition=MatchConditions.IfNotModified)
    assert result.count == 2 and result.e_tag != etag


def test_malformed_body_is_refused(arm: ArmDouble) -> None:
    url = arm.pool_id("gpu1") + "?api-version=2026-08-01"
    answer = requests.put(
        arm.base_url + url,
        data=b"{not json",
        headers={"Authorization": f"Bearer {arm.static_token}", "Content-Type": "application/json"},
        verify=str(arm.ca_path),
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "InvalidRequestContent"


def test_api_version_is_required(arm: ArmDouble) -> None:
    answer = raw(arm, "GET", arm.pool_id("nodepool1"))
    assert answer.status_code == 400
    assert answer.json() == {
        "error": {
            "code": "MissingApiVersionParameter",
            "message": "The api-version query parameter (?api-version=) is required for all requests.",
        }
    }
    assert raw(arm, "GET", arm.pool_id("nodepool1") + "?api-version=2026-08-01").status_code == 200


# -- authentication -------------------------------------------------------------------------------


def test_requests_without_a_valid_token_are_refused(tmp_path: Path) -> None:
    with ArmDouble(tmp_path, static_token=None) as arm:
        url = arm.pool_id("nodepool1") + "?api-version=2026-08-01"
        answer = raw(arm, "GET", url, token="")
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "AuthenticationFailed"
        assert raw(arm, "GET", url, token="made-up").json()["error"]["code"] == "InvalidAuthenticationToken"

        client = arm.client(StaticTokenCredential("not-issued-here"))
        with pytest.raises(ClientAuthenticationError) as caught:
            client.agent_pools.get(arm.resource_group, arm.cluster, "nodepool1")
        assert caught.value.error.code == "InvalidAuthenticationToken"


def test_workload_identity_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ArmDouble(tmp_path, static_token=None) as arm:
        for name, value in arm.workload_identity_env().items():
            monkeypatch.setenv(name, value)
        credential = WorkloadIdentityCredential()
        assert create(arm, "gpu1", client=arm.client(credential)).provisioning_state == "Succeeded"

        token_calls = [r for r in arm.requests if r.path.endswith("/oauth2/v2.0/token")]
        assert len(token_calls) == 1  # later requests reuse the cached token
        form = token_calls[0].body
        assert token_calls[0].path == f"/{arm.tenant_id}/oauth2/v2.0/token"
        assert form["grant_type"] == "client_credentials"
        assert form["client_id"] == arm.client_id
        assert form["scope"] == ARM_SCOPE
        assert form["client_assertion"] == "<redacted>"

        # The kubelet rotates the projected token. A credential keeps the file's content for up to
        # 600 s, which works because the old token stays valid until it expires...
        claims = '{"access_token":{"nbf":{"essential":true,"value":"1"}}}'  # claims skip the token cache
        arm.write_federated_token("rotated-service-account-token")
        assert credential.get_token(ARM_SCOPE, claims=claims).token in arm.issued_tokens
        # ...and a credential created after the rotation presents the new content.
        arm.write_federated_token("rotated-again", keep_previous=False)
        assert WorkloadIdentityCredential().get_token(ARM_SCOPE).token in arm.issued_tokens
        with pytest.raises(ClientAuthenticationError):
            credential.get_token(ARM_SCOPE, claims=claims)  # its cached assertion has expired
        assert len(arm.issued_tokens) == 3

        # DefaultAzureCredential, pinned by AZURE_TOKEN_CREDENTIALS, takes the same path.
        pools = list(arm.client(DefaultAzureCredential()).agent_pools.list(arm.resource_group, arm.cluster))
        assert "gpu1" in {p.name for p in pools}


def test_wrong_assertion_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ArmDouble(tmp_path, static_token=None) as arm:
        stale = tmp_path / "stale-token"
        stale.write_text("an-old-service-account-token")
        for name, value in arm.workload_identity_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(stale))

        with pytest.raises(ClientAuthenticationError):
            arm.client(WorkloadIdentityCredential()).agent_pools.get(
                arm.resource_group, arm.cluster, "nodepool1"
            )
        assert [r.status for r in arm.requests] == [400]
        assert arm.issued_tokens == set()

        answer = requests.post(
            f"{arm.base_url}/{arm.tenant_id}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": arm.client_id,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": "forged",
                "scope": ARM_SCOPE,
            },
            verify=str(arm.ca_path),
            timeout=10,
        )
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_client"


# -- concurrency ----------------------------------------------------------------------------------


def test_parallel_creates(arm: ArmDouble) -> None:
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            create(arm, name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"gpu{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert all(p["properties"]["provisioningState"] == "Succeeded" for p in arm.pools().values())
    assert len(arm.pools()) == 7
