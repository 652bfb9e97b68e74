"""Benchmark: the CPU server (`python -m runtime.inference --backend cpu`) under concurrent load.

Starts the server as its own process on loopback, warms it up, then for concurrency 1, 4 and 8
sends completions of exactly TOKENS tokens (`ignore_eos`, greedy) and prints total tokens/s,
per-request tokens/s and p50/p95 latency. After stopping the server it runs a plain
`model.generate` batch-1 loop on the same weights in this process, for comparison.

Targets (issue 15): at concurrency 8, total tokens/s >= 4x concurrency 1; at concurrency 1,
within 15% of the plain generate loop.

Usage: python tests/bench/serve_bench.py [smollm2|tiny] [TOKENS] [REQUESTS_PER_LEVEL]
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
sys.path.insert(0, str(ROOT))

from support.net import free_port  # noqa: E402
from support.tiny_model import build_tiny_model  # noqa: E402

PROMPT = "The capital of France is"


def one(client: httpx.Client, model: str, tokens: int) -> float:
    t0 = time.perf_counter()
    r = client.post(
        "/v1/completions",
        json={"model": model, "prompt": PROMPT, "max_tokens": tokens, "ignore_eos": True, "temperature": 0},
    )
    r.raise_for_status()
    assert r.json()["usage"]["completion_tokens"] == tokens, r.json()
    return time.perf_counter() - t0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, round(p * len(s)) - 1)]


def run(base: str, model: str, tokens: int, requests: int, clients: int) -> tuple[float, list[float]]:
    """(total tokens/s, latencies) for `requests` requests from `clients` concurrent clients."""
    lat: list[float] = []

    def worker(n: int) -> None:
        with httpx.Client(base_url=base, timeout=600) as c:
            for _ in range(n):
                lat.append(one(c, model, tokens))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker, max(1, requests // clients)) for _ in range(clients)]:
            f.result()
    return len(lat) * tokens / (time.perf_counter() - start), lat


def plain_generate(model_dir: str, tokens: int, reps: int) -> float:
    """tokens/s of `model.generate`, one request at a time, on the weights the server loaded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([tok(PROMPT)["input_ids"]])
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, do_sample=False)
        start = time.perf_counter()
        for _ in range(reps):
            model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return reps * tokens / (time.perf_counter() - start)


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    cache = os.environ.get("KAITO_MODEL_CACHE", str(tmp / "models"))
    model = "smollm2-135m-instruct" if which == "smollm2" else str(build_tiny_model(tmp / "tiny"))
    served = "smollm2-135m-instruct" if which == "smollm2" else "tiny"
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "HF_HOME": os.environ.get("HF_HOME", str(tmp / "hf")),
        "KAITO_MODEL_CACHE": cache,
    }
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "runtime.inference", "--backend", "cpu", "--model", model),
            *("--served-model-name", served, "--host", "127.0.0.1", "--port", str(port)),
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    levels: dict[int, tuple[float, list[float]]] = {}
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
        with httpx.Client(base_url=base, timeout=600) as warm:
            for _ in range(2):
                one(warm, served, tokens)
        for clients in (1, 4, 8):
            levels[clients] = run(
                base, served, tokens, requests if clients > 1 else max(4, requests // 4), clients
            )
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    from runtime import weights

    model_dir = str(weights.resolve_model(model, cache_dir=cache)) if which == "smollm2" else model
    plain = plain_generate(model_dir, tokens, 4)
    print(
        f"serve_bench: {which} CPU server, {tokens}-token completions, {os.cpu_count()} cores, "
        f"ready after {ready:.1f} s"
    )
    print(f"  plain model.generate, batch 1:  {plain:6.1f} tokens/s")
    for clients, (total, lat) in levels.items():
        per_request = statistics.mean(tokens / x for x in lat)
        print(
            f"  concurrency {clients}: {total:6.1f} tokens/s total, {per_request:5.1f} per request, "
            f"p50 {statistics.median(lat) * 1000:6.0f} ms, p95 {pct(lat, 0.95) * 1000:6.0f} ms ({len(lat)} requests)"
        )
    c1, c8 = levels[1][0], levels[8][0]
    print(
        f"  concurrency 8 / concurrency 1: {c8 / c1:.2f}x (target >= 4); concurrency 1 / plain: {c1 / plain:.2f} (target >= 0.85)"
    )


if __name__ == "__main__":
    main()
