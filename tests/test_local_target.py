"""The local target: workspaces from a real git repository run as processes on this machine.

Tuning trains a tiny model for real (4-bit QLoRA on CPU) from a hostPath folder into a
hostPath folder; inference serves SmolLM2-135M-Instruct (tests/test_e2e_local.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from support.gitserver import GitRemote
from support.tiny_model import build_tiny_model
from support.wait import run_passes_until, wait_until

from reconciler.daemon import Daemon, DaemonSettings
from reconciler.provisioners.none import NoneProvisioner
from reconciler.source.git import GitSource
from reconciler.targets.local import LocalTarget

pytestmark = pytest.mark.ml

TUNING = """apiVersion: v1
kind: ConfigMap
metadata:
  name: tiny-train
data:
  training_config.yaml: |
    training_config:
      LoraConfig:
        r: 8
        lora_alpha: 16
        target_modules: [q_proj, k_proj, v_proj, o_proj]
      TrainingArguments:
        max_steps: 12
        per_device_train_batch_size: 4
        learning_rate: 0.005
        logging_steps: 1
        lr_scheduler_type: constant
        seed: 0
---
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: tune-tiny
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: tune-tiny
tuning:
  preset:
    name: kaito-test/tiny-llama
  method: qlora
  config: tiny-train
  input:
    volumeSource:
      hostPath:
        path: {data}
  output:
    volumeSource:
      hostPath:
        path: {out}
"""


def hf_cache_with(model_dir: Path, hf_home: Path, repo_id: str) -> None:
    """Put a model folder into a Hugging Face cache the way a download would (offline lookups find it)."""
    commit = "0" * 40
    base = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)


def dolly(path: Path, rows: int = 48) -> None:
    facts = [
        ("What is the capital of France?", "Paris."),
        ("What is the capital of Italy?", "Rome."),
        ("What is the capital of Germany?", "Berlin."),
        ("Name a color of the sky.", "Blue."),
    ]
    data = [{"instruction": q, "context": "", "response": a, "category": "open_qa"} for q, a in facts] * (
        rows // 4
    )
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(data).to_parquet(path / "train.parquet")


def test_tuning_with_host_paths_reaches_succeeded_with_loss(tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    hf_cache_with(build_tiny_model(tmp_path / "tiny"), hf_home, "kaito-test/tiny-llama")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data, out = tmp_path / "data", tmp_path / "adapter-out"
    dolly(data)
    remote = GitRemote(tmp_path / "git")
    remote.write({"workspaces/tune.yaml": TUNING.replace("{data}", str(data)).replace("{out}", str(out))})
    target = LocalTarget(tmp_path / "state", cache_dir=hf_home)
    d = Daemon(
        GitSource(remote.url, "main", tmp_path / "cache"),
        target,
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], target_name="local"),
    )
    try:
        d.run_pass()
        [rep] = d.reports()
        assert not rep.errors, [f.text() for f in rep.errors]
        run_passes_until(d, lambda: d.reports()[0].status.state in ("Succeeded", "Failed"), 240, step=0.5)
        status = d.reports()[0].status
        log = tmp_path / "state" / "default" / "tune-tiny" / "tuning.log"
        assert status.state == "Succeeded", log.read_text()[-2000:] if log.exists() else status
        assert status.condition("WorkspaceSucceeded").status == "True"
        assert status.progress is not None and status.progress.step == 12 and status.progress.loss is not None
        assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
        assert (out / "fine_tuning_completed.txt").exists()
    finally:
        d.close()


def test_a_model_too_large_for_this_machine_is_refused_with_numbers(tmp_path):
    ws = (Path(__file__).resolve().parent.parent / "example-repo" / "local" / "smollm2.yaml").read_text()
    big = (
        ws.replace("smollm2-135m-instruct", "llama-3.3-70b-instruct")
        .replace(
            "    name: llama-3.3-70b-instruct\n",
            "    name: llama-3.3-70b-instruct\n    presetOptions:\n      modelAccessSecret: hf-token\n",
        )
        .replace("Standard_NV36ads_A10_v5", "Standard_NC96ads_A100_v4")
    )
    remote = GitRemote(tmp_path / "git")
    remote.write({"workspaces/big.yaml": big})
    target = LocalTarget(tmp_path / "state")
    d = Daemon(
        GitSource(remote.url, "main", tmp_path / "cache"),
        target,
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], target_name="local"),
    )
    try:
        d.run_pass()
        [rep] = d.reports()
        c = rep.status.condition("InferenceReady")
        assert c.status == "False" and "llama-3.3-70b-instruct needs about" in c.message
        assert "GiB available" in c.message
        assert target.workloads[("default", "smollm2")].proc is None, "nothing was started"
    finally:
        d.close()


def test_stopping_leaves_no_process_behind(tmp_path):
    """A workload whose command runs forever is stopped (with its process group) on close."""
    from reconciler.targets.local import Workload

    target = LocalTarget(tmp_path / "state")
    folder = tmp_path / "state" / "w"
    folder.mkdir(parents=True)
    sleeper = ["/bin/sh", "-c", "sleep 300 & sleep 300"]
    w = Workload(("default", "w"), "tuning", "sig", folder, [sleeper])
    target.workloads[w.key] = w
    import threading

    w.thread = threading.Thread(target=target._supervise, args=(w,), daemon=True)
    w.thread.start()
    wait_until(lambda: w.proc is not None, 10, "the workload's process")
    pgid = w.proc.pid
    assert live_in_group(pgid) >= 2  # the shell and its sleeps
    target.close()
    time.sleep(0.2)
    assert live_in_group(pgid) == 0, "no process of the workload survives"


def live_in_group(pgid: int) -> int:
    """Processes of a process group that are not zombies (an init that does not reap keeps those)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            count += 1
    return count


def test_tuning_a_preset_too_large_to_train_here_is_refused_before_downloading(tmp_path):
    from reconciler.catalog import load_catalog
    from reconciler.targets.local import CPU_TUNING_BYTES_PER_PARAM, available_memory

    need = load_catalog().model("phi-3-mini-128k-instruct").parameters_b * 1e9 * CPU_TUNING_BYTES_PER_PARAM
    if available_memory() >= need:
        pytest.skip("this machine has the memory to train Phi-3 on CPU")
    ws = (
        Path(__file__).resolve().parent.parent / "example-repo" / "workspaces" / "tuning-phi-3.yaml"
    ).read_text()
    remote = GitRemote(tmp_path / "git")
    remote.write({"workspaces/tune.yaml": ws})
    target = LocalTarget(tmp_path / "state", docker_config="")
    d = Daemon(
        GitSource(remote.url, "main", tmp_path / "cache"),
        target,
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], target_name="local"),
    )
    try:
        d.run_pass()
        [rep] = d.reports()
        assert rep.status.state == "Failed", rep.status
        message = rep.status.condition("WorkspaceSucceeded").message
        assert "phi-3-mini-128k-instruct needs about" in message and "to train on CPU" in message
        assert "nothing was downloaded" in message
        assert target.workloads[("llm", "tuning-phi-3")].proc is None, "nothing was started"
    finally:
        d.close()


def test_an_image_output_without_push_credentials_says_it_was_not_pushed(tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    hf_cache_with(build_tiny_model(tmp_path / "tiny"), hf_home, "kaito-test/tiny-llama")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("KAITO_GITOPS_DOCKER_CONFIG", raising=False)
    data = tmp_path / "data"
    dolly(data, rows=8)
    ws = TUNING.replace("{data}", str(data)).replace("max_steps: 12", "max_steps: 2")
    ws = ws.replace(
        "  output:\n    volumeSource:\n      hostPath:\n        path: {out}\n",
        "  output:\n    image: 127.0.0.1:5999/adapters/tiny:0.1\n    imagePushSecret: local-push\n",
    )
    remote = GitRemote(tmp_path / "git")
    remote.write({"workspaces/tune.yaml": ws})
    d = Daemon(
        GitSource(remote.url, "main", tmp_path / "cache"),
        LocalTarget(tmp_path / "state", cache_dir=hf_home),
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], target_name="local"),
    )
    try:
        d.run_pass()
        run_passes_until(d, lambda: d.reports()[0].status.state in ("Succeeded", "Failed"), 240, step=0.5)
        status = d.reports()[0].status
        assert status.state == "Succeeded", status
        message = status.condition("WorkspaceSucceeded").message
        assert "not pushed to 127.0.0.1:5999/adapters/tiny:0.1" in message
        assert "KAITO_GITOPS_DOCKER_CONFIG" in message
    finally:
        d.close()
