"""End to end on one machine: git push -> `kaito-gitops run --target local` -> curl the endpoint.

A real git remote (git daemon) holds the SmolLM2 workspace from example-repo; the daemon runs
as its own process exactly as README command 1 starts it; the OpenAI client asks the question
users ask in the docs. Removing the file stops the server; stopping the daemon leaves nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.net import free_port
from support.wait import wait_until
from support.workspaces import SMOL

pytestmark = [pytest.mark.ml, pytest.mark.slow]


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or working folder mentions `text`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
            cwd = os.readlink(f"/proc/{entry}/cwd")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (text in cmdline or cwd.startswith(text)) and state != "Z":
            out.append(int(entry))
    return out


def test_push_serve_curl_remove_stop(tmp_path, git_remote, smollm_cache):
    git_remote.write({"workspaces/smollm2.yaml": SMOL}, "serve SmolLM2")
    state = tmp_path / "local-state"
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "KAITO_MODEL_CACHE": str(smollm_cache),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "daemon.log"
    with open(log, "w") as logf:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler",
                "run",
                "--repo",
                git_remote.url,
                "--path",
                "workspaces",
                "--target",
                "local",
                "--local-state-dir",
                str(state),
                "--listen",
                f"127.0.0.1:{port}",
                "--interval",
                "1s",
                "--status",
                "off",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--log-format",
                "json",
            ],  # no --allow-empty-prune: a commit that deletes the only workspace must stop it
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        endpoint_file = state / "default" / "smollm2" / "endpoint.json"
        info = wait_until(
            lambda: endpoint_file.exists() and json.loads(endpoint_file.read_text()),
            300,
            "the SmolLM2 endpoint",
            step=0.25,
            proc=daemon,
            log=log,
        )
        endpoint = info["endpoint"]
        assert endpoint.startswith("http://127.0.0.1:")

        from openai import OpenAI

        client = OpenAI(base_url=f"{endpoint}/v1", api_key="unused", timeout=120)
        answer = client.chat.completions.create(
            model="smollm2-135m-instruct",
            temperature=0,
            max_tokens=20,
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        )
        assert "Paris" in answer.choices[0].message.content

        r = httpx.post(
            f"{endpoint}/chat",
            json={
                "prompt": "What is the capital of France? Answer in one word.",
                "generate_kwargs": {"do_sample": False, "max_length": 20},
            },
            timeout=120,
        )
        assert r.status_code == 200 and set(r.json()) == {"Result"} and r.json()["Result"]

        server_pids = processes_mentioning(str(state / "default" / "smollm2"))
        assert server_pids, "the server runs in the workspace's folder"
        with httpx.Client() as c:
            assert c.get(f"http://127.0.0.1:{port}/healthz").status_code == 200

        # the file goes: the server stops (the daemon polls every second)
        git_remote.write({"workspaces/smollm2.yaml": None}, "remove SmolLM2")
        workspace_dir = str(state / "default")  # not the state dir itself: the daemon's own argv names it
        wait_until(
            lambda: not endpoint_file.exists() and not processes_mentioning(workspace_dir),
            60,
            "the server stopping",
            step=0.25,
            proc=daemon,
            log=log,
        )
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{endpoint}/health", timeout=2)

        # and back, then stop the daemon: nothing may be left running
        git_remote.write({"workspaces/smollm2.yaml": SMOL}, "serve SmolLM2 again")
        wait_until(endpoint_file.exists, 180, "the endpoint again", step=0.25, proc=daemon, log=log)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = None
    assert code == 0, log.read_text()[-2000:]
    assert not processes_mentioning(str(state / "default")), "stopping the daemon leaves no process behind"
