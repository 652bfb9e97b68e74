"""Rendered objects: valid Kubernetes 1.31 (strict), Kaito's shape, golden files, the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
from planfixtures import ROOT, SETTINGS, every_preset_on_every_sku, example_and_fixture_state

from reconciler.cli import main
from reconciler.manifests import dump, file_name
from reconciler.render.nodepool import pool_name

GOLDEN = ROOT / "tests" / "golden"


def all_objects():
    for state in (example_and_fixture_state(),):
        for plan in state.plans.values():
            yield from plan.objects


def test_every_rendered_object_is_valid_kubernetes_1_31_strict():
    objects = list(all_objects())
    # a sample of the preset x SKU matrix too: one workspace per preset
    seen = set()
    for plan in every_preset_on_every_sku().plans.values():
        if plan.model.name not in seen:
            seen.add(plan.model.name)
            objects.extend(plan.objects)
    assert len(objects) > 60
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, "1.31.0", strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")


def plan_of(name):
    for (_ns, n), p in example_and_fixture_state().plans.items():
        if n == name:
            return p
    raise KeyError(name)


def test_multi_node_statefulset_wiring():
    p = plan_of("llama-70b")
    svc, headless, sts = p.objects
    assert p.nodes == 2 and sts["spec"]["replicas"] == 2 and sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"] == "llama-70b-headless"
    assert headless["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == "llama-70b-0"
    assert svc["spec"]["type"] == "LoadBalancer"  # kaito.sh/enablelb: "True"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"}]
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    cmd = c["command"]
    assert cmd[:3] == ["python", "-m", "runtime.inference"]
    assert (
        cmd[cmd.index("--dist-init-addr") + 1] == "llama-70b-0.llama-70b-headless.llm.svc.cluster.local:20000"
    )
    assert cmd[cmd.index("--tp-size") + 1] == "2" and cmd[cmd.index("--pp-size") + 1] == "2"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    env = {e["name"]: e for e in c["env"]}
    assert (
        env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert {t["key"] for t in pod["tolerations"]} == {"nvidia.com/gpu", "sku"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    keys = {e["key"]: e["values"] for e in terms[0]["matchExpressions"]}
    assert keys == {
        "apps": ["llama-70b"],
        "kaito.sh/workspace": ["llama-70b"],
        "kaito.sh/workspacenamespace": ["llm"],
    }
    # the startup budget grows with the model: 15 min + 18 s/GiB (131 GiB -> 54 min)
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == pytest.approx(
        3265, abs=10
    )
    # the node pool carries the labels the pods require
    pool = p.node_pool
    assert pool.count == 2 and pool.vm_size == "Standard_NC48ads_A100_v4" and pool.os_sku == "AzureLinux"
    assert all(pool.labels[k] == v[0] for k, v in keys.items())
    assert pool.taints == ("sku=gpu:NoSchedule",) and pool.mode == "User" and pool.os_disk_gb == 220


def test_adapters_and_translated_config():
    p = plan_of("qwen-coder")
    sts = p.objects[-1]
    pod = sts["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["command"][:7] == [
        "python",
        "-m",
        "runtime.adapters",
        "pull",
        "--image",
        "myregistry.azurecr.io/adapters/qwen-sql:1.0",
        "--dest",
    ]
    assert "--docker-config" in init["command"]
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/mnt/adapter", "/mnt/adapter/docs"} <= mounts
    cmd = pod["containers"][0]["command"]
    assert "--adapters-dir" in cmd
    extra = cmd[cmd.index("--") + 1 :]
    assert extra == [
        "--tool-call-parser",
        "hermes",
        "--attention-backend",
        "triton",
        "--chunked-prefill-size",
        "4096",
    ]
    assert cmd[cmd.index("--context-length") + 1] == "16384"  # vllm max-model-len translated


def test_every_object_carries_ownership_labels_and_annotations():
    for obj in all_objects():
        md = obj["metadata"]
        assert md["labels"]["app.kubernetes.io/managed-by"] == "kaito-gitops"
        assert md["labels"]["kaito.sh/workspace"] and md["labels"]["kaito.sh/workspacenamespace"]
        ann = md["annotations"]
        assert ann["kaito-gitops.io/revision"] == SETTINGS.revision
        assert ann["kaito-gitops.io/source"].endswith(".yaml")
        assert len(ann["kaito-gitops.io/spec-hash"]) == 16 and ann["kaito-gitops.io/object-hash"]


def test_tuning_job_shape():
    p = plan_of("tuning-phi-3")
    cm, job = p.objects
    assert (cm["kind"], job["kind"]) == ("ConfigMap", "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
    [fetch] = pod["initContainers"]
    assert fetch["command"][:5] == ["python", "-m", "runtime.data", "fetch", "--dest"]
    training = cm["data"]["training_config.yaml"]
    assert "load_in_4bit: true" in training and "bnb_4bit_compute_dtype: float16" in training  # V100: no bf16
    assert "fp16: true" in training


def test_node_pool_names_are_valid_for_aks_and_stable():
    import re

    seen = set()
    for plan in every_preset_on_every_sku().plans.values():
        name = plan.node_pool.name
        assert re.fullmatch(r"[a-z][a-z0-9]{0,11}", name), name
        seen.add(name)
    assert len(seen) == len(every_preset_on_every_sku().plans)
    assert pool_name("a", "ws") == pool_name("a", "ws") != pool_name("b", "ws")
    assert pool_name("x", "123-abc").startswith("k")


@pytest.mark.parametrize("workspace", ["tuning-phi-3", "llama-70b"])
def test_golden_files(workspace):
    """Seed tuning example and a multi-node inference example, byte for byte (UPDATE_GOLDEN=1 rewrites)."""
    p = plan_of(workspace)
    folder = GOLDEN / workspace
    rendered = {file_name(o): dump(o) for o in p.objects}
    pool = dict(p.node_pool.__dict__)
    rendered["nodepool.json"] = json.dumps(pool, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        folder.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            f.unlink()
        for name, text in rendered.items():
            (folder / name).write_text(text)
    expected = {f.name: f.read_text() for f in folder.iterdir()}
    assert rendered == expected, (
        "rendering changed; check the diff and rerun with UPDATE_GOLDEN=1 if intended"
    )


def test_render_cli_writes_one_file_per_object_and_removes_stale(tmp_path, capsys):
    out = tmp_path / "out"
    stale = out / "default" / "smollm2" / "deployment-old.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "example-repo", copy)
    assert main(["render", str(copy), "--out", str(out)]) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.yaml"))
    assert files == [
        "default/smollm2/service-smollm2-headless.yaml",
        "default/smollm2/service-smollm2.yaml",
        "default/smollm2/statefulset-smollm2.yaml",
        "llm/_objects/configmap-phi-3-serving.yaml",  # the ConfigMap beside the workspace (docs/objects.md)
        "llm/phi-3-mini/service-phi-3-mini-headless.yaml",
        "llm/phi-3-mini/service-phi-3-mini.yaml",
        "llm/phi-3-mini/statefulset-phi-3-mini.yaml",
        "llm/tuning-phi-3/configmap-tuning-phi-3-training-config.yaml",
        "llm/tuning-phi-3/job-tuning-phi-3.yaml",
    ]
    assert not list(out.rglob("*.tmp"))
    # the same files again: nothing is rewritten; a workspace whose file went loses its folder
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.yaml")}
    (copy / "local" / "smollm2.yaml").unlink()
    (copy / "evals" / "smollm2.yaml").unlink()  # its eval suite goes with it (else: eval-workspace-unknown)
    capsys.readouterr()
    assert main(["render", str(copy), "--out", str(out)]) == 0
    assert "removed default/smollm2" in capsys.readouterr().err
    assert not (out / "default").exists()
    assert all(p.stat().st_mtime_ns == before[p] for p in out.rglob("*.yaml"))


def test_plan_cli_formats(capsys):
    assert main(["plan", str(ROOT / "example-repo")]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Plan: 3 to add, 0 to change, 0 to replace, 0 to remove; GPUs 0 -> 3 (+3)")
    assert "1 x Standard_NC6s_v3 (1 x V100 16 GiB) = 1 GPU, $3.06/hour" in text
    assert main(["plan", str(ROOT / "example-repo"), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "<details><summary>" in md and "| `llm/tuning-phi-3` | add | +1 | +$3.06 |" in md
    assert main(["plan", str(ROOT / "example-repo"), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["add"] == 3 and data["summary"]["pricePerHour"] == pytest.approx(9.933)


def test_plan_against_a_base_revision(tmp_path, monkeypatch, capsys):
    import git

    repo = git.Repo.init(tmp_path, initial_branch="main")
    repo.config_writer().set_value("user", "name", "t").set_value("user", "email", "t@e").release()
    src = (ROOT / "tests" / "fixtures" / "workspaces" / "multinode-llama.yaml").read_text()
    tune = (ROOT / "example-repo" / "workspaces" / "tuning-phi-3.yaml").read_text()
    small = (ROOT / "example-repo" / "local" / "smollm2.yaml").read_text()
    (tmp_path / "ws").mkdir()
    for name, text in (("llama.yaml", src), ("tune.yaml", tune), ("small.yaml", small)):
        (tmp_path / "ws" / name).write_text(text)
    repo.index.add(["ws/llama.yaml", "ws/tune.yaml", "ws/small.yaml"])
    repo.index.commit("base")
    # change: bigger VM size (pool replaced), tuning method (workspace replaced), remove one, add one
    (tmp_path / "ws" / "llama.yaml").write_text(
        src.replace("Standard_NC48ads_A100_v4", "Standard_NC96ads_A100_v4")
    )
    (tmp_path / "ws" / "tune.yaml").write_text(
        tune.replace("imagePushSecret: acr-push", "imagePushSecret: acr-push2")
    )
    (tmp_path / "ws" / "small.yaml").unlink()
    (tmp_path / "ws" / "new.yaml").write_text(small.replace("  name: smollm2\n", "  name: smollm2-b\n"))
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "ws", "--base", "HEAD", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    actions = {w["name"]: (w["action"], w["nodePool"]) for w in data["workspaces"]}
    assert actions == {
        "llama-70b": ("replace", "replace"),
        "tuning-phi-3": ("change", "unchanged"),
        "smollm2": ("remove", "delete"),
        "smollm2-b": ("add", "create"),
    }
    tune_objs = {
        o["kind"]: o["action"]
        for w in data["workspaces"]
        if w["name"] == "tuning-phi-3"
        for o in w["objects"]
    }
    assert tune_objs == {
        "ConfigMap": "unchanged",
        "Job": "replace",
    }  # a Job's template cannot change in place
    llama = next(w for w in data["workspaces"] if w["name"] == "llama-70b")
    assert llama["after"]["nodes"] == 1 and llama["before"]["nodes"] == 2  # 4 A100s fit it on one node


def test_byo_plan_says_where_gpus_come_from():
    p = plan_of("phi-4-byo")
    assert p.node_pool is None and p.sku is None
    assert any("bring-your-own nodes" in n for n in p.notes)
    cmd = p.objects[-1]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--config-file" in cmd
    vols = p.objects[-1]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "cluster-only-config"}} in vols


def test_with_your_own_nodes_an_instance_type_only_sizes():
    """Provisioner none (Kaito's disableNodeAutoProvisioning): no pool, and pods must not wait
    for the kaito.sh/workspace labels that only our pools carry."""
    from dataclasses import replace

    from reconciler.planning import plan_revision
    from reconciler.source.tree import disk_files
    from reconciler.validation import validate_sources

    files = list(disk_files([str(ROOT / "example-repo" / "workspaces")], 1 << 20, relative_to=str(ROOT)))
    ours = plan_revision(validate_sources(files), SETTINGS).plans
    theirs = plan_revision(validate_sources(files, byo_nodes=True), replace(SETTINGS, byo_nodes=True)).plans
    key = next(k for k, p in ours.items() if p.kind == "inference")
    mine, byo = ours[key], theirs[key]
    assert mine.node_pool is not None and byo.node_pool is None
    assert byo.sku == mine.sku and byo.command == mine.command  # the named size still sizes SGLang

    def affinity_keys(plan):
        spec = plan.objects[-1]["spec"]["template"]["spec"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        return {e["key"] for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]}

    assert "kaito.sh/workspace" in affinity_keys(mine)
    assert "kaito.sh/workspace" not in affinity_keys(byo)
    assert affinity_keys(byo) == set(mine.workspace.resource.match_labels)


def test_a_model_the_catalog_cannot_size_keeps_what_the_config_pins(validate):
    text = """apiVersion: v1
kind: ConfigMap
metadata: {name: serve}
data:
  inference_config.yaml: |
    vllm:
      tensor-parallel-size: 2
      max-model-len: 4096
      gpu-memory-utilization: 0.8
---
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: custom}
resource:
  instanceType: Standard_NC96ads_A100_v4
  count: 2
  labelSelector: {matchLabels: {apps: custom}}
inference:
  preset: {name: someorg/some-model}
  config: serve
"""
    from reconciler.planning import plan_revision

    rev = validate(text)
    assert not rev.has_errors, [f.text() for f in rev.findings]
    [plan] = plan_revision(rev, SETTINGS).plans.values()
    cmd = plan.command
    flags = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert flags["--tp-size"] == "2" and flags["--pp-size"] == "2" and flags["--nnodes"] == "2"
    assert flags["--context-length"] == "4096" and flags["--mem-fraction-static"] == "0.8"
    assert "--dtype" not in flags  # SGLang picks it from the model's config


def test_a_relative_output_dir_is_rendered_under_mnt(validate):
    from reconciler.planning import plan_revision

    tune = (ROOT / "example-repo" / "workspaces" / "tuning-phi-3.yaml").read_text()
    config = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: train, namespace: llm}\ndata:\n"
        "  training_config.yaml: |\n    training_config:\n      TrainingArguments:\n"
        "        output_dir: results/adapter\n---\n"
    )
    text = config + tune.replace("  method: qlora\n", "  method: qlora\n  config: train\n")
    plan = next(iter(plan_revision(validate(text), SETTINGS).plans.values()))
    container = plan.objects[-1]["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["results"] == "/mnt/results/adapter"
    cmd = container["command"]
    assert cmd[cmd.index("--output-dir") + 1] == "/mnt/results/adapter"
    assert {"name": "KAITO_PROGRESS_FILE", "value": "/mnt/results/adapter/progress.json"} in container["env"]


def test_sku_of_the_plan_has_a_price(tmp_path):
    p = plan_of("deepseek-r1")
    assert p.price_per_hour == pytest.approx(5 * 13.96) and p.gpus == 10


__all__ = ["Path"]
