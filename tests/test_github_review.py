"""Pull-request review through githubkit against the GitHub double, with a real git remote.

The remote gets `refs/pull/<n>/head` pushed the way GitHub publishes pull request heads.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from doubles.github_api import GitHubDouble, pull_request_payload
from githubkit import GitHub
from githubkit.cache import MemCacheStrategy
from support.gitserver import GitRemote
from support.serving import serving
from support.wait import wait_until
from support.webhooks import deliver
from support.workspaces import smol_ws

from reconciler.daemon import Daemon, DaemonSettings
from reconciler.provisioners.none import NoneProvisioner
from reconciler.render.common import RenderSettings
from reconciler.report.github_review import DEPLOY_CONTEXT, VALIDATE_CONTEXT, GitHubReviewer
from reconciler.report.review_comment import LIMIT, MARKER
from reconciler.source.git import GitSource
from reconciler.targets.render import RenderTarget

OWNER, REPO, BOT = "acme", "gitops", "kaito-bot"


@dataclass
class World:
    remote: GitRemote
    gh: GitHubDouble
    tmp: Path
    opened: set[int] = field(default_factory=set)  # pull requests registered with the double


@pytest.fixture
def world(git_remote, tmp_path):
    gh_double = GitHubDouble()
    gh_double.start()
    gh_double.add_repo(OWNER, REPO)
    gh_double.add_token("bot-token", BOT, type="Bot")
    gh_double.add_token("user-token", "alice")
    yield World(git_remote, gh_double, tmp_path)
    gh_double.stop()


def open_pr(world: World, number: int, files: dict, message="change") -> str:
    """Commit `files` on a branch, publish it as refs/pull/<n>/head, and register the PR."""
    remote, gh_double = world.remote, world.gh
    base = remote.head()
    repo = remote.repo
    repo.git.checkout("-B", f"pr{number}", base)
    sha = remote.write(files, message, push=False)
    repo.git.push("origin", f"HEAD:refs/pull/{number}/head", "--force")
    repo.git.checkout("main")
    gh_double.add_commit(OWNER, REPO, sha)
    if number in world.opened:
        gh_double.set_pull_head(OWNER, REPO, number, sha)
    else:
        gh_double.add_pull(OWNER, REPO, number, sha, base_ref="main", base_sha=base)
        world.opened.add(number)
    return sha


def reviewer(remote, gh_double, tmp_path, **kw) -> GitHubReviewer:
    gh = GitHub("bot-token", base_url=gh_double.base_url, cache_strategy=MemCacheStrategy(), auto_retry=False)
    source = GitSource(remote.url, "main", tmp_path / "review-cache")
    return GitHubReviewer(
        gh,
        OWNER,
        REPO,
        source,
        paths=["workspaces"],
        namespace="default",
        render=RenderSettings(),
        bot_login=BOT,
        poll_interval=kw.pop("poll_interval", 0),
        **kw,
    )


def render_daemon(world: World) -> Daemon:
    return Daemon(
        GitSource(world.remote.url, "main", world.tmp / "daemon-cache"),
        RenderTarget(world.tmp / "out"),
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], target_name="render"),
    )


def bot_comments(gh_double, number):
    return [c for c in gh_double.comments(OWNER, REPO, number) if c["user"]["login"] == BOT]


def test_one_comment_however_many_pushes_and_errors_link_to_lines(world):
    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    remote.write({"workspaces/a.yaml": smol_ws("a")}, "base")
    head = open_pr(world, 7, {"workspaces/b.yaml": smol_ws("b", preset="phi-4-mini")}, "add b (typo)")
    r = reviewer(remote, gh_double, tmp)
    try:
        r.review_now(7)
        [c] = bot_comments(gh_double, 7)
        body = c["body"]
        assert body.startswith(MARKER) and ":x: **kaito-gitops: fix the errors below**" in body
        assert (
            f"[`workspaces/b.yaml:16`](https://github.com/{OWNER}/{REPO}/blob/{head}/workspaces/b.yaml#L16)"
            in body
        ), body[:1500]
        assert "unknown preset 'phi-4-mini'" in body
        [st] = [s for s in gh_double.statuses(OWNER, REPO, head) if s["context"] == VALIDATE_CONTEXT]
        assert st["state"] == "failure" and len(st["description"]) <= 140
        # the author fixes it: the same comment is edited, a new status goes on the new head
        head2 = open_pr(world, 7, {"workspaces/b.yaml": smol_ws("b", sku="Standard_NV72ads_A10_v5")}, "fix")
        r.review_now(7)
        [c2] = bot_comments(gh_double, 7)
        assert c2["id"] == c["id"] and ":white_check_mark: **kaito-gitops: ready to merge**" in c2["body"]
        assert "Workspaces: 1 added · GPUs 1 → 3 (+2) · $3.20/h → $9.72/h (+$6.52/h)" in c2["body"]
        assert "<details><summary><code>+</code> <b>default/b</b>" in c2["body"]
        [st2] = [s for s in gh_double.statuses(OWNER, REPO, head2) if s["context"] == VALIDATE_CONTEXT]
        assert st2["state"] == "success"
        # nothing new to say: no write at all
        writes = gh_double.write_count("/repos/")
        r._reviewed.clear()
        r.review_now(7)
        assert gh_double.write_count("/repos/") == writes
    finally:
        r.close()


def test_the_comment_is_found_across_pages_after_a_restart(world):
    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    remote.write({"workspaces/a.yaml": smol_ws("a")}, "base")
    open_pr(world, 3, {"workspaces/b.yaml": smol_ws("b")})
    for i in range(150):
        gh_double.add_comment(OWNER, REPO, 3, f"comment {i}", user_login="alice")
    first = reviewer(remote, gh_double, tmp)
    first.review_now(3)
    first.close()
    for i in range(150):
        gh_double.add_comment(
            OWNER, REPO, 3, f"later comment {i} {MARKER}", user_login="alice"
        )  # not the bot's
    head = open_pr(world, 3, {"workspaces/c.yaml": smol_ws("c")}, "add c")
    fresh = reviewer(remote, gh_double, tmp)  # no memory of the comment id
    try:
        fresh.review_now(3)
    finally:
        fresh.close()
    assert len(bot_comments(gh_double, 3)) == 1
    assert "default/c" in bot_comments(gh_double, 3)[0]["body"]
    assert any(s["context"] == VALIDATE_CONTEXT for s in gh_double.statuses(OWNER, REPO, head))


def test_signed_pull_request_webhook_triggers_a_review(world):
    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    remote.write({"workspaces/a.yaml": smol_ws("a")}, "base")
    head = open_pr(world, 5, {"workspaces/b.yaml": smol_ws("b")})
    r = reviewer(remote, gh_double, tmp)
    secret = b"s3cret"
    try:
        with serving(render_daemon(world), secret=secret, reviewers=[r]) as url:
            payload = pull_request_payload("opened", OWNER, REPO, 5, head, "pr5", "main")
            body = json.dumps(payload).encode()
            assert deliver(url + "/webhook", body, "pull_request", b"wrong") == 401
            assert deliver(url + "/webhook", body, "pull_request", secret) == 202
            wait_until(lambda: bot_comments(gh_double, 5), what="the review comment")
            assert len(bot_comments(gh_double, 5)) == 1
    finally:
        r.close()


def test_polling_finds_pull_requests_without_webhooks_and_respects_rate_limits(world):
    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    remote.write({"workspaces/a.yaml": smol_ws("a")}, "base")
    open_pr(world, 11, {"workspaces/b.yaml": smol_ws("b")})
    gh_double.secondary_limit_next(1, retry_after=1, match=r"POST .*/comments")
    r = reviewer(remote, gh_double, tmp, poll_interval=0.2)
    try:
        wait_until(lambda: bot_comments(gh_double, 11), what="the review comment")
        assert len(bot_comments(gh_double, 11)) == 1, "reviewed after waiting out the secondary limit"
        limited = [q for q in gh_double.requests if q.method == "POST" and q.status == 403]
        assert len(limited) == 1
    finally:
        r.close()


def test_comment_stays_under_githubs_limit_and_says_what_it_left_out(world):
    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    remote.write({"workspaces/a.yaml": smol_ws("a")}, "base")
    many = {f"workspaces/w{i:03d}.yaml": smol_ws(f"w{i:03d}") for i in range(160)}
    open_pr(world, 9, many, "160 workspaces")
    r = reviewer(remote, gh_double, tmp)
    try:
        r.review_now(9)
    finally:
        r.close()
    [c] = bot_comments(gh_double, 9)
    assert len(c["body"]) <= LIMIT
    assert (
        "more workspace section(s) left out to stay within GitHub's 65,536-character comment limit"
        in c["body"]
    )
    assert c["body"].count("</details>") >= 20, "whole sections, never a cut one"


def test_after_merge_the_comment_follows_the_rollout(world):
    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    remote.write({"workspaces/a.yaml": smol_ws("a")}, "base")
    head = open_pr(world, 4, {"workspaces/b.yaml": smol_ws("b")})
    r = reviewer(remote, gh_double, tmp)
    d = render_daemon(world)
    d.on_pass.append(r.on_pass)
    try:
        r.review_now(4)
        # merge: main moves to the PR head (fast-forward), GitHub marks the PR merged
        remote.repo.git.merge("--ff-only", head)
        remote.push()
        gh_double.close_pull(OWNER, REPO, 4, merged=True, merge_commit_sha=head)
        r.review_now(4)
        [pending] = [s for s in gh_double.statuses(OWNER, REPO, head) if s["context"] == DEPLOY_CONTEXT]
        assert pending["state"] == "pending"
        d.run_pass()
        [c] = bot_comments(gh_double, 4)
        assert "### Deployment :white_check_mark:" in c["body"], c["body"][-800:]
        assert "| `default/b` | rendered |" in c["body"]
        states = [s["state"] for s in gh_double.statuses(OWNER, REPO, head) if s["context"] == DEPLOY_CONTEXT]
        assert states[-1] == "success"
    finally:
        r.close()
        d.close()


def test_a_merge_the_daemon_only_sees_under_a_later_commit_still_deploys(world):
    """Two pushes between passes: the daemon loads the commit after the merge, never the merge."""
    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    remote.write({"workspaces/a.yaml": smol_ws("a")}, "base")
    head = open_pr(world, 5, {"workspaces/b.yaml": smol_ws("b")})
    d = render_daemon(world)
    r = reviewer(remote, gh_double, tmp)
    r.source = d.source  # as `kaito-gitops run` wires it: one repository for both
    d.on_pass.append(r.on_pass)
    try:
        d.run_pass()
        r.review_now(5)
        remote.repo.git.merge("--ff-only", head)
        remote.push()
        gh_double.close_pull(OWNER, REPO, 5, merged=True, merge_commit_sha=head)
        r.review_now(5)
        later = remote.write(
            {"workspaces/c.yaml": smol_ws("c")}, "another change, pushed before the daemon's pass"
        )
        d.run_pass()
        assert d.revision == later != head
        states = [s["state"] for s in gh_double.statuses(OWNER, REPO, head) if s["context"] == DEPLOY_CONTEXT]
        assert states[-1] == "success", states
    finally:
        r.close()
        d.close()


def test_threads_are_not_left_behind(world):
    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    before = threading.active_count()
    r = reviewer(remote, gh_double, tmp)
    r.close()
    assert threading.active_count() <= before


def test_github_app_authentication_and_a_low_budget(world):
    """A GitHub App key -> installation token; comments come from <slug>[bot]; a low budget pauses."""
    import types

    from reconciler.report.github_review import build_reviewer

    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    app = gh_double.add_app(4242, "kaito-gitops-app")
    key = tmp / "app.pem"
    key.write_text(app.private_key_pem)
    remote.write({"workspaces/a.yaml": smol_ws("a")}, "base")
    open_pr(world, 21, {"workspaces/b.yaml": smol_ws("b")})
    daemon = types.SimpleNamespace(
        source=GitSource(remote.url, "main", tmp / "app-cache"),
        on_pass=[],
        render=RenderSettings(),
        settings=types.SimpleNamespace(paths=["workspaces"], namespace="default"),
    )
    cfg = types.SimpleNamespace(
        github_repo=f"{OWNER}/{REPO}",
        github_api_url=gh_double.base_url,
        github_app_id="4242",
        github_app_key_file=str(key),
        github_installation_id=str(app.installation_id),
        github_token_file="",
        review_interval=0,
    )
    r = build_reviewer(daemon, cfg)
    try:
        assert r.bot_login == "kaito-gitops-app[bot]"
        r.review_now(21)
        [c] = [
            c for c in gh_double.comments(OWNER, REPO, 21) if c["user"]["login"] == "kaito-gitops-app[bot]"
        ]
        assert c["body"].startswith(MARKER)
        # the budget runs low: the reviewer pauses until the reset instead of burning the rest
        gh_double.set_rate_limit(10, reset_in_seconds=120)
        r._reviewed.clear()
        r.review_now(21)
        assert r._paused_until > time.monotonic() + 60
    finally:
        r.close()


def test_the_review_shows_each_other_object_with_a_field_level_diff_and_refuses_a_raw_secret(world):
    remote, gh_double, tmp = world.remote, world.gh, world.tmp
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: serving}\ndata: {mode: '%s'}\n"
    remote.write({"workspaces/a.yaml": smol_ws("a"), "workspaces/cm.yaml": cm % "fast"}, "base")
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: hf}\nstringData: {HF_TOKEN: hf_realvalue}\n"
    head = open_pr(world, 9, {"workspaces/cm.yaml": cm % "careful", "workspaces/s.yaml": secret}, "tune")
    r = reviewer(remote, gh_double, tmp)
    try:
        r.review_now(9)
        [c] = bot_comments(gh_double, 9)
        body = c["body"]
        assert (
            "Other objects: 1 updated" in body
            and "`~ ConfigMap default/serving` (`workspaces/cm.yaml`)" in body
        )
        assert "  -  mode: fast\n  +  mode: careful\n" in body, body
        assert (
            f"[`workspaces/s.yaml:2`](https://github.com/{OWNER}/{REPO}/blob/{head}/workspaces/s.yaml#L2)"
            in body
        )
        assert "SealedSecret" in body and "hf_realvalue" not in body
        [st] = [s for s in gh_double.statuses(OWNER, REPO, head) if s["context"] == VALIDATE_CONTEXT]
        assert st["state"] == "failure"
    finally:
        r.close()
