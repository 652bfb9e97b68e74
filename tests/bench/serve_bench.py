"""Benchmark: the CPU server (`python -m runtime.inference --backend cpu`) on 16-token completions.

Starts the server as its own process on loopback, warms it up, then prints requests/s and
p50/p95 latency for sequential requests and for concurrent clients, each request producing
exactly 16 tokens (`min_tokens` = `max_tokens` = 16).

Usage: python tests/bench/serve_bench.py [smollm2|tiny] [REQUESTS] [CLIENTS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.net import free_port  # noqa: E402
from support.tiny_model import build_tiny_model  # noqa: E402


def one(client: httpx.Client, model: str) -> float:
    t0 = time.perf_counter()
    r = client.post(
        "/v1/completions",
        json={
            "model": model,
            "prompt": "The capital of France is",
            "max_tokens": 16,
            "min_tokens": 16,
            "temperature": 0,
        },
    )
    r.raise_for_status()
    assert r.json()["usage"]["completion_tokens"] == 16
    return time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, round(p * len(s)) - 1)]


def run(base: str, model: str, requests: int, clients: int) -> tuple[float, list[float]]:
    with httpx.Client(base_url=base, timeout=300) as warm:
        for _ in range(3):
            one(warm, model)
    lat: list[float] = []

    def worker(n: int) -> None:
        with httpx.Client(base_url=base, timeout=300) as c:
            for _ in range(n):
                lat.append(one(c, model))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker, requests // clients) for _ in range(clients)]:
            f.result()
    return len(lat) / (time.perf_counter() - start), lat


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model = "smollm2-135m-instruct" if which == "smollm2" else str(build_tiny_model(tmp / "tiny"))
    served = "smollm2-135m-instruct" if which == "smollm2" else "tiny"
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HOME": os.environ.get("HF_HOME", str(tmp / "hf")),
    }
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.inference",
            "--backend",
            "cpu",
            "--model",
            model,
            "--served-model-name",
            served,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise SystemExit((tmp / "server.log").read_text()[-2000:])
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        ready = time.perf_counter() - t0
        seq_rps, seq = run(base, served, requests, 1)
        con_rps, con = run(base, served, requests, clients)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    print(
        f"serve_bench: {which} CPU server, 16-token completions ({os.cpu_count()} cores), ready after {ready:.1f} s"
    )
    print(
        f"  sequential:           {seq_rps:6.2f} req/s, p50 {statistics.median(seq) * 1000:6.0f} ms, "
        f"p95 {pct(seq, 0.95) * 1000:6.0f} ms ({len(seq)} requests)"
    )
    print(
        f"  {clients} concurrent clients: {con_rps:6.2f} req/s, p50 {statistics.median(con) * 1000:6.0f} ms, "
        f"p95 {pct(con, 0.95) * 1000:6.0f} ms ({len(con)} requests)"
    )


if __name__ == "__main__":
    main()
