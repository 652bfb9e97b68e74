"""Eval suites (evals/*.yaml) and `kaito-gitops eval`: what a suite may say, how answers are
scored, and the real thing: SmolLM2 served as a local process, asked, scored, stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.workspaces import SMOL

from reconciler.evals.report import markdown
from reconciler.evals.scoring import CaseResult, SuiteResult, check
from reconciler.evals.suite import Case

ROOT = Path(__file__).resolve().parent.parent
SUITE = (ROOT / "example-repo" / "evals" / "smollm2.yaml").read_text()


def case(**checks) -> Case:
    return Case("c", ({"role": "user", "content": "q"},), 16, 0.0, None, checks)


# -- what a suite may say -------------------------------------------------------------------


def test_the_example_suite_is_valid_and_names_the_example_workspace(validate):
    rev = validate({"local/smollm2.yaml": SMOL, "evals/smollm2.yaml": SUITE})
    assert rev.findings == [] and [s.name for s in rev.suites] == ["smollm2"]
    [suite] = rev.suites
    assert suite.valid and suite.workspaces == (("default", "smollm2"),) and len(suite.cases) == 4
    assert suite.cases[0].max_tokens == 32 and suite.cases[0].temperature == 0.0  # deterministic
    assert suite.load is not None and (suite.load.concurrency, suite.load.requests) == (4, 8)


BAD = """\
workspaces: [smollm2, nope]
cases:
  - id: a
    prompt: hi
    regex: "(unclosed"
  - id: b
    prompt: hi
    json_schema: {type: 12}
  - id: c
    prompt: hi
    choices: [A, B]
    answer: C
  - id: a
    prompt: hi
    contains: x
  - id: e
    prompt: hi
thresholds:
  pass_rate: 1.5
"""


def test_bad_suites_get_clear_errors_at_their_lines(validate):
    rev = validate({"local/smollm2.yaml": SMOL, "evals/bad.yaml": BAD})
    found = sorted((f.line, f.col, f.rule) for f in rev.findings if f.path == "evals/bad.yaml")
    assert found == [(19, 14, "schema-range")], found  # the schema first: nothing else is read yet
    rev = validate({"local/smollm2.yaml": SMOL, "evals/bad.yaml": BAD.replace("1.5", "0.5")})
    found = sorted((f.line, f.col, f.rule) for f in rev.findings if f.path == "evals/bad.yaml")
    assert found == [
        (1, 23, "eval-workspace-unknown"),
        (5, 12, "eval-regex"),
        (8, 18, "eval-json-schema"),
        (12, 13, "eval-choices"),
        (13, 9, "eval-case-duplicate"),
        (16, 5, "eval-case-unchecked"),
    ], found
    messages = {f.rule: f.message for f in rev.findings}
    assert "no workspace default/nope" in messages["eval-workspace-unknown"]
    assert "default/smollm2" in messages["eval-workspace-unknown"]
    assert "'C' is not one of the choices" in messages["eval-choices"]
    assert not rev.suites[0].valid and rev.valid_workspaces(), "a bad suite never affects workspaces"


def test_a_suite_adapter_must_be_one_the_workspace_serves(validate):
    with_adapter = (
        SMOL + "  adapters:\n    - source:\n        name: geo\n        image: 127.0.0.1:5000/a/geo:1\n"
    )
    suite = "workspaces: [smollm2]\nadapter: geography\ncases: [{id: a, prompt: hi, contains: x}]\n"
    rev = validate({"ws.yaml": with_adapter, "evals/s.yaml": suite})
    [f] = [f for f in rev.findings if f.path == "evals/s.yaml"]
    assert (f.line, f.col, f.rule) == (2, 10, "eval-adapter-unknown") and "its adapters: geo" in f.message
    rev = validate({"ws.yaml": with_adapter, "evals/s.yaml": suite.replace("geography", "geo")})
    assert rev.findings == [] and rev.suites[0].adapter == "geo"


def test_a_suite_is_not_a_kubernetes_object(validate):
    rev = validate(
        {"evals/s.yaml": SUITE.replace("[smollm2]", "[x]"), "x.yaml": SMOL.replace("smollm2\n", "x\n")}
    )
    assert not rev.objects and [f.rule for f in rev.findings] == []


# -- scoring -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checks", "answer", "passed", "why"),
    [
        ({"contains": "Paris"}, "The capital is paris.", True, ""),
        ({"contains": ["Paris", "France"]}, "Paris.", False, "does not contain 'France'"),
        ({"not_contains": "sorry"}, "Sorry, I cannot.", False, "contains 'sorry'"),
        ({"regex": r"^\d+$"}, "42", True, ""),
        ({"regex": r"^\d+$"}, "forty-two", False, r"does not match /^\d+$/"),
        ({"equals": "4"}, " 4\n", True, ""),
        ({"json_schema": {"type": "object", "required": ["city"]}}, 'Sure: {"city": "Paris"}', True, ""),
        (
            {"json_schema": {"type": "object", "required": ["city"]}},
            '{"town": 1}',
            False,
            "JSON does not fit",
        ),
        ({"json_schema": {"type": "object"}}, "no json here", False, "no JSON in the answer"),
        ({"choices": ["A", "B", "C"], "answer": "B"}, "B) Berlin", True, ""),
        ({"choices": ["A", "B", "C"], "answer": "B"}, "The answer is C.", False, "picked 'C', not 'B'"),
        ({"choices": ["A", "B"], "answer": "A"}, "Neither.", False, "picked none of the choices"),
    ],
)
def test_checks(checks, answer, passed, why):
    ok, reason = check(case(**checks), answer)
    assert ok is passed and why in reason


def test_thresholds_and_the_markdown_report():
    from reconciler.evals.suite import EvalSuite, Thresholds
    from reconciler.loading import load_text

    doc = load_text("evals/s.yaml", b"workspaces: [a]\n").documents[0]
    suite = EvalSuite("s", doc, (("default", "a"),), (), Thresholds(1.0, 500.0, 10.0), None)
    cases = [
        CaseResult("ok", True, "Paris", 100.0, 5),
        CaseResult("bad", False, "Lyon `x`", 900.0, 5, "no Paris"),
    ]
    r = SuiteResult(suite, "default/a", cases)
    assert r.pass_rate == 0.5 and not r.thresholds_met
    assert r.failures() == ["pass rate 0.50 < 1.00", "p95 latency 900 ms > 500 ms"]
    d = r.as_dict()
    assert (d["p50_latency_ms"], d["p95_latency_ms"], d["tokens_per_second"]) == (100.0, 900.0, 10.0)
    md = markdown([r])
    assert "| `s` | `default/a` | 1/2 (50%) | 100 ms | 900 ms | 10.0 | :x: pass rate 0.50 < 1.00; p95" in md
    assert (
        "<details><summary>1 failed case(s) in <code>s</code></summary>" in md and "answered `Lyon 'x'`" in md
    )


# -- the real thing: SmolLM2 as a local process -----------------------------------------------------


def eval_cli(repo: Path, tmp_path: Path, smollm_cache, *args, timeout=900) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "KAITO_MODEL_CACHE": str(smollm_cache),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "reconciler",
            "eval",
            str(repo),
            "--local-state-dir",
            str(tmp_path / "state"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def no_process_left(state: Path) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state) in cmd and "runtime." in cmd:
            return False
    return True


@pytest.mark.ml
@pytest.mark.slow
def test_eval_serves_smollm2_scores_it_reports_json_and_stops_everything(tmp_path, smollm_cache):
    repo = tmp_path / "repo"
    (repo / "local").mkdir(parents=True)
    (repo / "evals").mkdir()
    (repo / "local" / "smollm2.yaml").write_text(SMOL)
    (repo / "evals" / "smollm2.yaml").write_text(SUITE)
    # a second suite that cannot run: it is reported, and the first one still is
    (repo / "evals" / "other.yaml").write_text(
        "workspaces: [ghost]\ncases: [{id: a, prompt: hi, contains: x}]\n"
    )
    done = eval_cli(repo, tmp_path, smollm_cache, "--format", "json")
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads(done.stdout)  # exactly one JSON object on stdout
    by_name = {s["suite"]: s for s in report["suites"]}
    good = by_name["smollm2"]
    assert good["workspace"] == "default/smollm2" and good["pass_rate"] == 1.0, good
    assert good["passed"] == 4 and good["thresholds_met"] and good["tokens_per_second"] > 0
    assert {c["id"] for c in good["cases"]} == {
        "capital-of-france",
        "capital-of-germany",
        "no-apology",
        "colour-of-the-sky",
    }
    assert "Paris" in next(c for c in good["cases"] if c["id"] == "capital-of-france")["output"]
    assert good["load"] == {**good["load"], "requests": 8, "failed": 0} and good["load"]["tokens"] > 0
    assert good["p50_latency_ms"] <= good["p95_latency_ms"]
    bad = by_name["other"]
    assert not bad["thresholds_met"] and "no workspace default/ghost" in bad["error"]
    assert not report["thresholds_met"]
    assert no_process_left(tmp_path / "state"), "every process the eval started is stopped"
    # the same repository without the broken suite: exit 0, and Markdown for a pull request
    (repo / "evals" / "other.yaml").unlink()
    done = eval_cli(repo, tmp_path, smollm_cache, "--format", "markdown")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "| `smollm2` | `default/smollm2` | 4/4 (100%) |" in done.stdout
        and ":white_check_mark:" in done.stdout
    )


@pytest.mark.slow
def test_a_model_that_never_becomes_ready_is_a_clear_error_and_nothing_is_left(tmp_path, smollm_cache):
    huge = SMOL.replace("name: smollm2-135m-instruct", "name: gpt-oss-120b").replace(
        "  preset:\n", "  preset:\n"
    )
    repo = tmp_path / "repo"
    (repo / "evals").mkdir(parents=True)
    (repo / "ws.yaml").write_text(
        huge.replace("instanceType: Standard_NV36ads_A10_v5", "instanceType: Standard_NC48ads_A100_v4")
    )
    (repo / "evals" / "s.yaml").write_text(
        "workspaces: [smollm2]\ncases: [{id: a, prompt: hi, contains: x}]\n"
    )
    done = eval_cli(repo, tmp_path, smollm_cache, "--format", "json", "--timeout", "60", timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    [suite] = json.loads(done.stdout)["suites"]
    assert suite["error"].startswith("default/smollm2 did not start:") and "GiB" in suite["error"], suite
    assert no_process_left(tmp_path / "state")


def test_eval_usage_errors_exit_2(tmp_path):
    (tmp_path / "ws.yaml").write_text(SMOL)
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "eval", str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2 and "no eval suites (evals/*.yaml)" in done.stderr


@pytest.mark.ml
@pytest.mark.slow
def test_with_base_each_figure_is_shown_for_base_and_head(tmp_path, smollm_cache):
    repo = tmp_path / "repo"
    (repo / "evals").mkdir(parents=True)
    (repo / "ws.yaml").write_text(SMOL)
    (repo / "evals" / "smollm2.yaml").write_text(SUITE.replace("requests: 8", "requests: 2"))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@x"
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    # the change under review swaps in a model this machine cannot serve: head cannot answer at all
    head = SMOL.replace("name: smollm2-135m-instruct", "name: gpt-oss-120b").replace(
        "instanceType: Standard_NV36ads_A10_v5", "instanceType: Standard_NC48ads_A100_v4"
    )
    (repo / "ws.yaml").write_text(head)
    done = eval_cli(repo, tmp_path, smollm_cache, "--base", "HEAD", "--format", "json")
    assert done.returncode == 1, done.stderr[-2000:]
    [suite] = json.loads(done.stdout)["suites"]
    assert suite["base"]["pass_rate"] == 1.0 and suite["base"]["thresholds_met"], suite["base"]
    assert suite["error"].startswith("default/smollm2 did not start") and suite["pass_rate"] == 0.0
    assert suite["delta"]["pass_rate"] == -1.0 and suite["delta"]["p50_latency_ms"] is None
    assert no_process_left(tmp_path / "state")
    done = eval_cli(repo, tmp_path, smollm_cache, "--base", "HEAD", "--format", "markdown")
    assert "| pass rate (base → head) |" in done.stdout and "| 100% → 0% (-100%) |" in done.stdout, (
        done.stdout
    )


@pytest.mark.ml
@pytest.mark.slow
def test_a_server_that_crashes_mid_suite_is_reported_and_the_next_suite_still_runs(tmp_path, smollm_cache):
    """The server is killed while a suite asks it: that suite says so and stops asking; the target
    restarts the server and the next suite waits for it, runs, and is reported; nothing is left."""
    import signal
    import time

    repo = tmp_path / "repo"
    (repo / "evals").mkdir(parents=True)
    (repo / "ws.yaml").write_text(SMOL)
    many = "".join(
        f"  - {{id: q{i}, prompt: 'Count to {i}.', max_tokens: 24, regex: '.'}}\n" for i in range(12)
    )
    (repo / "evals" / "a-crash.yaml").write_text(f"workspaces: [smollm2]\ncases:\n{many}")
    (repo / "evals" / "b-after.yaml").write_text(
        "workspaces: [smollm2]\ncases: [{id: paris, prompt: What is the capital of France?, contains: Paris}]\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "KAITO_MODEL_CACHE": str(smollm_cache)}
    state = tmp_path / "state"
    cmd = [sys.executable, "-m", "reconciler", "eval", str(repo), "--local-state-dir", str(state)]
    proc = subprocess.Popen(
        [*cmd, "--format", "json"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:
            if "a-crash on default/smollm2: 12 case(s)" in line:
                break
        time.sleep(1.5)  # a case or so in
        pid = json.loads((state / "default" / "smollm2" / "process.json").read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-2000:]
    by_name = {s["suite"]: s for s in json.loads(out)["suites"]}
    crashed = by_name["a-crash"]
    assert "default/smollm2 stopped serving during the suite, at case" in crashed["error"], crashed
    assert "server exited with code -9" in crashed["error"] and "case(s) not run" in crashed["error"]
    assert len(crashed["cases"]) < 12 and not crashed["thresholds_met"]
    after = by_name["b-after"]
    assert after["thresholds_met"] and after["pass_rate"] == 1.0, after
    assert "waiting for it to come back" in err
    assert no_process_left(state)
