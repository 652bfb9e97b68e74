"""README's commands run as written, from the root of a fresh clone, after command 1.

The clone gets this checkout's README and `.venv` (a link), and a quickstart repository whose
status branch a `run --once` has written, as command 1's daemon would have.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = ".venv/bin/kaito-gitops"


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    out = []
    for body in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == CLI:
                out.append(words)
    for span in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL)):
        if span.startswith(CLI + " "):
            out.append(shlex.split(span))
    return out


def git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, env=env)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if not (ROOT / CLI).exists():
        pytest.skip("needs scripts/setup.sh's .venv")
    dest = tmp_path_factory.mktemp("fresh") / "kaito-gitops"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    shutil.copy(ROOT / "README.md", dest / "README.md")
    shutil.copytree(ROOT / "example-repo", dest / "example-repo", dirs_exist_ok=True)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    repo = dest / ".kaito-gitops" / "quickstart" / "repo"  # as scripts/quickstart.sh makes it
    (repo / "workspaces").mkdir(parents=True)
    for f in (ROOT / "example-repo" / "local").glob("*.yaml"):
        shutil.copy(f, repo / "workspaces" / f.name)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "quickstart")
    once = [CLI, "run", "--repo", str(repo), "--path", "workspaces", "--target", "render"]
    once += ["--out", str(dest / ".kaito-gitops" / "out"), "--once", "--listen", ""]
    subprocess.run(once, cwd=dest, check=True, capture_output=True, timeout=120)
    return dest


def test_readme_commands_are_found():
    verbs = {c[1] for c in readme_commands()}
    assert {"validate", "plan", "render", "status", "run"} <= verbs


@pytest.mark.parametrize("cmd", readme_commands(), ids=shlex.join)
def test_readme_command_runs_as_written(cmd, clone):
    serves = "--once" not in cmd  # `run` serves until stopped (test_e2e_newcomer runs command 1's daemon)
    if cmd[1] == "run" and serves:
        pytest.skip("`run` serves until stopped; test_e2e_newcomer runs command 1's daemon")
    if ("--target" in cmd and cmd[cmd.index("--target") + 1] == "local") or "https://" in " ".join(cmd):
        pytest.skip("`run` serves until stopped (test_e2e_newcomer runs command 1's daemon)")
    if (
        "origin/main" in cmd
        and subprocess.run(
            ["git", "-C", str(clone), "rev-parse", "--verify", "-q", "origin/main"], capture_output=True
        ).returncode
    ):
        pytest.skip("this clone's origin has no main branch")
    out = subprocess.run(cmd, cwd=clone, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{shlex.join(cmd)}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
    assert "internal error" not in out.stderr
