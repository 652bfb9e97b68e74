"""Helpers for the inference tests: waiting for HTTP, running `python -m runtime.inference`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
FAKE_SGLANG = Path(__file__).with_name("infer_fake_sglang.py")


def offline_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(tmp / "hf-home"),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_inference(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m runtime.inference ARGS` to the end, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "runtime.inference", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_inference(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`python -m runtime.inference ARGS`, stdout and stderr into `log`."""
    fh = open(log, "wb")  # noqa: SIM115 - closed with the process by the caller's stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.inference", *args],
        cwd=ROOT,
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
    )
    proc._log_file = fh  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    fh = getattr(proc, "_log_file", None)
    if fh is not None:
        fh.close()
    return proc.returncode


def wait_http(
    url: str,
    *,
    status: int | None = None,
    timeout: float = 60,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> httpx.Response:
    """GET url until it answers (with `status`, if given); fails early if `proc` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {url}:\n{text}")
        try:
            r = httpx.get(url, timeout=5)
            if status is None or r.status_code == status:
                return r
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    text = log.read_text(errors="replace") if log else ""
    raise AssertionError(f"{url} did not answer {status or ''} within {timeout} s (last: {last!r})\n{text}")
