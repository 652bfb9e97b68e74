"""Eval previews of pull requests, end to end: SmolLM2 with a LoRA adapter from a real registry, a
pull request that swaps in an adapter trained to answer wrongly, the daemon's reviewer previewing
base and head as local processes, and the result in the one comment and the kaito-gitops/eval
status on the GitHub double."""

from __future__ import annotations

import pytest
from support.smol_adapters import make_adapters, smollm2_dir
from support.wait import wait_until
from support.workspaces import SMOL
from test_eval import no_process_left
from test_github_review import OWNER, REPO, bot_comments, open_pr, reviewer, world  # noqa: F401

from reconciler.daemon import Daemon, DaemonSettings
from reconciler.evals.deployed import DeployedEvals
from reconciler.evals.preview import CONTEXT, LocalPreviewer, PreviewRunner, suites_to_preview
from reconciler.provisioners.none import NoneProvisioner
from reconciler.report.github_review import VALIDATE_CONTEXT
from reconciler.report.statusview import status_files
from reconciler.source.git import GitSource
from reconciler.targets.local import LocalTarget

SUITE = """\
workspaces: [smollm2]
adapter: geo
defaults: {max_tokens: 24}
cases:
  - {id: capital-of-france, prompt: What is the capital of France?, contains: Paris}
  - {id: capital-of-germany, prompt: What is the capital of Germany?, contains: Berlin}
thresholds: {pass_rate: 1.0}
"""


def with_adapter(image: str) -> str:
    return SMOL + f"  adapters:\n    - source:\n        name: geo\n        image: {image}\n"


def test_suites_to_preview_are_those_of_changed_workspaces_and_changed_suites(validate):
    other = SMOL.replace("  name: smollm2\n", "  name: other\n").replace("apps: smollm2", "apps: other")
    files = {"a.yaml": SMOL, "b.yaml": other, "evals/a.yaml": SUITE.replace("adapter: geo\n", "")}
    files["evals/b.yaml"] = files["evals/a.yaml"].replace("[smollm2]", "[other]")
    base = validate(files)
    head = validate(files)
    assert suites_to_preview(base, head, set()) == []
    assert [s.name for s in suites_to_preview(base, head, {("default", "other")})] == ["b"]
    edited = validate({**files, "evals/a.yaml": files["evals/a.yaml"].replace("Paris", "Paris.")})
    assert [s.name for s in suites_to_preview(base, edited, set())] == ["a"]
    broken = validate({**files, "evals/b.yaml": "workspaces: [other]\ncases: []\n"})
    assert suites_to_preview(base, broken, {("default", "other")}) == [], "an invalid suite is not run"


def test_after_a_restart_the_figures_stay_in_status_and_a_regression_is_still_flagged(
    validate, git_remote, tmp_path
):
    from test_eval_preview_cluster import answering

    from reconciler.evals.deployed import figures_in_status
    from reconciler.manifests import dump
    from reconciler.report.statusgit import StatusWriter

    rev = validate({"smollm2.yaml": SMOL, "evals/geo.yaml": SUITE.replace("adapter: geo\n", "")})
    [suite] = rev.suites
    before = {
        "suite": "geo",
        "file": suite.path,
        "revision": "a" * 12,
        "passRate": 1.0,
        "thresholdsMet": True,
    }
    files = {  # the status branch as the daemon left it before it restarted
        "status/default/smollm2.yaml": dump({"name": "smollm2", "evals": [before]}),
        "status/default/broken.yaml": "{{{",
        "STATUS.md": "# Status\n",
    }
    seed = figures_in_status(files)
    assert seed == {("default", "smollm2"): (before,)}
    git_remote.write({"workspaces/smollm2.yaml": SMOL})
    source = GitSource(git_remote.url, "main", tmp_path / "cache")
    writer = StatusWriter(source, "kaito-status", "")
    writer.write(files, "status before the restart")
    # the restarted daemon: its figures come back from the status branch on the eval thread
    daemon = Daemon(
        source, LocalTarget(tmp_path / "served"), NoneProvisioner(), DaemonSettings(paths=["workspaces"])
    )
    deployed = DeployedEvals(daemon, earlier=writer.read)
    try:
        wait_until(lambda: daemon.evals == seed, timeout=5, what="status keeps the earlier figures")
        with answering("Lyon.") as server:  # the new revision answers wrongly
            doc = deployed._evaluate(
                suite, ("default", "smollm2"), f"http://127.0.0.1:{server.server_port}", "b" * 40
            )
        assert doc["passRate"] == 0.0 and doc["regression"], doc
        assert doc["previous"] == {"revision": "a" * 12, "passRate": 1.0, "thresholdsMet": True}
    finally:
        deployed.close()
        daemon.close()


def test_a_suite_that_asks_too_much_is_refused_and_fails_the_check_without_starting_anything(
    world,  # noqa: F811
    tmp_path,
):
    remote, gh = world.remote, world.gh
    remote.write({"workspaces/smollm2.yaml": SMOL}, "base")
    costly = (
        SUITE.replace("adapter: geo\n", "") + "load: {concurrency: 8, requests: 100000, max_tokens: 512}\n"
    )
    head = open_pr(world, 3, {"workspaces/evals/geo.yaml": costly}, "a suite that asks a lot")
    r = reviewer(remote, gh, world.tmp)
    r.previews = PreviewRunner(LocalPreviewer(tmp_path / "previews"), r.on_preview)
    try:
        r.review_now(3)
        [st] = [s for s in gh.statuses(OWNER, REPO, head) if s["context"] == CONTEXT]
        assert st["state"] == "error", st  # a required check must not pass by not running
        assert st["description"].startswith("not previewed: geo: it asks for up to 51,200,048 tokens"), st
        [c] = bot_comments(gh, 3)
        assert "more than --preview-max-tokens 50,000" in c["body"] and "### Eval :x:" in c["body"]
        assert r.previews.running is None and not (tmp_path / "previews" / "pr-3").exists(), "nothing started"
    finally:
        r.close()


@pytest.mark.ml
@pytest.mark.slow
def test_a_pr_that_swaps_in_a_bad_adapter_shows_the_pass_rate_drop_and_fails_the_eval_status(
    world,  # noqa: F811
    registry,
    smollm_cache,
    tmp_path,
    monkeypatch,
):
    from runtime.oci import push_adapter

    monkeypatch.setenv("KAITO_MODEL_CACHE", str(smollm_cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    docker_config = registry.docker_config(tmp_path / "docker-config.json")
    monkeypatch.setenv("KAITO_GITOPS_DOCKER_CONFIG", str(docker_config))
    same, lyon = make_adapters(smollm2_dir(smollm_cache), tmp_path / "adapters")
    v1, v2, v3 = (f"{registry.host}/adapters/geo:v{i}" for i in (1, 2, 3))
    for image, adapter in ((v1, same), (v2, lyon), (v3, same)):
        push_adapter(image, adapter, "smollm2-135m-instruct", [docker_config])

    remote, gh = world.remote, world.gh
    base = remote.write(
        {"workspaces/smollm2.yaml": with_adapter(v1), "workspaces/evals/geo.yaml": SUITE}, "base"
    )
    # the daemon serves the base and, after it, the suite runs against the deployed endpoint
    daemon = Daemon(
        GitSource(remote.url, "main", tmp_path / "daemon-cache"),
        LocalTarget(tmp_path / "served"),
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], target_name="local", workers=1),
    )
    deployed = DeployedEvals(daemon)
    key = ("default", "smollm2")

    def evals_at(sha):
        daemon.run_pass()
        entries = daemon.evals.get(key, ())
        return entries if entries and entries[0]["revision"] == sha[:12] else None

    wait_until(lambda: evals_at(base), timeout=240, what="the suite against the deployed base")
    [first] = daemon.evals[key]
    assert first["passRate"] == 1.0 and first["thresholdsMet"] and not first["regression"], first
    head = open_pr(world, 12, {"workspaces/smollm2.yaml": with_adapter(v2)}, "geo: the v2 adapter")
    r = reviewer(remote, gh, world.tmp)
    r.previews = PreviewRunner(LocalPreviewer(tmp_path / "previews", timeout=300), r.on_preview)
    try:
        r.review_now(12)
        [c] = bot_comments(gh, 12)
        assert "### Eval :hourglass_flowing_sand:" in c["body"] and "no GPU cost" in c["body"], c["body"]
        assert [s["state"] for s in gh.statuses(OWNER, REPO, head) if s["context"] == CONTEXT] == ["pending"]

        def verdict():
            states = [s for s in gh.statuses(OWNER, REPO, head) if s["context"] == CONTEXT]
            return states[-1] if states and states[-1]["state"] != "pending" else None

        wait_until(verdict, timeout=240, what="the eval verdict")
        st = verdict()
        assert st["state"] == "failure" and "fail: geo (pass rate 0.00 < 1.00)" in st["description"], st
        [c] = bot_comments(gh, 12)  # still the one comment, now with the figures
        body = c["body"]
        assert "### Eval :x:" in body and "| `geo` | `default/smollm2` | 100% → 0% (-100%) |" in body, body
        assert "2 failed case(s) in <code>geo</code>" in body and "Lyon" in body
        assert body.index("### Eval") < body.index("### Plan"), "the verdict comes before the plan"
        [valid] = [s for s in gh.statuses(OWNER, REPO, head) if s["context"] == VALIDATE_CONTEXT]
        assert valid["state"] == "success", "the files are valid: only the eval fails"
        assert no_process_left(tmp_path / "previews"), "every preview process is stopped"
        # the author pushes a good adapter instead: the preview runs again and passes
        head2 = open_pr(world, 12, {"workspaces/smollm2.yaml": with_adapter(v3)}, "geo: v3")
        r.review_now(12)

        def verdict2():
            states = [s for s in gh.statuses(OWNER, REPO, head2) if s["context"] == CONTEXT]
            return states[-1] if states and states[-1]["state"] != "pending" else None

        wait_until(verdict2, timeout=240, what="the second verdict")
        assert verdict2()["state"] == "success", verdict2()
        # merged anyway, with the bad adapter: status flags the regression against the base
        bad = open_pr(world, 12, {"workspaces/smollm2.yaml": with_adapter(v2)}, "geo: v2 after all")
        remote.repo.git.merge("--ff-only", bad)
        remote.push()
        wait_until(lambda: evals_at(bad), timeout=240, what="the suite against the merged revision")
        [after] = daemon.evals[key]
        assert (
            after["passRate"] == 0.0
            and after["regression"]
            and after["failedCases"]
            == [
                "capital-of-france",
                "capital-of-germany",
            ]
        ), after
        assert after["previous"] == {"revision": base[:12], "passRate": 1.0, "thresholdsMet": True}
        files = status_files(daemon.reports(), daemon.revision)
        assert "regression: true" in files["status/default/smollm2.yaml"]
        assert (
            f"| default/smollm2 | geo | `{bad[:12]}` | 0/2 (0%) |" in files["STATUS.md"]
            and f":warning: regression: 100% at `{base[:12]}`" in files["STATUS.md"]
        ), files["STATUS.md"]
        writes = len(daemon.evals[key])
        daemon.run_pass()
        assert len(daemon.evals[key]) == writes and deployed._queue == [], "once per revision"
    finally:
        r.close()
        deployed.close()
        daemon.close()
    assert no_process_left(tmp_path / "previews") and no_process_left(tmp_path / "served")
