"""Real git remotes for tests: `git daemon` (git://) serving bare repositories on 127.0.0.1.

`GitRemote` is a bare repository behind the daemon plus a working clone to commit and push
from, the way a user would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import git

from support.net import free_port

ENV = {
    "GIT_AUTHOR_NAME": "dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
    "GIT_TERMINAL_PROMPT": "0",
}


class GitDaemon:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> GitDaemon:
        self.proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--export-all",
                "--enable=receive-pack",
                f"--base-path={self.root}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                "--reuseaddr",
                "--informative-errors",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("git daemon did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"


class GitRemote:
    """A bare repository (the remote) and a clone of it to work in.

    `url` is what a daemon under test fetches: git:// through `daemon` when one serves `root`
    (its base path), else file://. The working clone always pushes over file://.
    """

    def __init__(
        self, root: Path, name: str = "gitops.git", daemon: GitDaemon | None = None, branch: str = "main"
    ):
        self.root = Path(root)
        self.bare = self.root / "remotes" / name
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        git.Repo.init(self.bare, bare=True, initial_branch=branch)
        self.daemon = daemon
        self.url = (
            daemon.url(self.bare.relative_to(daemon.root).as_posix()) if daemon else f"file://{self.bare}"
        )
        self.work = self.root / "work" / name.removesuffix(".git")
        self.repo = git.Repo.init(self.work, initial_branch=branch)
        with self.repo.config_writer() as c:
            c.set_value("user", "name", "dev").set_value("user", "email", "dev@example.com")
        self.repo.create_remote("origin", f"file://{self.bare}")
        self.branch = branch

    def write(self, files: dict[str, str | None], message: str = "update", push: bool = True) -> str:
        """Write (or, with None, delete) files, commit, push; return the new commit sha."""
        for rel, text in files.items():
            p = self.work / rel
            if text is None:
                if p.exists():
                    self.repo.index.remove([rel], working_tree=True)
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            self.repo.index.add([rel])
        commit = self.repo.index.commit(message)
        if push:
            self.push()
        return commit.hexsha

    def push(self) -> None:
        self.repo.git.push("origin", f"HEAD:refs/heads/{self.branch}", env={**os.environ, **ENV})

    def head(self) -> str:
        return git.Repo(self.bare).commit(f"refs/heads/{self.branch}").hexsha
