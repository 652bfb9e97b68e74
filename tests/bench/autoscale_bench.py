"""Benchmark: an autoscaled SmolLM2 InferenceSet (min 0, max 3) on the local target, 0 -> 3 -> 0.

Runs `kaito-gitops run --target local` on a git repository holding only the set, then, twice:
one request at zero (cold start: the request is held while a member starts, then answered),
eight clients at once (target 2 per replica, so three members), then nothing until the set is
back at zero. Prints the cold start as the client sees it and as the daemon reports it, the time
from the load's start to three members serving, the time from the load's end to zero, and the
requests lost (anything but 200) over the whole cycle.

The first cycle's cold start converts SmolLM2 from its GGUF unless $KAITO_MODEL_CACHE already
holds it; the second's is a start with the model on disk.

Usage: python tests/bench/autoscale_bench.py [clients] [load seconds]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from test_inferenceset_local import SET  # noqa: E402

WINDOW = 15  # seconds: the set's scale-down-after


def ask(endpoint: str, tokens: int = 16) -> int:
    try:
        return httpx.post(
            f"{endpoint}/v1/chat/completions",
            json={
                "model": "smollm2-135m-instruct",
                "max_tokens": tokens,
                "messages": [{"role": "user", "content": "Tell me about the sea."}],
            },
            timeout=600,
        ).status_code
    except httpx.HTTPError:
        return 0


def serving(state: Path) -> int:
    return sum(1 for i in range(3) if (state / "default" / f"smol-{i}" / "endpoint.json").exists())


def wait(cond, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            sys.exit(f"autoscale_bench: {what} not reached in {timeout:g} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def cold_starts(log: Path) -> list[float]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "cold start":
            out.append(e["seconds"])
    return out


def cycle(endpoint: str, state: Path, clients: int, seconds: float, log: Path, n: int) -> None:
    t0 = time.monotonic()
    first = ask(endpoint)
    first_s = time.monotonic() - t0
    codes = [first]
    stop = threading.Event()

    def client():
        while not stop.is_set():
            codes.append(ask(endpoint))

    t1 = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client)
        up = wait(lambda: serving(state) == 3, 300, "three members serving")
        time.sleep(max(0.0, seconds - (time.monotonic() - t1)))
        stop.set()
    t2 = time.monotonic()
    down = wait(lambda: serving(state) == 0, WINDOW * 4 + 60, "zero members")
    lost = sum(1 for c in codes if c != 200)
    reported = cold_starts(log)
    print(
        f"  cycle {n}: cold start {first_s:.1f} s at the client (daemon: "
        f"{reported[-1] if reported else float('nan'):.1f} s); 1 -> 3 members serving {up:.1f} s after "
        f"{clients} clients started; back to 0 {down:.1f} s after the load ended (idle window {WINDOW} s); "
        f"requests {len(codes)}, lost {lost}; cycle {t2 - t0 + down:.0f} s"
    )


def main() -> None:
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 45.0
    tmp = Path(tempfile.mkdtemp(prefix="autoscale-bench-"))
    repo, state, log = tmp / "repo", tmp / "state", tmp / "daemon.log"
    (repo / "ws").mkdir(parents=True)
    (repo / "ws" / "smol.yaml").write_text(
        SET.replace("scale-down-after: 10s", f"scale-down-after: {WINDOW}s")
    )
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "set"], check=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp / "hf"),
        "KAITO_MODEL_CACHE": os.environ.get("KAITO_MODEL_CACHE") or str(tmp / "models"),
    }
    cmd = [
        sys.executable,
        "-m",
        "reconciler",
        "run",
        "--repo",
        str(repo),
        "--path",
        "ws",
        "--target",
        "local",
    ]
    cmd += ["--local-state-dir", str(state), "--listen", "", "--interval", "5s", "--status", "off"]
    cmd += ["--cache-dir", str(tmp / "cache"), "--log-format", "json"]
    print(f"autoscale_bench: SmolLM2 set, min 0 / max 3, target 2 per replica, {clients} clients, CPU")
    with open(log, "w") as logf:
        daemon = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        endpoint_file = state / "default" / "smol" / "endpoint.json"
        wait(endpoint_file.exists, 60, "the set's endpoint")
        endpoint = json.loads(endpoint_file.read_text())["endpoint"]
        for n in (1, 2):
            cycle(endpoint, state, clients, seconds, log, n)
    finally:
        daemon.terminate()
        daemon.wait(60)


if __name__ == "__main__":
    main()
