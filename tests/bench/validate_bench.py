"""Benchmark: cold `kaito-gitops validate` of a tree of generated workspace files.

Prints files/s and peak RSS. Target (issue 2): >= 2,000 files/s on one core, < 300 MiB.
Usage: python tests/bench/validate_bench.py [N]   (default 10,000 files)
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = [
    ("phi-3-mini-128k-instruct", "Standard_NC24ads_A100_v4"),
    ("phi-4-mini-instruct", "Standard_NV36ads_A10_v5"),
    ("qwen2.5-coder-7b-instruct", "Standard_NC24ads_A100_v4"),
    ("mistral-7b-instruct", "Standard_NV72ads_A10_v5"),
    ("llama-3.3-70b-instruct", "Standard_NC48ads_A100_v4"),
    ("gpt-oss-20b", "Standard_NV36ads_A10_v5"),
]


def inference(i: int, preset: str, sku: str) -> str:
    secret = "    presetOptions:\n      modelAccessSecret: hf-token\n" if preset.startswith("llama") else ""
    return f"""apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: ws-{i:05d}
  namespace: team-{i % 20}
  annotations:
    kaito.sh/node-image-family: ubuntu
resource:
  instanceType: {sku}
  labelSelector:
    matchLabels:
      apps: ws-{i:05d}
inference:
  preset:
    name: {preset}
{secret}"""


def tuning(i: int) -> str:
    return f"""apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: tune-{i:05d}
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: tune-{i:05d}
tuning:
  preset:
    name: phi-3-mini-128k-instruct
  method: qlora
  input:
    urls: ["https://example.com/data/train-{i}.parquet"]
  output:
    image: registry.example.com/adapters/tune-{i:05d}:1
    imagePushSecret: push
"""


def generate(root: Path, n: int) -> None:
    rnd = random.Random(0)
    for i in range(n):
        d = root / f"team-{i % 50}"
        d.mkdir(exist_ok=True)
        text = tuning(i) if i % 5 == 4 else inference(i, *rnd.choice(PRESETS))
        (d / f"ws-{i:05d}.yaml").write_text(text)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        generate(root, n)
        # One core, as the target says; a fresh interpreter, as a user's CI would run it.
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "reconciler", "validate", "-q", str(root)]
        if not shutil_which("taskset"):
            cmd = cmd[3:]
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        )
        elapsed = time.perf_counter() - start
        rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            raise SystemExit(f"validate failed with exit code {proc.returncode}")
        print(
            f"validate_bench: {n} files in {elapsed:.2f} s = {n / elapsed:,.0f} files/s (one core, cold process); "
            f"peak RSS {rss_mib:.0f} MiB; {proc.stderr.strip()}"
        )


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


if __name__ == "__main__":
    main()
