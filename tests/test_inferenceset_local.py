"""An autoscaled InferenceSet on the local target: SmolLM2 from zero to three and back to zero.

The daemon runs in this process with the real local target (members are real CPU servers of
SmolLM2), the real activator on the set's port and the autoscaler reading the members' /metrics.
Nothing but the clock is shortened: a 10 s idle window instead of 5 minutes.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import structlog
from support.wait import wait_until
from test_e2e_local import processes_mentioning

from reconciler.daemon import Daemon, DaemonSettings
from reconciler.provisioners.none import NoneProvisioner
from reconciler.report.statusview import status_files
from reconciler.scaler import Scaler
from reconciler.source.git import GitSource
from reconciler.targets.local import LocalTarget, Workload

SET = """\
apiVersion: kaito.sh/v1beta1
kind: InferenceSet
metadata:
  name: smol
  annotations:
    scaling.kaito-gitops.io/min-replicas: "0"
    scaling.kaito-gitops.io/max-replicas: "3"
    scaling.kaito-gitops.io/target-queue-per-replica: "2"
    scaling.kaito-gitops.io/scale-down-after: 10s
spec:
  replicas: 0
  labelSelector:
    matchLabels:
      apps: smol
  template:
    resource:
      instanceType: Standard_NV36ads_A10_v5
    inference:
      preset:
        name: smollm2-135m-instruct
"""
KEY = ("default", "smol")


def ask(endpoint: str, question: str = "What is the capital of France? Answer in one word.", tokens=12):
    return httpx.post(
        f"{endpoint}/v1/chat/completions",
        json={
            "model": "smollm2-135m-instruct",
            "temperature": 0,
            "max_tokens": tokens,
            "messages": [{"role": "user", "content": question}],
        },
        timeout=300,
    )


@pytest.mark.ml
@pytest.mark.slow
def test_smollm2_set_scales_from_zero_to_three_under_load_and_back_to_zero(
    tmp_path, git_remote, smollm_cache, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KAITO_MODEL_CACHE", str(smollm_cache))
    git_remote.write({"workspaces/smol.yaml": SET}, "an autoscaled SmolLM2 set")
    state = tmp_path / "state"
    target = LocalTarget(state, cache_dir=tmp_path / "hf")
    daemon = Daemon(
        GitSource(git_remote.url, "main", tmp_path / "cache"),
        target,
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], interval=1.0, backoff_min=0.2, backoff_max=2),
    )
    scaler = Scaler(daemon, every=0.5).start()
    loop = threading.Thread(target=daemon.run_forever, daemon=True)
    loop.start()

    def members():
        return sorted(k[1] for k in target.workloads if k[1].startswith("smol-"))

    try:
        endpoint = wait_until(lambda: daemon.set_endpoints.get(KEY), 30, "the set's endpoint")
        time.sleep(2)
        assert daemon.set_counts[KEY] == 0 and members() == [], "nothing runs before the first request"

        # 0 -> 1: the first request is held while a member starts, then answered
        r = ask(endpoint)
        assert r.status_code == 200, r.text
        assert "Paris" in r.json()["choices"][0]["message"]["content"]
        assert members() == ["smol-0"]
        wait_until(lambda: daemon.scaling[KEY].cold_start_seconds, 10, "the cold start figure")
        assert daemon.scaling[KEY].last_event.reason == "1 request(s) waiting with no replica running"

        # bounded load: 8 clients at once, target 2 per replica -> 3 members, every request answered
        stop = threading.Event()
        codes: list[int] = []

        def client():
            while not stop.is_set():
                codes.append(ask(endpoint, "Tell me about the sea.", tokens=24).status_code)

        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(client)
            wait_until(
                lambda: len([k for k, w in target.workloads.items() if w.state == "Ready"]) == 3,
                240,
                lambda: f"three ready members (count {daemon.set_counts[KEY]}, {members()})",
            )
            served = len(codes)
            wait_until(lambda: len(codes) > served + 8, 120, "requests answered by three members")
            stop.set()
        assert set(codes) == {200}, f"no request lost under load: {sorted(set(codes))}"
        assert members() == ["smol-0", "smol-1", "smol-2"]

        # idle: back to zero after the window, and no server process is left
        wait_until(lambda: daemon.set_counts[KEY] == 0 and not members(), 60, "scaled back to zero")
        wait_until(lambda: not processes_mentioning(str(state)), 20, "no member process left")
        ev = daemon.scaling[KEY].last_event
        assert (ev.new, ev.reason) == (0, "no request for 10s"), ev
        assert daemon.scaling[KEY].gpu_seconds_saved > 0

        def set_status():
            return status_files(
                daemon.reports(),
                daemon.revision,
                (),
                daemon.validated.inference_sets,
                daemon.scaling,
                daemon.set_endpoints,
            )["status/default/smol.yaml"]

        doc = wait_until(lambda: "replicas: 0" in set_status() and set_status(), 10, "the set's status at 0")
        assert "replicas: 0" in doc and f"endpoint: {endpoint}" in doc and "to: 0" in doc, doc
        assert "reason: no request for 10s" in doc and "coldStartSeconds:" in doc, doc

        # the endpoint stays: a request after the idle window starts a member again
        assert ask(endpoint).status_code == 200
    finally:
        scaler.close()
        daemon.stop()
        loop.join(30)
        daemon.close()
    assert not processes_mentioning(str(state)), "stopping the daemon leaves no member or activator behind"


def test_a_crashing_member_is_restarted_with_backoff_and_never_ready_so_requests_wait_then_get_503(tmp_path):
    target = LocalTarget(tmp_path / "state", hold_timeout=3.0)

    class Set:
        name, namespace, key = "crash", "default", ("default", "crash")

    [endpoint] = target.serve_sets([Set]).values()
    folder = tmp_path / "state" / "default" / "crash-0"
    folder.mkdir(parents=True)
    w = Workload(("default", "crash-0"), "inference", "sig", folder, [["/bin/sh", "-c", "exit 3"]], port=9)
    w.set_key = Set.key
    target.workloads[w.key] = w
    with structlog.testing.capture_logs() as logs:
        w.thread = threading.Thread(target=target._supervise, args=(w,), daemon=True)
        w.thread.start()
        r = httpx.get(f"{endpoint}/v1/models", timeout=30)
        wait_until(lambda: w.restarts >= 3, 20, "three restarts")
        load = target.set_load(Set, [w.key])
        target.close()
    assert r.status_code == 503 and r.json()["error"]["code"] == "cold_start_timeout"
    delays = [e["restart_in"] for e in logs if e["event"] == "local server died; restarting"]
    assert delays[:3] == [1.0, 2.0, 4.0], delays
    assert w.state != "Ready" and load.ready == 0
    assert "server exited with code 3" in w.error
