"""The Kubernetes API double, driven only through the real `kubernetes` client (no monkeypatching)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import urllib3
from doubles.kube_api import KubeAPIServer
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
MANAGER = "kaito-gitops"


def statefulset(
    name: str = "web", ns: str = "ws-a", replicas: int = 2, env: dict | None = None, **extra: Any
) -> dict:
    env = {"MODEL": "phi-3"} if env is None else env
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name, **extra.pop("labels", {})}},
        "spec": {
            "replicas": replicas,
            "serviceName": f"{name}-headless",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "sglang",
                            "image": "lmsysorg/sglang:v0.5.2",
                            "env": [{"name": k, "value": v} for k, v in env.items()],
                            "ports": [{"containerPort": 8000, "name": "http"}],
                        }
                    ]
                },
            },
            **extra,
        },
    }


def apply(
    api: client.ApiClient, body: dict, manager: str = MANAGER, force: bool | None = None, **kw: Any
) -> Any:
    md = body["metadata"]
    return client.AppsV1Api(api).patch_namespaced_stateful_set(
        md["name"], md["namespace"], body, field_manager=manager, force=force, _content_type=APPLY, **kw
    )


def status_body(error: ApiException) -> dict:
    body = json.loads(error.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == error.status
    return body


def raw(response: Any) -> dict:
    return json.loads(response.data)


# -- discovery and auth ------------------------------------------------------------------------------


def test_discovery_is_enough_for_dynamic_client(kube_api: KubeAPIServer, kube_client, tmp_path) -> None:
    assert client.VersionApi(kube_client).get_code().git_version == "v1.37.0"  # requests /version/
    dyn = DynamicClient(kube_client, cache_file=str(tmp_path / "discovery.json"))
    sts = dyn.resources.get(api_version="apps/v1", kind="StatefulSet")
    assert sts.namespaced and "status" in sts.subresources
    created = sts.server_side_apply(body=statefulset(), field_manager=MANAGER, force_conflicts=True)
    assert created.metadata.name == "web" and created.metadata.generation == 1
    leases = dyn.resources.get(api_version="coordination.k8s.io/v1", kind="Lease")
    leases.create(
        body={
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "l"},
            "spec": {"holderIdentity": "a"},
        },
        namespace="ws-a",
    )
    assert leases.get(namespace="ws-a", name="l").spec.holderIdentity == "a"
    namespaces = dyn.resources.get(api_version="v1", kind="Namespace")
    assert not namespaces.namespaced
    namespaces.create(body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ws-b"}})
    ns = namespaces.get(name="ws-b")
    assert ns.status.phase == "Active" and ns.metadata.labels["kubernetes.io/metadata.name"] == "ws-b"
    listing = dyn.resources.get(api_version="v1", kind="Pod").get()
    assert listing.kind == "PodList" and listing.items == []


def test_requests_without_the_bearer_token_get_401(kube_api: KubeAPIServer) -> None:
    with (
        client.ApiClient(kube_api.client_config(token="wrong")) as api,
        pytest.raises(ApiException) as caught,
    ):
        client.CoreV1Api(api).list_namespace()
    assert caught.value.status == 401 and status_body(caught.value)["reason"] == "Unauthorized"
    bare = client.Configuration()
    bare.host = kube_api.url
    with client.ApiClient(bare) as api, pytest.raises(ApiException) as caught:
        client.CoreV1Api(api).list_namespace()
    assert caught.value.status == 401
    assert kube_api.requests[-1].headers.get("Authorization") is None


def test_kubeconfig_file_works_with_the_client_loader(kube_api: KubeAPIServer, tmp_path) -> None:
    api = config.new_client_from_config(config_file=str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")))
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "ws-a"}})
    assert [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items] == ["ws-a"]


# -- server-side apply -------------------------------------------------------------------------------


def test_apply_creates_then_reapply_is_a_noop(kube_api: KubeAPIServer, kube_client) -> None:
    created = apply(kube_client, statefulset(), _preload_content=False)
    assert created.status == 201
    first = raw(created)
    assert first["metadata"]["uid"] and first["metadata"]["creationTimestamp"]
    assert first["metadata"]["generation"] == 1
    again = raw(apply(kube_client, statefulset(), _preload_content=False))
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert again == first
    (entry,) = first["metadata"]["managedFields"]
    assert entry["manager"] == MANAGER and entry["operation"] == "Apply" and entry["fieldsType"] == "FieldsV1"
    assert entry["apiVersion"] == "apps/v1" and entry["time"].endswith("Z")
    container = entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"sglang"}']
    assert "." in container and "f:image" in container
    assert 'k:{"name":"MODEL"}' in container["f:env"]
    assert 'k:{"containerPort":8000,"protocol":"TCP"}' in container["f:ports"]
    # defaulted fields exist but belong to nobody
    live = first["spec"]["template"]["spec"]["containers"][0]
    assert live["imagePullPolicy"] == "IfNotPresent" and "f:imagePullPolicy" not in container
    # typed models parse the answer (all required fields are present)
    assert apply(kube_client, statefulset()).status.replicas == 0
    assert (
        kube_api.write_count() == 3
    )  # three successful PATCH requests, whether or not they changed anything


def test_apply_removes_fields_the_manager_dropped_and_keeps_others(
    kube_api: KubeAPIServer, kube_client
) -> None:
    apply(kube_client, statefulset(env={"MODEL": "phi-3", "DEBUG": "1"}, labels={"tier": "gpu"}))
    client.AppsV1Api(kube_client).patch_namespaced_stateful_set(
        "web",
        "ws-a",
        {"metadata": {"annotations": {"note": "by hand"}}},
        field_manager="kubectl-annotate",
        _content_type=MERGE,
    )
    apply(kube_client, statefulset(env={"MODEL": "phi-3"}))
    live = kube_api.get_object("apps/v1", "StatefulSet", "ws-a", "web")
    assert live["metadata"]["labels"] == {"app": "web"}
    assert live["metadata"]["annotations"] == {"note": "by hand"}
    assert live["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "MODEL", "value": "phi-3"}]
    managers = {(e["manager"], e["operation"]) for e in live["metadata"]["managedFields"]}
    assert managers == {(MANAGER, "Apply"), ("kubectl-annotate", "Update")}
    # applying a new container merges it by name into the list instead of replacing the list
    two = statefulset()
    two["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "busybox:1.36"})
    names = [c.name for c in apply(kube_client, two).spec.template.spec.containers]
    assert names == ["sglang", "sidecar"]


def test_apply_conflicts_with_an_out_of_band_edit_until_forced(kube_api: KubeAPIServer, kube_client) -> None:
    apps = client.AppsV1Api(kube_client)
    apply(kube_client, statefulset(replicas=2))
    apps.patch_namespaced_stateful_set(
        "web", "ws-a", {"spec": {"replicas": 5}}, field_manager="kubectl-edit", _content_type=MERGE
    )
    with pytest.raises(ApiException) as caught:
        apply(kube_client, statefulset(replicas=2))
    body = status_body(caught.value)
    assert caught.value.status == 409 and body["reason"] == "Conflict"
    assert body["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "field": ".spec.replicas",
            "message": 'conflict with "kubectl-edit" using apps/v1',
        }
    ]
    assert "Apply failed with 1 conflict" in body["message"]
    # the same value is not a conflict: the field simply gets two owners
    apply(kube_client, statefulset(replicas=5))
    forced = apply(kube_client, statefulset(replicas=2), force=True)
    assert forced.spec.replicas == 2
    owners = {e.manager for e in forced.metadata.managed_fields}
    assert owners == {MANAGER}  # kubectl-edit owned only replicas, and lost it
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_stateful_set("web", "ws-a", statefulset(), _content_type=APPLY)
    assert caught.value.status == 422 and "fieldManager" in status_body(caught.value)["message"]


def test_strategic_merge_and_json_patch(kube_api: KubeAPIServer, kube_client) -> None:
    apps = client.AppsV1Api(kube_client)
    apply(kube_client, statefulset())
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "sglang", "env": [{"name": "X", "value": "1"}]}]}}
        }
    }
    patched = apps.patch_namespaced_stateful_set(
        "web", "ws-a", patch
    )  # the client's default: strategic merge
    container = patched.spec.template.spec.containers[0]
    assert container.image == "lmsysorg/sglang:v0.5.2" and [e.name for e in container.env] == ["MODEL", "X"]
    assert kube_api.requests[-1].content_type == "application/strategic-merge-patch+json"
    ops = [{"op": "add", "path": "/metadata/labels/extra", "value": "yes"}]
    assert apps.patch_namespaced_stateful_set("web", "ws-a", ops).metadata.labels["extra"] == "yes"
    assert kube_api.requests[-1].content_type == "application/json-patch+json"
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_stateful_set("web", "ws-a", {"spec": {}}, _content_type="application/json")
    assert caught.value.status == 415 and status_body(caught.value)["reason"] == "UnsupportedMediaType"


# -- defaults, validation, bookkeeping -----------------------------------------------------------------


def test_real_defaults_appear_on_live_objects(kube_api: KubeAPIServer, kube_client) -> None:
    core, batch = client.CoreV1Api(kube_client), client.BatchV1Api(kube_client)
    svc = core.create_namespaced_service(
        "ws-a",
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8000}]},
        },
    )
    assert svc.spec.cluster_ip.startswith("10.0.") and svc.spec.session_affinity == "None"
    assert svc.spec.ports[0].protocol == "TCP" and svc.spec.type == "ClusterIP"
    headless = core.create_namespaced_service(
        "ws-a",
        {
            "metadata": {"name": "web-headless"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 30000}]},
        },
    )
    assert headless.spec.cluster_ip == "None" and headless.spec.ports[0].target_port == 30000
    replaced = core.replace_namespaced_service(
        "web",
        "ws-a",
        {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
    )
    assert (
        replaced.spec.cluster_ip == svc.spec.cluster_ip
    )  # an update without clusterIP keeps the allocated one
    sts = apply(kube_client, statefulset())
    assert sts.spec.update_strategy.type == "RollingUpdate" and sts.spec.revision_history_limit == 10
    pod_spec = sts.spec.template.spec
    assert (pod_spec.restart_policy, pod_spec.dns_policy, pod_spec.scheduler_name) == (
        "Always",
        "ClusterFirst",
        "default-scheduler",
    )
    container = pod_spec.containers[0]
    assert container.termination_message_path == "/dev/termination-log"
    assert container.termination_message_policy == "File"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "tune"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "train", "image": "trainer:latest"}],
                }
            }
        },
    }
    created = batch.create_namespaced_job("ws-a", job)
    assert (created.spec.completions, created.spec.parallelism, created.spec.backoff_limit) == (1, 1, 6)
    assert created.spec.template.spec.containers[0].image_pull_policy == "Always"
    uid = created.metadata.uid
    assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert created.spec.template.metadata.labels["job-name"] == "tune"
    del job["spec"]["template"]["spec"]["restartPolicy"]
    job["metadata"]["name"] = "tune-2"
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("ws-a", job)
    assert caught.value.status == 422
    assert status_body(caught.value)["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"


def test_error_statuses(kube_api: KubeAPIServer, kube_client) -> None:
    core = client.CoreV1Api(kube_client)
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_config_map("missing", "ws-a")
    body = status_body(caught.value)
    assert (caught.value.status, body["reason"], body["message"]) == (
        404,
        "NotFound",
        'configmaps "missing" not found',
    )
    assert body["details"] == {"name": "missing", "group": "", "kind": "configmaps"}
    core.create_namespaced_config_map("ws-a", {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map("ws-a", {"metadata": {"name": "cfg"}})
    assert caught.value.status == 409 and status_body(caught.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as caught:
        apply(kube_client, statefulset(name="Bad_Name"))
    body = status_body(caught.value)
    assert caught.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('StatefulSet.apps "Bad_Name" is invalid: metadata.name: Invalid value')
    assert body["details"]["kind"] == "StatefulSet"
    [cause] = body["details"]["causes"]
    assert (cause["reason"], cause["field"]) == ("FieldValueInvalid", "metadata.name")
    assert cause["message"].startswith(
        'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of'
    )
    assert body["message"] == f'StatefulSet.apps "Bad_Name" is invalid: metadata.name: {cause["message"]}'
    with pytest.raises(ApiException) as caught:
        client.AppsV1Api(kube_client).create_namespaced_stateful_set(
            "ws-a", {**statefulset(), "kind": "Deployment"}
        )
    assert caught.value.status == 400 and status_body(caught.value)["reason"] == "BadRequest"
    with pytest.raises(ApiException) as caught:  # StatefulSet selectors are immutable
        apply(kube_client, statefulset())
        changed = statefulset()
        changed["spec"]["serviceName"] = "other"
        apply(kube_client, changed)
    assert caught.value.status == 422 and "spec: Forbidden" in status_body(caught.value)["message"]


def test_generation_and_resource_version(kube_api: KubeAPIServer, kube_client) -> None:
    apps = client.AppsV1Api(kube_client)
    first = apply(kube_client, statefulset())
    labelled = apps.patch_namespaced_stateful_set(
        "web", "ws-a", {"metadata": {"labels": {"x": "y"}}}, _content_type=MERGE
    )
    assert labelled.metadata.generation == 1
    assert int(labelled.metadata.resource_version) > int(first.metadata.resource_version)
    scaled = apply(kube_client, statefulset(replicas=3))
    assert scaled.metadata.generation == 2
    # a Service has no generation at all on a real server
    svc = client.CoreV1Api(kube_client).create_namespaced_service(
        "ws-a", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert svc.metadata.generation is None


def test_status_subresource_is_isolated_both_ways(kube_api: KubeAPIServer, kube_client) -> None:
    apps = client.AppsV1Api(kube_client)
    apply(kube_client, statefulset())
    body = statefulset(replicas=4)
    body["status"] = {"replicas": 9, "readyReplicas": 9}
    main = raw(apply(kube_client, body, _preload_content=False))
    assert main["spec"]["replicas"] == 4 and main["status"] == {"replicas": 0, "availableReplicas": 0}
    patched = apps.patch_namespaced_stateful_set_status(
        "web",
        "ws-a",
        {"spec": {"replicas": 1}, "status": {"replicas": 2, "readyReplicas": 1}},
        _content_type=MERGE,
        field_manager="sts-controller",
    )
    assert patched.spec.replicas == 4 and patched.status.ready_replicas == 1
    assert patched.metadata.generation == main["metadata"]["generation"]
    entry = next(e for e in patched.metadata.managed_fields if e.manager == "sts-controller")
    assert entry.subresource == "status" and "f:status" in entry.fields_v1
    replaced = apps.replace_namespaced_stateful_set_status(
        "web", "ws-a", {**statefulset(replicas=7), "status": {"replicas": 3}}
    )
    assert replaced.spec.replicas == 4 and replaced.status.replicas == 3
    kube_api.set_status("apps/v1", "StatefulSet", "ws-a", "web", {"replicas": 2, "readyReplicas": 2})
    assert apps.read_namespaced_stateful_set_status("web", "ws-a").status.ready_replicas == 2


def test_dry_run_is_not_stored(kube_api: KubeAPIServer, kube_client) -> None:
    core = client.CoreV1Api(kube_client)
    cm = {"metadata": {"name": "cfg"}, "data": {"a": "1"}}
    assert core.create_namespaced_config_map("ws-a", cm, dry_run="All").data == {"a": "1"}
    assert apply(kube_client, statefulset(), dry_run="All").spec.replicas == 2
    assert kube_api.objects() == [] and kube_api.write_count() == 0
    apply(kube_client, statefulset())
    before = kube_api.get_object("apps/v1", "StatefulSet", "ws-a", "web")
    assert apply(kube_client, statefulset(replicas=9), dry_run="All").spec.replicas == 9
    assert kube_api.get_object("apps/v1", "StatefulSet", "ws-a", "web") == before


def test_optimistic_concurrency_on_replace(kube_api: KubeAPIServer, kube_client) -> None:
    leases = client.CoordinationV1Api(kube_client)
    body = {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    created = leases.create_namespaced_lease("kaito-system", body)
    current = leases.read_namespaced_lease("leader", "kaito-system").to_dict()
    current["spec"]["holder_identity"] = "b"
    renewed = leases.replace_namespaced_lease("leader", "kaito-system", current)
    assert renewed.spec.holder_identity == "b"
    stale = {
        "metadata": {"name": "leader", "resourceVersion": created.metadata.resource_version},
        "spec": {"holderIdentity": "c"},
    }
    with pytest.raises(ApiException) as caught:
        leases.replace_namespaced_lease("leader", "kaito-system", stale)
    body = status_body(caught.value)
    assert caught.value.status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    same = leases.replace_namespaced_lease(
        "leader",
        "kaito-system",
        {
            **stale,
            "metadata": {"name": "leader"},
            "spec": {"holderIdentity": "b", "leaseDurationSeconds": 15},
        },
    )
    assert same.metadata.resource_version == renewed.metadata.resource_version  # unchanged: no write


# -- lists and selectors -----------------------------------------------------------------------------


def test_label_and_field_selectors_across_namespaces(kube_api: KubeAPIServer, kube_client) -> None:
    core = client.CoreV1Api(kube_client)
    for ns, name, labels in [
        ("a", "one", {"app": "x", "tier": "gpu"}),
        ("b", "two", {"app": "x", "tier": "cpu"}),
        ("b", "three", {"app": "y"}),
        ("c", "four", {}),
    ]:
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})

    def names(**kw: Any) -> list[str]:
        return [i.metadata.name for i in core.list_config_map_for_all_namespaces(**kw).items]

    # a real server lists in key order: namespace, then name
    assert names(label_selector="app=x") == ["one", "two"]
    assert names(label_selector="app==x,tier!=gpu") == ["two"]
    assert names(label_selector="tier in (gpu, cpu)") == ["one", "two"]
    assert names(label_selector="app notin (x)") == ["three", "four"]
    assert names(label_selector="!tier") == ["three", "four"]
    assert names(label_selector="app") == ["one", "three", "two"]
    assert names(field_selector="metadata.namespace=b,metadata.name!=two") == ["three"]
    assert [i.metadata.name for i in core.list_namespaced_config_map("b", label_selector="app=x").items] == [
        "two"
    ]
    listing = raw(core.list_config_map_for_all_namespaces(_preload_content=False))
    assert listing["kind"] == "ConfigMapList" and listing["metadata"]["resourceVersion"] == "4"
    assert "kind" not in listing["items"][0]  # like a real server, list items carry no TypeMeta
    page = core.list_config_map_for_all_namespaces(limit=3)
    rest = core.list_config_map_for_all_namespaces(limit=3, _continue=page.metadata._continue)
    assert [i.metadata.name for i in page.items + rest.items] == ["one", "three", "two", "four"]
    assert rest.metadata._continue is None
    with pytest.raises(ApiException) as caught:
        core.list_config_map_for_all_namespaces(field_selector="data.a=1")
    assert caught.value.status == 400
    by_label = client.AppsV1Api(kube_client).list_stateful_set_for_all_namespaces(label_selector="app=web")
    assert by_label.items == []


# -- deletion and garbage collection -------------------------------------------------------------------


def test_cascading_delete_through_owner_references(kube_api: KubeAPIServer, kube_client) -> None:
    apps, core = client.AppsV1Api(kube_client), client.CoreV1Api(kube_client)
    apply(kube_client, statefulset(replicas=2))
    kube_api.reconcile_workloads()
    pods = core.list_namespaced_pod("ws-a", label_selector="app=web").items
    assert [p.metadata.name for p in pods] == ["web-0", "web-1"]
    assert pods[1].metadata.labels["apps.kubernetes.io/pod-index"] == "1"
    assert pods[1].metadata.labels["statefulset.kubernetes.io/pod-name"] == "web-1"
    assert pods[0].metadata.owner_references[0].kind == "StatefulSet"
    kube_api.set_pod_phase("ws-a", "web-0", "Running")
    kube_api.reconcile_workloads()
    assert apps.read_namespaced_stateful_set_status("web", "ws-a").status.ready_replicas == 1
    status = apps.delete_namespaced_stateful_set("web", "ws-a", propagation_policy="Background")
    assert status["kind"] == "Status" and status["status"] == "Success"  # the client types it as `object`
    assert core.list_namespaced_pod("ws-a").items == []
    # Orphan keeps the dependents and strips their owner reference
    apply(kube_client, statefulset(replicas=1))
    kube_api.reconcile_workloads()
    apps.delete_namespaced_stateful_set("web", "ws-a", propagation_policy="Orphan")
    (orphan,) = core.list_namespaced_pod("ws-a").items
    assert orphan.metadata.owner_references is None
    # batch/v1 Jobs orphan their pods unless told otherwise, with a warning header
    batch = client.BatchV1Api(kube_client)
    batch.create_namespaced_job(
        "ws-a",
        {
            "metadata": {"name": "tune"},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "trainer:1"}]}
                }
            },
        },
    )
    kube_api.reconcile_workloads()
    assert len(core.list_namespaced_pod("ws-a", label_selector="job-name=tune").items) == 1
    response = batch.delete_namespaced_job("tune", "ws-a", _preload_content=False)
    assert "child pods are preserved" in response.headers["Warning"]
    assert len(core.list_namespaced_pod("ws-a", label_selector="job-name=tune").items) == 1
    with pytest.raises(ApiException) as caught:
        batch.delete_namespaced_job("tune", "ws-a")
    assert caught.value.status == 404


def test_job_controller_helper_completes_a_job(kube_api: KubeAPIServer, kube_client) -> None:
    batch = client.BatchV1Api(kube_client)
    batch.create_namespaced_job(
        "ws-a",
        {
            "metadata": {"name": "tune"},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "trainer:1"}]}
                }
            },
        },
    )
    kube_api.reconcile_workloads()
    (pod,) = [p for p in kube_api.objects("Pod")]
    assert batch.read_namespaced_job_status("tune", "ws-a").status.active == 1
    kube_api.set_pod_phase("ws-a", pod["metadata"]["name"], "Succeeded")
    kube_api.reconcile_workloads()
    conditions = {
        c.type: c.status for c in batch.read_namespaced_job_status("tune", "ws-a").status.conditions
    }
    assert conditions["Complete"] == "True"


# -- faults and test helpers ---------------------------------------------------------------------------


def test_injected_failure_then_success(kube_api: KubeAPIServer, kube_client) -> None:
    core = client.CoreV1Api(kube_client)
    kube_api.fail_next(1, status=500, methods=["GET"], path_contains="/configmaps")
    with pytest.raises(ApiException) as caught:
        core.list_namespaced_config_map("ws-a")
    assert caught.value.status == 500 and status_body(caught.value)["reason"] == "InternalError"
    assert core.list_namespaced_config_map("ws-a").items == []
    # urllib3 itself retries an idempotent request answered 503 with Retry-After, as it would with a real server
    kube_api.reset_requests()
    kube_api.fail_next(1, status=503, retry_after=0)
    assert core.list_namespace().items == []
    assert [r.status for r in kube_api.requests] == [503, 200]
    kube_api.fail_next(1, status=429, methods=["POST"], retry_after=1)
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map("ws-a", {"metadata": {"name": "c"}})
    assert caught.value.headers["Retry-After"] == "1"
    assert status_body(caught.value)["reason"] == "TooManyRequests"
    assert kube_api.write_count() == 0


def test_latency_trips_client_timeouts_while_other_requests_proceed(
    kube_api: KubeAPIServer, kube_client
) -> None:
    core = client.CoreV1Api(kube_client)
    kube_api.set_latency(0.6, path_contains="/namespaces/slow/")
    errors: list[BaseException] = []

    def slow_call() -> None:
        try:
            core.create_namespaced_config_map("slow", {"metadata": {"name": "c"}}, _request_timeout=0.2)
        except BaseException as error:  # collected for the assertion below
            errors.append(error)

    worker = threading.Thread(target=slow_call)
    worker.start()
    assert core.list_namespaced_config_map("fast").items == []
    worker.join()
    assert isinstance(errors[0], urllib3.exceptions.ReadTimeoutError | urllib3.exceptions.MaxRetryError)
    kube_api.set_latency(0)
    # the server still answers the slow request once its delay ends; the fast one was answered before it
    for _ in range(200):
        if any("/namespaces/slow/" in r.path for r in kube_api.requests):
            break
        time.sleep(0.01)
    paths = [r.path for r in kube_api.requests if r.method in ("GET", "POST")]
    assert paths == ["/api/v1/namespaces/fast/configmaps", "/api/v1/namespaces/slow/configmaps"]


def test_unavailable_server_refuses_connections_then_recovers(kube_api: KubeAPIServer) -> None:
    cfg = kube_api.client_config()
    cfg.retries = 0
    with client.ApiClient(cfg) as api:
        core = client.CoreV1Api(api)
        core.list_namespace()  # leaves a kept-alive connection in the pool
        kube_api.set_available(False)
        with pytest.raises(urllib3.exceptions.HTTPError):
            core.list_namespace()
        kube_api.set_available(True)
        assert core.list_namespace().items == []


def test_state_helpers_and_request_log(kube_api: KubeAPIServer, kube_client) -> None:
    stored = kube_api.put_object(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "gpu-0", "labels": {"agentpool": "ws"}},
            "spec": {},
            "status": {"capacity": {"nvidia.com/gpu": "8"}},
        }
    )
    assert stored["metadata"]["resourceVersion"] == "1"
    nodes = client.CoreV1Api(kube_client).list_node(label_selector="agentpool=ws").items
    assert nodes[0].status.capacity == {"nvidia.com/gpu": "8"}
    apply(kube_client, statefulset())
    assert [o["metadata"]["name"] for o in kube_api.objects("StatefulSet")] == ["web"]
    last = kube_api.requests[-1]
    assert (last.method, last.path, last.status) == (
        "PATCH",
        "/apis/apps/v1/namespaces/ws-a/statefulsets/web",
        201,
    )
    assert last.query == {"fieldManager": MANAGER} and last.content_type == APPLY
    assert last.body["kind"] == "StatefulSet"
    assert kube_api.write_count() == 1
    kube_api.reset_requests()
    assert kube_api.requests == [] and kube_api.write_count() == 0
    assert kube_api.delete_object("v1", "Node", None, "gpu-0")
    assert kube_api.get_object("v1", "Node", None, "gpu-0") is None
