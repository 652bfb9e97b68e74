"""The pre-commit hooks in .pre-commit-hooks.yaml, run by the real `pre-commit` on a scratch repo:
a commit of a valid workspace lands, one with an error is refused with file:line:col."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
GOOD = (ROOT / "example-repo" / "local" / "smollm2.yaml").read_text()
BAD = GOOD.replace("name: smollm2-135m-instruct", "name: smollm2-135m-instrukt")


def git(repo: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**(env or os.environ), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=check, capture_output=True, text=True, env=env
    )


def hooks_repo(tmp: Path) -> tuple[Path, str]:
    """A git repo holding this checkout's .pre-commit-hooks.yaml (committed or not), and its sha."""
    repo = tmp / "hooks"
    repo.mkdir()
    shutil.copy(ROOT / ".pre-commit-hooks.yaml", repo / ".pre-commit-hooks.yaml")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hooks")
    return repo, git(repo, "rev-parse", "HEAD").stdout.strip()


@pytest.fixture
def scratch(tmp_path):
    if not (BIN / "pre-commit").exists():
        pytest.skip("needs the dev extra (pre-commit)")
    hooks, rev = hooks_repo(tmp_path)
    repo = tmp_path / "team-repo"
    (repo / "workspaces").mkdir(parents=True)
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hooks}\n    rev: {rev}\n    hooks:\n      - id: kaito-gitops-validate-system\n"
    )
    git(repo, "init", "-q", "-b", "main")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    env["PATH"] = os.pathsep.join([str(BIN), env["PATH"]])  # the installed kaito-gitops
    subprocess.run([str(BIN / "pre-commit"), "install"], cwd=repo, env=env, check=True, capture_output=True)
    return repo, env


def test_a_valid_workspace_commits_and_an_invalid_one_is_refused_with_the_line(scratch):
    repo, env = scratch
    (repo / "workspaces" / "smollm2.yaml").write_text(GOOD)
    git(repo, "add", "-A", env=env)
    r = git(repo, "commit", "-q", "-m", "SmolLM2", env=env, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    head = git(repo, "rev-parse", "HEAD").stdout

    (repo / "workspaces" / "smollm2.yaml").write_text(BAD)
    git(repo, "add", "-A", env=env)
    r = git(repo, "commit", "-q", "-m", "a typo", env=env, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    line = BAD.splitlines().index("    name: smollm2-135m-instrukt") + 1
    assert f"workspaces/smollm2.yaml:{line}:" in out and "smollm2-135m-instruct" in out, out  # "did you mean"
    assert git(repo, "rev-parse", "HEAD").stdout == head  # nothing landed


def test_yaml_that_is_not_a_workspace_does_not_block_a_commit(scratch):
    repo, env = scratch
    (repo / "values.yaml").write_text("replicas: 3\n")
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yaml").write_text("on: push\njobs: {}\n")
    git(repo, "add", "-A", env=env)
    r = git(repo, "commit", "-q", "-m", "other yaml", env=env, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_the_python_hook_installs_kaito_gitops_from_this_repository(tmp_path):
    """`language: python`: pre-commit pip-installs this repository (as committed) from the package
    index into its own environment, as it does for users; about 35 s."""
    if not (BIN / "pre-commit").exists():
        pytest.skip("needs the dev extra (pre-commit)")
    rev = git(ROOT, "rev-parse", "HEAD").stdout.strip()
    if git(ROOT, "cat-file", "-e", f"{rev}:.pre-commit-hooks.yaml", check=False).returncode != 0:
        pytest.skip("HEAD has no .pre-commit-hooks.yaml yet (commit it first)")
    repo = tmp_path / "team-repo"
    (repo / "workspaces").mkdir(parents=True)
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {ROOT}\n    rev: {rev}\n    hooks:\n      - id: kaito-gitops-validate\n"
    )
    (repo / "workspaces" / "smollm2.yaml").write_text(BAD)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != str(BIN))  # not ours
    r = subprocess.run(
        [str(BIN / "pre-commit"), "run", "--all-files"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "workspaces/smollm2.yaml:" in out and "smollm2-135m-instruct" in out, out
