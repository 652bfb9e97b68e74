"""The daemon against a real git remote (git daemon) with the render target: the loop's rules.

Kubernetes-specific behaviour (server-side apply, drift, API faults) is in test_daemon_kube.py.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.request

import pytest
from support.gitserver import GitRemote
from support.net import free_port, http_status
from support.serving import serving
from support.wait import wait_until
from support.webhooks import deliver
from support.workspaces import smol_ws

from reconciler.daemon import Daemon, DaemonSettings
from reconciler.provisioners.none import NoneProvisioner
from reconciler.runconfig import duration
from reconciler.source.git import GitAuth, GitSource, SourceError, redact_url
from reconciler.targets.render import RenderTarget


def make_daemon(remote, tmp_path, **kw) -> Daemon:
    source = GitSource(remote.url, "main", tmp_path / "cache")
    settings = DaemonSettings(paths=["workspaces"], workers=4, target_name="render", **kw)
    return Daemon(source, RenderTarget(tmp_path / "out"), NoneProvisioner(), settings)


def rendered(tmp_path) -> set[str]:
    out = tmp_path / "out"
    return {str(p.relative_to(out)) for p in out.rglob("*.yaml")}


def test_push_is_rendered_and_an_unchanged_revision_does_no_work(git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a"), "workspaces/b.yaml": smol_ws("b")})
    d = make_daemon(git_remote, tmp_path)
    r1 = d.run_pass()
    assert r1.changed and r1.writes == 6 and not r1.errors
    assert {"default/a/statefulset-a.yaml", "default/b/service-b.yaml"} <= rendered(tmp_path)
    r2 = d.run_pass()
    assert not r2.changed and r2.writes == 0
    assert d.statuses[("default", "a")].state == "Rendered"
    git_remote.write({"workspaces/b.yaml": None}, "remove b")
    r3 = d.run_pass()
    assert r3.changed and r3.removed == [("default", "b")]
    assert not any(p.startswith("default/b/") for p in rendered(tmp_path))


def test_invalid_revision_keeps_the_last_good_state_and_reports(git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    d = make_daemon(git_remote, tmp_path)
    d.run_pass()
    before = (tmp_path / "out/default/a/statefulset-a.yaml").read_text()
    git_remote.write({"workspaces/a.yaml": smol_ws("a", preset="no-such-model")}, "typo")
    r = d.run_pass()
    assert r.changed and r.writes == 0 and not r.removed
    assert (tmp_path / "out/default/a/statefulset-a.yaml").read_text() == before
    [report] = d.reports()
    assert report.errors and report.errors[0].rule == "preset-unknown"
    assert "still running the last good version" in report.status.last_error


def test_unreadable_file_is_held_not_pruned(git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a"), "workspaces/b.yaml": smol_ws("b")})
    d = make_daemon(git_remote, tmp_path)
    d.run_pass()
    git_remote.write({"workspaces/b.yaml": "apiVersion: [broken\n"}, "oops")
    r = d.run_pass()
    assert not r.removed
    assert "default/b/statefulset-b.yaml" in rendered(tmp_path)


def test_a_restarted_daemon_never_prunes_a_workspace_that_is_invalid_now(git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    make_daemon(git_remote, tmp_path).run_pass()
    git_remote.write({"workspaces/a.yaml": smol_ws("a", preset="typo")}, "break it")
    fresh = make_daemon(git_remote, tmp_path)  # no memory of the last good state
    r = fresh.run_pass()
    assert not r.removed and ("default", "a") in r.held
    assert "default/a/statefulset-a.yaml" in rendered(tmp_path)


def test_zero_workspaces_does_not_prune_everything_unless_allowed(git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    make_daemon(git_remote, tmp_path).run_pass()
    git_remote.write({"workspaces/a.yaml": None, "workspaces/README.md": "moved"}, "empty")
    guarded = make_daemon(git_remote, tmp_path).run_pass()
    assert not guarded.removed and ("default", "a") in guarded.held
    allowed = make_daemon(git_remote, tmp_path, allow_empty_prune=True).run_pass()
    assert allowed.removed == [("default", "a")]


def test_a_commit_that_deletes_the_last_workspace_removes_it(git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a"), "workspaces/b.yaml": smol_ws("b")})
    d = make_daemon(git_remote, tmp_path)
    d.run_pass()
    git_remote.write({"workspaces/a.yaml": None}, "remove a")
    git_remote.write({"workspaces/b.yaml": None}, "remove b, the last one")  # the folder goes too
    r = d.run_pass()
    assert sorted(r.removed) == [("default", "a"), ("default", "b")] and not r.held
    assert not rendered(tmp_path)


def test_the_last_workspace_moved_out_of_the_watched_folder_is_held(git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    d = make_daemon(git_remote, tmp_path)
    d.run_pass()
    git_remote.write({"workspaces/a.yaml": None, "elsewhere/a.yaml": smol_ws("a")}, "move the folder")
    r = d.run_pass()
    assert not r.removed and r.held == [("default", "a")]
    assert d._moved_out == {("default", "a"): "elsewhere/a.yaml"}
    assert "default/a/statefulset-a.yaml" in rendered(tmp_path)


def test_one_bad_workspace_does_not_block_the_others(git_remote, tmp_path):
    files = {f"workspaces/w{i}.yaml": smol_ws(f"w{i}") for i in range(5)}
    files["workspaces/bad.yaml"] = smol_ws("bad", preset="nope")
    git_remote.write(files)
    d = make_daemon(git_remote, tmp_path)
    r = d.run_pass()
    assert not r.errors
    assert sum(1 for p in rendered(tmp_path) if p.endswith("statefulset-" + p.split("/")[1] + ".yaml")) == 5
    bad = next(x for x in d.reports() if x.key == ("default", "bad"))
    assert bad.status.state == "NotReady" and bad.errors


def test_unreachable_remote_raises_a_clean_error(tmp_path):
    source = GitSource(f"git://127.0.0.1:{free_port()}/nothing.git", "main", tmp_path / "cache")
    with pytest.raises(SourceError) as e:
        source.sync()
    assert "git ls-remote" in str(e.value)


def test_credentials_stay_out_of_urls_and_messages(tmp_path):
    with pytest.raises(SourceError, match="credentials in the repository URL are not allowed"):
        GitSource("https://user:ghp_secret123@example.com/r.git", "main", tmp_path)
    assert redact_url("https://u:p@h.example:8443/x.git") == "https://h.example:8443/x.git"
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    env = GitAuth(token_file=str(token)).env()
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    scheme, _, credentials = env["GIT_CONFIG_VALUE_0"].removeprefix("Authorization: ").partition(" ")
    assert (scheme, base64.b64decode(credentials, validate=True)) == ("Basic", b"x-access-token:s3cret-token")


def test_durations():
    assert (
        duration("90s") == 90
        and duration("5m") == 300
        and duration("1h30m") == 5400
        and duration("250ms") == 0.25
    )
    assert duration(12) == 12.0
    with pytest.raises(ValueError):
        duration("5 minutes")


def test_webhook_triggers_a_pass_and_bad_signatures_do_not(git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    d = make_daemon(git_remote, tmp_path, interval=3600)
    secret = b"webhook-secret"
    leader = threading.Event()
    with serving(d, secret=secret, is_leader=leader.is_set) as url:
        assert http_status(url + "/readyz") == 503, "not the leader, no pass yet"
        leader.set()
        d.poke()
        wait_until(lambda: d.last_pass is not None, what="the first pass")
        assert http_status(url + "/readyz") == 200
        sha = git_remote.write({"workspaces/b.yaml": smol_ws("b")}, "add b")
        body = json.dumps(
            {"ref": "refs/heads/main", "after": sha, "repository": {"full_name": "o/r"}}
        ).encode()
        other_branch = json.dumps(
            {"ref": "refs/heads/feature", "after": sha, "repository": {"full_name": "o/r"}}
        ).encode()
        assert deliver(url + "/webhook", body, "push", b"wrong-secret") == 401
        assert deliver(url + "/webhook", body, "push", None) == 401
        assert deliver(url + "/webhook", other_branch, "push", secret) == 202
        time.sleep(0.5)
        assert d.revision != sha, "an unsigned delivery or another branch's push triggers nothing"
        assert deliver(url + "/webhook", body, "push", secret, delivery="d-1") == 202
        wait_until(
            lambda: d.revision == sha and "default/b/statefulset-b.yaml" in rendered(tmp_path), what="b"
        )
        assert deliver(url + "/webhook", body, "push", secret, delivery="d-1") == 200  # redelivery: deduped
        big = b"{" + b" " * (6 * 1024 * 1024) + b"}"
        assert deliver(url + "/webhook", big, "push", secret) == 413
        assert http_status(url + "/healthz") == 200
        with urllib.request.urlopen(url + "/metrics") as r:
            text = r.read().decode()
        assert "kaito_gitops_pass_duration_seconds_count" in text and "kaito_gitops_applies_total" in text
        # what the alerts in deploy/components/monitoring read
        assert 'kaito_gitops_webhook_requests_total{code="401"} 2.0' in text
        assert 'kaito_gitops_webhook_requests_total{code="202"} 2.0' in text
        assert 'kaito_gitops_webhook_requests_total{code="413"} 1.0' in text
        assert re.search(
            r'kaito_gitops_workspace_condition\{condition="\w+",namespace="default",workspace="b"\}', text
        )
        assert "kaito_gitops_workspaces_in_backoff 0.0" in text
        leader.clear()
        assert http_status(url + "/readyz") == 503, "a replica that lost the lease is not ready"


def test_a_commit_in_a_local_repository_is_picked_up_without_waiting_for_the_poll(tmp_path):
    """A local path source: the ref watcher pokes the daemon, so an hour-long interval does not matter."""
    from reconciler.source.watch import RefWatcher

    work = GitRemote(tmp_path / "local", "unused.git")  # only its working clone is used, read in place
    work.write({"workspaces/a.yaml": smol_ws("a")}, push=False)
    source = GitSource(str(work.work), "main", tmp_path / "cache")
    assert source.local and source.watch_paths() == [str(work.work / ".git")]
    settings = DaemonSettings(paths=["workspaces"], workers=2, target_name="render", interval=3600)
    d = Daemon(source, RenderTarget(tmp_path / "out"), NoneProvisioner(), settings)
    watcher = RefWatcher(source.watch_paths()[0], d.poke).start()
    loop = threading.Thread(target=d.run_forever, daemon=True)
    loop.start()
    try:
        wait_until(lambda: "default/a/statefulset-a.yaml" in rendered(tmp_path), 10, "a rendered")
        sha = work.write({"workspaces/b.yaml": smol_ws("b")}, push=False)
        wait_until(lambda: "default/b/statefulset-b.yaml" in rendered(tmp_path), 10, "b (interval: 1 h)")
        assert d.revision == sha

        def passes() -> float:
            return d.metrics.registry.get_sample_value("kaito_gitops_pass_duration_seconds_count")

        time.sleep(0.5)  # one commit writes several ref files; let their passes finish
        before = passes()
        time.sleep(1.0)
        assert passes() == before, "reading the refs must not poke another pass"
    finally:
        d.stop()
        loop.join(10)
        watcher.stop()
        d.close()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--provisioner", "AKS"], "--provisioner must be aks or none, not 'AKS'"),
        (["--target", "k8s"], "--target must be kubernetes, local or render"),
        (["--status", "yes"], "--status must be branch, tree or off"),
        (["--target", "render"], "--target render needs --out DIR"),
    ],
)
def test_run_refuses_bad_settings_before_doing_anything(tmp_path, capsys, flags, words):
    from reconciler.cli import main

    assert main(["run", "--repo", str(tmp_path), *flags]) == 2
    assert words in capsys.readouterr().err
