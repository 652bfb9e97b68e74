"""A newcomer's first hour, scripted: README command 1's daemon on a local repository, then the
status command, a crash and a restart, closing the terminal (SIGHUP), an edit, and removing the
workspace.

Each step asserts what the user would see: the endpoint, `kaito-gitops status` saying Ready with
the endpoint right after "serving at" (not a poll later), one server per workspace whatever
happened to the previous daemon, and nothing left running at the end.
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
from test_e2e_local import processes_mentioning

pytestmark = [pytest.mark.ml, pytest.mark.slow]

SERVING = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: smollm2-serving
data:
  inference_config.yaml: |
    sglang:
      context-length: 256
"""

GIT_ENV = {
    "GIT_AUTHOR_NAME": "newcomer",
    "GIT_AUTHOR_EMAIL": "newcomer@localhost",
    "GIT_COMMITTER_NAME": "newcomer",
    "GIT_COMMITTER_EMAIL": "newcomer@localhost",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    ).stdout


def kaito(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_newcomer_status_restart_sighup_and_removal(tmp_path, smollm_cache):
    repo = tmp_path / "repo"
    (repo / "workspaces").mkdir(parents=True)
    (repo / "workspaces" / "smollm2.yaml").write_text(SMOL)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "SmolLM2")
    state = tmp_path / "local"
    folder = state / "default" / "smollm2"
    endpoint_file = folder / "endpoint.json"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "KAITO_MODEL_CACHE": str(smollm_cache),
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    log = tmp_path / "daemon.log"

    def start() -> subprocess.Popen:
        with open(log, "a") as logf:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "reconciler",
                    "run",
                    "--repo",
                    str(repo),
                    "--path",
                    "workspaces",
                    "--target",
                    "local",
                    "--local-state-dir",
                    str(state),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--interval",
                    "10m",
                    "--log-format",
                    "text",
                    "--cache-dir",
                    str(tmp_path / "cache"),
                ],  # a 10-minute interval: everything below must happen on events, not on polls
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )

    def serving() -> str:
        info = wait_until(
            lambda: endpoint_file.exists() and json.loads(endpoint_file.read_text()),
            300,
            "the SmolLM2 endpoint",
            step=0.25,
            proc=daemon,
            log=log,
        )
        return info["endpoint"]

    daemon = start()
    try:
        endpoint = serving()
        r = httpx.post(f"{endpoint}/chat", json={"prompt": "What is the capital of France?"}, timeout=120)
        assert r.status_code == 200 and r.json()["Result"]

        # the status branch says Ready, with the endpoint, as soon as the server is up
        def status_ready():
            out = kaito("status", "--repo", str(repo), "--format", "json", env=env, cwd=tmp_path)
            if out.returncode != 0:
                return None
            docs = json.loads(out.stdout)
            return docs if docs and docs[0].get("state") == "Ready" else None

        [doc] = wait_until(status_ready, 30, "status Ready on kaito-status", step=0.5, proc=daemon, log=log)
        assert endpoint in json.dumps(doc)

        # the daemon dies without cleaning up (kill -9): its server is left running...
        first_server = processes_mentioning(str(folder))
        assert first_server
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
        assert processes_mentioning(str(folder)) == first_server
        # ...and the next daemon stops it and serves again on the same endpoint: never two servers
        daemon = start()
        wait_until(
            lambda: not set(first_server) & set(processes_mentioning(str(folder))),
            60,
            "the leftover server stopping",
            step=0.25,
            proc=daemon,
            log=log,
        )
        assert serving() == endpoint
        assert "stopping a process a previous daemon left running" in log.read_text()

        # closing the terminal (SIGHUP) stops the daemon and its server
        daemon.send_signal(signal.SIGHUP)
        assert daemon.wait(60) == 0
        assert not processes_mentioning(str(state / "default"))

        # started again, then an edit in git: a serving config limiting the context to 256 tokens.
        # The server restarts with it, status names the new revision, and a long prompt is refused.
        daemon = start()
        endpoint = serving()
        before_edit = processes_mentioning(str(folder))
        (repo / "workspaces" / "serving.yaml").write_text(SERVING)
        (repo / "workspaces" / "smollm2.yaml").write_text(SMOL + "  config: smollm2-serving\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "SmolLM2: 256-token context")
        head = git(repo, "rev-parse", "HEAD").strip()

        def applied_edit():
            docs = status_ready()
            return docs if docs and docs[0]["source"]["appliedRevision"] == head else None

        [doc] = wait_until(
            applied_edit, 300, "status Ready at the edited revision", step=0.5, proc=daemon, log=log
        )
        assert doc["endpoint"] == endpoint  # the workspace keeps its port across a restart
        assert not set(before_edit) & set(processes_mentioning(str(folder)))
        long = {"messages": [{"role": "user", "content": "word " * 400}], "max_tokens": 8}
        r = httpx.post(f"{endpoint}/v1/chat/completions", json=long, timeout=120)
        assert r.status_code == 400 and "maximum context length is 256" in r.text, r.text

        # the workspace file is removed in a commit: the server stops
        git(repo, "rm", "-q", "workspaces/smollm2.yaml", "workspaces/serving.yaml")
        git(repo, "commit", "-q", "-m", "remove SmolLM2")
        wait_until(
            lambda: not processes_mentioning(str(state / "default")),
            60,
            "the server stopping",
            step=0.25,
            proc=daemon,
            log=log,
        )
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{endpoint}/health", timeout=2)
        assert "every workspace was deleted in git" in log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
    assert not processes_mentioning(str(state / "default")), "nothing may be left running"
