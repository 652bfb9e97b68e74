"""Benchmark: the daemon (`kaito-gitops run`, its own process) with 1,000 workspaces and 1,000
other objects beside them (ConfigMaps, PVCs, ServiceAccounts, NetworkPolicies; docs/objects.md).

A real git remote (git daemon), the Kubernetes API double in this process, webhooks signed
like GitHub's. Prints:
  * time to the first full apply (every object of every workspace exists),
  * a no-op pass (revision unchanged): its duration and how many writes it made,
  * push -> applied latency through the webhook for one changed workspace (p50, p95),
  * the daemon's peak RSS.
Targets (issue 4): 0 writes and < 1 s for the no-op pass, push -> applied p50 < 1 s, RSS < 200 MiB;
(issue 14) the no-op pass stays at 0 writes with the 1,000 other objects.

Usage: python tests/bench/reconcile_bench.py [N] [PUSHES] [OTHER_OBJECTS]
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from doubles.kube_api import KubeAPIServer  # noqa: E402
from doubles.kube_fixtures import gpu_node  # noqa: E402
from support.gitserver import GitDaemon, GitRemote  # noqa: E402
from support.net import free_port  # noqa: E402
from support.wait import wait_until  # noqa: E402
from support.webhooks import deliver  # noqa: E402

SECRET = b"bench-secret"


def workspace(i: int, preset: str = "phi-4-mini-instruct") -> str:
    # bring-your-own nodes (no instanceType): every workspace schedules onto the shared GPU pool
    return f"""apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: ws-{i:04d}
  namespace: team-{i % 10}
resource:
  labelSelector:
    matchLabels:
      pool: gpu
inference:
  preset:
    name: {preset}
"""


COMPANION_KINDS = ("ConfigMap", "PersistentVolumeClaim", "ServiceAccount", "NetworkPolicy")


def companion(j: int) -> str:
    ns, name = f"team-{j % 10}", f"obj-{j:04d}"
    kind = COMPANION_KINDS[j % len(COMPANION_KINDS)]
    head = f"kind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
    if kind == "ConfigMap":
        return f"apiVersion: v1\n{head}data:\n  settings.yaml: 'batch: {j}'\n"
    if kind == "PersistentVolumeClaim":
        return f"apiVersion: v1\n{head}spec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n"
    if kind == "ServiceAccount":
        return f"apiVersion: v1\n{head}"
    return (
        f"apiVersion: networking.k8s.io/v1\n{head}spec:\n  podSelector: {{matchLabels: {{app: obj-{j}}}}}\n"
    )


def companion_files(m: int, per_file: int = 10) -> dict[str, str]:
    """m objects, ten to a file, as teams keep them beside their workspaces."""
    return {
        f"workspaces/objects-{f:03d}.yaml": "---\n".join(
            companion(j) for j in range(f * per_file, min(m, (f + 1) * per_file))
        )
        for f in range((m + per_file - 1) // per_file)
    }


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2):
            return True
    except OSError:
        return False


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    pushes = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    m = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    tmp = Path(tempfile.mkdtemp(prefix="reconcile-bench-"))
    gitd = GitDaemon(tmp / "served").start()
    remote = GitRemote(tmp / "served", daemon=gitd)
    files = {f"workspaces/ws-{i:04d}.yaml": workspace(i) for i in range(n)} | companion_files(m)
    remote.write(files, f"{n} workspaces, {m} other objects")
    with KubeAPIServer() as kube:
        gfd = {  # GPU feature discovery's labels size bring-your-own nodes
            "pool": "gpu",
            "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
            "nvidia.com/gpu.count": "8",
            "nvidia.com/gpu.memory": "81920",
        }
        for j in range(4):
            kube.put_object(gpu_node(f"gpu-{j}", gfd, gpus=8))
        kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "KAITO_GITOPS_WEBHOOK_SECRET": SECRET.decode(), "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [
            sys.executable,
            "-m",
            "reconciler",
            "run",
            "--repo",
            remote.url,
            "--path",
            "workspaces",
            "--target",
            "kubernetes",
            "--kubeconfig",
            str(kubeconfig),
            "--listen",
            f"127.0.0.1:{port}",
            "--interval",
            "1h",
            "--status",
            "off",
            "--log-format",
            "json",
            "--log-level",
            "warning",
            "--cache-dir",
            str(tmp / "cache"),
            "--workers",
            "8",
        ]
        start = time.perf_counter()
        daemon_log = open(tmp / "daemon.log", "w")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=daemon_log)
        try:
            # the first pass applies everything; poll the daemon's metrics, not the API (cheap)
            wait_until(
                lambda: _up(url) and metric(url, "kaito_gitops_pass_duration_seconds_count") >= 1,
                600,
                "the first pass",
                proc=proc,
            )
            first = time.perf_counter() - start
            objects = len(kube.objects("StatefulSet")) + len(kube.objects("Service"))
            assert objects == 3 * n, f"{objects} objects after the first pass"
            others = sum(len(kube.objects(k)) for k in COMPANION_KINDS)
            assert others == m, f"{others} of {m} other objects after the first pass"

            # no-op pass: same revision, triggered by a webhook
            writes0 = kube.write_count()
            count0 = metric(url, "kaito_gitops_pass_duration_seconds_count")
            sum0 = metric(url, "kaito_gitops_pass_duration_seconds_sum")
            body = json.dumps({"ref": "refs/heads/main", "after": remote.head()}).encode()
            assert deliver(url + "/webhook", body, "push", SECRET) == 202
            wait_until(
                lambda: metric(url, "kaito_gitops_pass_duration_seconds_count") > count0, 60, "the no-op pass"
            )
            noop_seconds = metric(url, "kaito_gitops_pass_duration_seconds_sum") - sum0
            noop_writes = kube.write_count() - writes0

            # push -> applied: change one workspace, deliver the webhook, wait for the object
            latencies = []
            for k in range(pushes):
                i = k % n
                # away from the workspace's current preset, so every sample waits for a real change
                preset = "phi-3.5-mini-instruct" if (k // n) % 2 == 0 else "phi-4-mini-instruct"
                sha = remote.write({f"workspaces/ws-{i:04d}.yaml": workspace(i, preset)}, f"change {k}")
                body = json.dumps({"ref": "refs/heads/main", "after": sha}).encode()
                t0 = time.perf_counter()
                assert deliver(url + "/webhook", body, "push", SECRET) == 202

                def applied(i=i, preset=preset) -> bool:
                    sts = kube.get_object("apps/v1", "StatefulSet", f"team-{i % 10}", f"ws-{i:04d}")
                    cmd = (
                        (sts or {})
                        .get("spec", {})
                        .get("template", {})
                        .get("spec", {})
                        .get("containers", [{}])[0]
                    )
                    return any(
                        preset.replace("-instruct", "") in part.lower() for part in cmd.get("command", [])
                    )

                wait_until(applied, 60, f"change {k} applied", step=0.005)
                latencies.append(time.perf_counter() - t0)
            rss = peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
            daemon_log.close()
            gitd.stop()
    lat = sorted(latencies)
    p95 = lat[max(0, round(0.95 * len(lat)) - 1)]
    print(f"reconcile_bench: {n} workspaces ({3 * n} objects) and {m} other objects")
    print(f"  first full apply:        {first:.2f} s (process start to the end of the first pass)")
    print(f"  no-op pass:              {noop_seconds:.3f} s, {noop_writes} write calls")
    print(
        f"  push -> applied webhook: p50 {statistics.median(lat):.3f} s, p95 {p95:.3f} s over {len(lat)} pushes"
    )
    print(f"  daemon peak RSS:         {rss:.0f} MiB")


if __name__ == "__main__":
    main()
