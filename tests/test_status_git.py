"""Status commits against a real git remote: the status branch, no-op passes, races with users."""

from __future__ import annotations

import os
import subprocess
import threading

import git
from support.gitserver import ENV
from support.workspaces import smol_ws

from reconciler.cli import main
from reconciler.daemon import Daemon, DaemonSettings
from reconciler.provisioners.none import NoneProvisioner
from reconciler.report.status_reporter import StatusReporter
from reconciler.report.statusgit import TRAILER, StatusWriter
from reconciler.source.git import GitSource
from reconciler.targets.render import RenderTarget


def branch_log(remote, branch) -> list[str]:
    bare = git.Repo(remote.bare)
    try:
        return [c.message.splitlines()[0] for c in bare.iter_commits(f"refs/heads/{branch}")]
    except git.GitCommandError:
        return []


def file_at(remote, branch, path) -> str | None:
    bare = git.Repo(remote.bare)
    try:
        return (bare.commit(f"refs/heads/{branch}").tree / path).data_stream.read().decode()
    except (KeyError, git.BadName, ValueError):
        return None


def daemon_with_status(remote, tmp_path, mode="branch"):
    source = GitSource(remote.url, "main", tmp_path / "cache")
    d = Daemon(
        source,
        RenderTarget(tmp_path / "out"),
        NoneProvisioner(),
        DaemonSettings(paths=["workspaces"], target_name="render", workers=2),
    )
    if mode == "tree":
        writer = StatusWriter(source, "main", ".kaito/status")
        d.ignore_prefixes.append(".kaito/status/")
    else:
        writer = StatusWriter(source, "kaito-status", "")
    reporter = StatusReporter(writer)
    d.on_pass.append(reporter.on_pass)
    return d, reporter


def test_status_branch_gets_one_commit_per_change_and_main_is_never_written(git_remote, tmp_path):
    user_head = git_remote.write(
        {"workspaces/a.yaml": smol_ws("a"), "workspaces/bad.yaml": smol_ws("bad", preset="nope")}
    )
    d, reporter = daemon_with_status(git_remote, tmp_path)
    d.run_pass()
    reporter.flush()
    status = file_at(git_remote, "kaito-status", "status/default/a.yaml")
    assert status and "state: Rendered" in status and f"observedRevision: {user_head}" in status
    assert "lastTransitionTime:" in status
    bad = file_at(git_remote, "kaito-status", "status/default/bad.yaml")
    assert "preset-unknown" in bad and "state: NotReady" in bad
    table = file_at(git_remote, "kaito-status", "STATUS.md")
    assert "| default/a | Standard_NV36ads_A10_v5 | True | Unknown |  | Unknown | Rendered |" in table
    assert git_remote.head() == user_head, "the watched branch is untouched"
    commits = branch_log(git_remote, "kaito-status")
    assert len(commits) == 1
    # an unchanged world writes nothing, however many passes run
    for _ in range(3):
        d.run_pass()
    reporter.flush()
    assert len(branch_log(git_remote, "kaito-status")) == 1
    assert file_at(git_remote, "kaito-status", "status/default/a.yaml") == status, "no timestamp ticks"
    # a change is one more commit, and the message says what moved
    git_remote.write({"workspaces/b.yaml": smol_ws("b")}, "add b")
    d.run_pass()
    reporter.flush()
    log = git.Repo(git_remote.bare).commit("refs/heads/kaito-status").message
    assert "default/b: new -> Rendered" in log and TRAILER in log
    reporter.close()
    d.close()


def test_status_command_prints_the_table(git_remote, tmp_path, capsys):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    d, reporter = daemon_with_status(git_remote, tmp_path)
    d.run_pass()
    reporter.close()
    capsys.readouterr()
    assert main(["status", "--repo", git_remote.url, "--cache-dir", str(tmp_path / "c2")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "STATE",
        "ENDPOINT",
        "SINCE",
    ]
    assert out.splitlines()[1].split()[:3] == ["default/a", "Standard_NV36ads_A10_v5", "True"]
    assert (
        main(["status", "--repo", git_remote.url, "--cache-dir", str(tmp_path / "c2"), "--format", "json"])
        == 0
    )
    import json

    data = json.loads(capsys.readouterr().out)
    assert data[0]["metadata"] == {"name": "a", "namespace": "default"} and data[0]["state"] == "Rendered"
    d.close()


def _user_push_loop(remote, n: int, errors: list) -> None:
    """A person committing and pushing n times, pulling (rebase) whenever the push is refused."""
    repo = remote.repo
    env = {**os.environ, **ENV}
    for i in range(n):
        path = remote.work / "notes" / f"n{i}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"note {i}\n")
        repo.index.add([f"notes/n{i}.txt"])
        repo.index.commit(f"user commit {i}")
        for _ in range(50):
            try:
                repo.git.push("origin", "HEAD:refs/heads/main", env=env)
                break
            except git.GitCommandError:
                repo.git.pull("--rebase", "origin", "main", env=env)
        else:
            errors.append(f"push {i} never succeeded")


def test_100_user_pushes_racing_status_commits_lose_nothing(git_remote, tmp_path):
    git_remote.write({"workspaces/a.yaml": smol_ws("a")}, "initial")
    source = GitSource(f"file://{git_remote.bare}", "main", tmp_path / "cache")
    writer = StatusWriter(source, "main", ".kaito/status")
    errors: list[str] = []
    user = threading.Thread(target=_user_push_loop, args=(git_remote, 100, errors))
    user.start()
    writes = 0
    i = 0
    while user.is_alive():
        i += 1
        result = writer.write(
            {"STATUS.md": f"status {i}\n", f"status/default/a{i % 3}.yaml": "x\n"}, f"status {i}"
        )
        writes += result.committed
    user.join()
    writer.write({"STATUS.md": "final\n"}, "final status")
    assert not errors
    messages = branch_log(git_remote, "main")
    user_commits = {m for m in messages if m.startswith("user commit ")}
    assert user_commits == {f"user commit {i}" for i in range(100)}, "every user commit survives"
    assert writes >= 1 and sum(m.startswith("status ") for m in messages) >= 1
    assert file_at(git_remote, "main", ".kaito/status/STATUS.md") == "final\n"
    # history is linear on top of users' work: no force push ever rewrote it
    assert (
        subprocess.run(
            ["git", "--git-dir", str(git_remote.bare), "fsck", "--no-progress"], capture_output=True
        ).returncode
        == 0
    )


def test_in_tree_status_commits_are_not_reconciled(git_remote, tmp_path):
    user_commit = git_remote.write({"workspaces/a.yaml": smol_ws("a")})
    d, reporter = daemon_with_status(git_remote, tmp_path, mode="tree")
    first = d.run_pass()
    reporter.flush()
    status_commit = git_remote.head()
    assert status_commit != user_commit
    assert file_at(git_remote, "main", ".kaito/status/status/default/a.yaml")
    second = d.run_pass()
    assert d.head == status_commit and not second.changed and second.writes == 0
    assert d.revision == user_commit, "status describes the user's revision, not our own commit"
    for _ in range(3):  # a status commit must not beget another one: nothing it reports changed
        d.run_pass()
        reporter.flush()
    assert git_remote.head() == status_commit
    reporter.close()
    d.close()
    assert first.changed


def test_status_writes_while_the_daemon_reads_revisions_never_mix_up_git_answers(tmp_path):
    """The status writer's thread and the daemon's thread read one repository at once.

    GitPython answers object reads from one long-lived `git cat-file --batch` per Repo, without
    a lock; when both threads shared one Repo, a write could read the loader's answer (wrong
    files, an error) or wait forever for its own: the status branch then stopped moving.
    """
    work = tmp_path / "repo"
    repo = git.Repo.init(work, initial_branch="main")
    for i in range(40):
        (work / "workspaces").mkdir(exist_ok=True)
        (work / "workspaces" / f"ws{i}.yaml").write_text(smol_ws(f"ws{i}") + "#" * (i * 97) + "\n")
    repo.index.add([f"workspaces/ws{i}.yaml" for i in range(40)])
    rev = repo.index.commit(
        "forty workspaces", author=git.Actor("t", "t@x"), committer=git.Actor("t", "t@x")
    ).hexsha
    expected = {p: (work / p).read_bytes() for p in (f"workspaces/ws{i}.yaml" for i in range(40))}

    source = GitSource(str(work), "main", tmp_path / "cache")
    writer = StatusWriter(source, "kaito-status", "")
    failures: list[str] = []
    stop = threading.Event()

    def write_status():
        try:
            for n in range(20):
                files = {f"status/ws{i}.yaml": f"state: S{n}\n" + "x" * (n * 31 + i) for i in range(12)}
                writer.write(files, f"status {n}")
                if writer.current_files(writer._remote_tip()) != files:
                    failures.append(f"status {n} read back different files")
        except Exception as e:
            failures.append(f"status writer: {type(e).__name__}: {e}")
        finally:
            stop.set()

    t = threading.Thread(target=write_status, daemon=True)
    t.start()
    loads = 0
    while not stop.is_set():
        got = dict(source.files(rev, ["workspaces/"], 1 << 20, remember=False))
        if got != expected:
            failures.append("a revision load read the wrong files")
            break
        loads += 1
    t.join(60)
    assert not t.is_alive(), "the status writer hung reading git"
    assert not failures, failures
    assert loads > 0


def test_scale_events_are_committed_at_most_once_a_gap_and_other_changes_at_once(git_remote, tmp_path):
    import time

    from support.wait import wait_until
    from test_inferenceset import annotated

    set_yaml = annotated(min_replicas=1, max_replicas=3).replace("namespace: llm", "namespace: default")
    git_remote.write({"workspaces/phi.yaml": set_yaml.replace("replicas: 2", "replicas: 1")})
    d, reporter = daemon_with_status(git_remote, tmp_path)
    reporter.scaling_gap = 3.0
    d.run_pass()
    reporter.flush()
    before = len(branch_log(git_remote, "kaito-status"))
    for n in (2, 3):  # two scale events in quick succession: one commit, with the newest
        d.scale(("default", "phi"), n)
        d.run_pass()
    time.sleep(0.5)
    assert len(branch_log(git_remote, "kaito-status")) == before, "a scale event waits for the gap"
    wait_until(lambda: len(branch_log(git_remote, "kaito-status")) == before + 1, 10, "the deferred commit")
    status = file_at(git_remote, "kaito-status", "status/default/phi.yaml")
    assert "replicas: 3" in status and file_at(git_remote, "kaito-status", "status/default/phi-2.yaml")
    # a change of git's own is written at once, gap or not
    git_remote.write({"workspaces/a.yaml": smol_ws("a")}, "another workspace")
    d.run_pass()
    wait_until(lambda: file_at(git_remote, "kaito-status", "status/default/a.yaml"), 2, "the new workspace")
    reporter.close()
