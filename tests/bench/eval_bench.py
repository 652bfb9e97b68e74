"""Benchmark: `kaito-gitops eval example-repo --target local`, SmolLM2 on CPU, cold and warm.

Cold: an empty model cache, so the first start converts SmolLM2 from its GGUF. Warm: the same
cache again. Prints the seconds from the command's start to its report and how they split:
start (process up and serving), cases (the suite's cases, one at a time), load (its load
section), and the rest (reading the repository, stopping the processes, Python start-up).
Then a pull-request preview as the daemon runs it (evals/preview.py, warm): the example's
suite against base and head, from queueing the preview to its verdict.

Usage: python tests/bench/eval_bench.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(cache: Path, state: Path) -> tuple[float, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KAITO_MODEL_CACHE": str(cache), "HF_HOME": str(cache / "hf")}
    cmd = [sys.executable, "-m", "reconciler", "eval", "example-repo", "--format", "json"]
    t0 = time.perf_counter()
    done = subprocess.run(
        [*cmd, "--local-state-dir", str(state)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"eval failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    cache = tmp / "models"
    cache.mkdir()
    print("eval_bench: kaito-gitops eval example-repo --target local (SmolLM2-135M-Instruct, CPU)")
    for label, state in (("cold", tmp / "state-cold"), ("warm", tmp / "state-warm")):
        seconds, report = run(cache, state)
        [suite] = report["suites"]
        t = suite["timing_seconds"]
        rest = seconds - t["start"] - t["cases"] - t["load"]
        print(
            f"  {label}: {seconds:5.1f} s to the report = start {t['start']:.1f} s + cases {t['cases']:.1f} s "
            f"+ load {t['load']:.1f} s + rest {rest:.1f} s; pass rate {suite['pass_rate']:.2f}, "
            f"p50 {suite['p50_latency_ms']:.0f} ms, p95 {suite['p95_latency_ms']:.0f} ms, "
            f"{suite['tokens_per_second']:.1f} tokens/s under load"
        )
    preview(cache, tmp / "previews")


def preview(cache: Path, state: Path) -> None:
    import queue

    sys.path.insert(0, str(ROOT))
    os.environ.update({"HF_HUB_OFFLINE": "1", "KAITO_MODEL_CACHE": str(cache), "HF_HOME": str(cache / "hf")})
    from reconciler.evals.preview import LocalPreviewer, PreviewJob, PreviewRunner

    files = [
        (str(p.relative_to(ROOT / "example-repo")), p.read_bytes())
        for p in sorted((ROOT / "example-repo").rglob("*.yaml"))
    ]
    head = [
        (p, b.replace(b"max_tokens: 32", b"max_tokens: 40")) if p.startswith("evals/") else (p, b)
        for p, b in files
    ]
    done: queue.Queue = queue.Queue()
    runner = PreviewRunner(LocalPreviewer(state), done.put)
    t0 = time.perf_counter()
    runner.submit(PreviewJob(1, "0" * 40, "main", files, head, ("smollm2",)))
    outcome = done.get(timeout=1200)
    seconds = time.perf_counter() - t0
    runner.close()
    [r] = outcome.results
    print(
        f"  preview (base + head, warm): {seconds:5.1f} s from queued to the verdict ({outcome.state}: "
        f"{outcome.description}); head p95 {r.as_dict()['p95_latency_ms']:.0f} ms"
    )


if __name__ == "__main__":
    main()
