"""action.yml, run as GitHub runs a composite action: each `run:` step in bash, with the step's
`env:` expressions evaluated against the inputs and a pull request's `github` context, and the
runner's files (GITHUB_STEP_SUMMARY, GITHUB_PATH) on disk.

The first test runs every step, the install included (it pip-installs this checkout and its
dependencies from the package index into RUNNER_TEMP, about 45 s); the others put this checkout's
.venv on PATH in its place. `uses:` steps (actions/setup-python) are GitHub's own and are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
EXPR = re.compile(r"^\$\{\{\s*(.*?)\s*\}\}$")


def evaluate(expr: str, ctx: dict):
    """The few expression forms action.yml uses: a || b, a && b, !cancelled(), x == 'v', x != ''."""
    expr = expr.strip()
    if m := EXPR.match(expr):
        expr = m.group(1)
    if "||" in expr:
        return next((v for v in (evaluate(p, ctx) for p in expr.split("||")) if v), "")
    if "&&" in expr:
        return all(evaluate(p, ctx) for p in expr.split("&&"))
    if expr == "!cancelled()":
        return True
    for op in ("==", "!="):
        if op in expr:
            left, right = (s.strip() for s in expr.split(op))
            same = evaluate(left, ctx) == right.strip("'")
            return same if op == "==" else not same
    value = ctx
    for part in expr.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return value


TYPO = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: phi-3-typo
  namespace: llm
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: phi-3-typo
inference:
  preset:
    name: phi-3-mini-128k-instruc
"""
TYPO_LINE = 13


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


@pytest.fixture
def pull_request(tmp_path):
    """A repository whose PR head adds a second workspace with an unknown preset."""
    repo = tmp_path / "repo"
    (repo / "workspaces").mkdir(parents=True)
    shutil.copy(ROOT / "example-repo" / "workspaces" / "inference-phi-3.yaml", repo / "workspaces")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD").strip()
    bad = TYPO
    (repo / "workspaces" / "typo.yaml").write_text(bad)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "add a workspace")
    return repo, base


def run_action(
    tmp_path: Path, repo: Path, inputs: dict, github: dict, install: bool = False
) -> tuple[list[tuple[str, int, str]], str]:
    """Every step in order; returns (name, exit code, output) per step run, and the job summary."""
    given = {k: str(v["default"]) for k, v in ACTION["inputs"].items()} | inputs
    ctx = {"inputs": given, "github": github}
    summary, gh_path = tmp_path / "summary.md", tmp_path / "path"
    summary.write_text("")
    gh_path.write_text("" if install else str(ROOT / ".venv" / "bin") + "\n")
    ran, failed = [], False
    for step in ACTION["runs"]["steps"]:
        if "uses" in step or ("install" in step.get("name", "") and not install):
            continue
        condition = str(step.get("if", "success()"))
        if failed and not re.search(r"always\(\)|cancelled\(\)|failure\(\)", condition):
            continue  # GitHub's implicit success(): after a failure, only steps that ask still run
        if "if" in step and not evaluate(condition, ctx):
            continue
        assert step["shell"] == "bash"
        env = {**os.environ, "GITHUB_WORKSPACE": str(repo), "GITHUB_STEP_SUMMARY": str(summary)}
        env |= {"GITHUB_PATH": str(gh_path), "RUNNER_TEMP": str(tmp_path), "GITHUB_ACTION_PATH": str(ROOT)}
        env |= {k: str(evaluate(str(v), ctx)) for k, v in (step.get("env") or {}).items()}
        env["PATH"] = os.pathsep.join([*gh_path.read_text().split(), env["PATH"]])
        if install:  # only what the install step adds may provide kaito-gitops
            keep = [p for p in env["PATH"].split(os.pathsep) if p != str(ROOT / ".venv" / "bin")]
            env["PATH"] = os.pathsep.join(keep)
        r = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        ran.append((step["name"], r.returncode, r.stdout + r.stderr))
        failed = failed or r.returncode != 0
    return ran, summary.read_text()


@pytest.mark.slow
def test_a_pull_request_gets_annotations_on_the_line_and_a_plan_in_the_summary(tmp_path, pull_request):
    repo, base = pull_request
    github = {"event": {"pull_request": {"base": {"sha": base}}}}
    ran, summary = run_action(tmp_path, repo, {}, github, install=True)
    names = [n for n, _, _ in ran]
    assert names == [
        "install kaito-gitops from this action's checkout",
        "kaito-gitops validate",
        "kaito-gitops plan",
    ]
    assert ran[0][1] == 0, ran[0][2][-3000:]
    assert (tmp_path / "kaito-gitops" / "bin" / "kaito-gitops").exists()
    (_, rc, out) = ran[1]
    assert rc == 1, out
    assert re.search(
        rf"^::error file=workspaces/typo\.yaml,line={TYPO_LINE},col=\d+.*phi-3-mini-128k-instruct", out, re.M
    ), out
    assert not re.search(r"^::error file=workspaces/inference-phi-3", out, re.M)  # the good file stays clean
    assert summary.startswith("**Plan:**") and "see the validate step" in summary, summary


def test_a_valid_pull_request_passes_and_its_plan_shows_the_new_workspace(tmp_path, pull_request):
    repo, base = pull_request
    (repo / "workspaces" / "typo.yaml").write_text(TYPO.replace("128k-instruc\n", "128k-instruct\n"))
    git(repo, "commit", "-q", "-am", "fix the preset name")
    ran, summary = run_action(tmp_path, repo, {}, {"event": {"pull_request": {"base": {"sha": base}}}})
    assert [(n, rc) for n, rc, _ in ran] == [("kaito-gitops validate", 0), ("kaito-gitops plan", 0)], ran
    assert "::error" not in ran[0][2]
    assert "1 to add" in summary and "llm/phi-3-typo" in summary, summary


def test_inputs_reach_the_commands(tmp_path, pull_request):
    repo, _ = pull_request
    git(repo, "rm", "-q", "workspaces/typo.yaml")
    git(repo, "commit", "-q", "-m", "drop the typo")
    ran, summary = run_action(
        tmp_path, repo, {"plan": "false", "byo-nodes": "true", "paths": "workspaces"}, {}
    )
    assert [(n, rc) for n, rc, _ in ran] == [("kaito-gitops validate", 0)], ran
    assert summary == ""  # plan: "false"


def test_the_install_step_installs_this_checkout():
    (step,) = [s for s in ACTION["runs"]["steps"] if "install" in s.get("name", "")]
    assert '"$GITHUB_ACTION_PATH"' in step["run"] and "GITHUB_PATH" in step["run"]
    assert (ROOT / "pyproject.toml").exists()


def test_the_action_and_the_example_workflow_match_githubs_schemas():
    cj = shutil.which("check-jsonschema", path=str(ROOT / ".venv" / "bin"))
    if cj is None:
        pytest.skip("needs the dev extra (check-jsonschema)")
    for schema, files in (
        ("vendor.github-actions", [ROOT / "action.yml"]),
        ("vendor.github-workflows", sorted((ROOT / "example-repo" / ".github" / "workflows").glob("*.y*ml"))),
    ):
        r = subprocess.run([cj, "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_the_snippets_in_docs_ci_use_real_inputs_and_hooks(tmp_path):
    text = (ROOT / "docs" / "ci.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    workflow = next(b for b in blocks if "jobs" in b)
    uses = [s for s in workflow["jobs"]["validate"]["steps"] if "kaito-gitops" in s.get("uses", "")]
    assert uses and set(uses[0].get("with", {})) <= set(ACTION["inputs"])
    hooks = {h["id"] for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    config = next(b for b in blocks if "repos" in b)
    assert {h["id"] for r in config["repos"] for h in r["hooks"]} <= hooks
    # every input in the docs' table is one the action has, and the other way round
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", text, re.M))
    assert documented == set(ACTION["inputs"])
    cj = shutil.which("check-jsonschema", path=str(ROOT / ".venv" / "bin"))
    if cj:
        f = tmp_path / "wf.yaml"
        f.write_text(yaml.safe_dump({"name": "docs", "on": "pull_request", **workflow}))
        r = subprocess.run(
            [cj, "--builtin-schema", "vendor.github-workflows", str(f)], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr
