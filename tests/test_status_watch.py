"""`kaito-gitops status --watch`: prints the table again when the status branch changes, and
stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from support.wait import wait_until

DOC = """\
apiVersion: kaito-gitops.io/v1alpha1
kind: WorkspaceStatus
metadata: {{name: a, namespace: default}}
instanceType: Standard_NV36ads_A10_v5
state: {state}
conditions: []
endpoint: null
"""


def git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def write_status(repo: Path, state: str) -> None:
    (repo / "status" / "default").mkdir(parents=True, exist_ok=True)
    (repo / "status" / "default" / "a.yaml").write_text(DOC.format(state=state))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"status: {state}")


def test_watch_prints_again_on_a_change_and_stops_on_ctrl_c(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "kaito-status")
    write_status(repo, "NotReady")
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "status", "--repo", str(repo), "--watch", "0.2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("NotReady" in line for line in out), 30, "the first table", step=0.1)
        write_status(repo, "Ready")
        wait_until(
            lambda: any(re.search(r"(?<!Not)Ready\b", line) for line in out),
            30,
            lambda: f"the table after the change; printed: {out}",
            step=0.1,
        )
        headers = [line for line in out if line.startswith("kaito-status at ")]
        assert len(headers) == 2, out  # printed once per change, not once per poll
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    assert rc == 0 and "Traceback" not in proc.stderr.read()
