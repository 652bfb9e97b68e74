"""Status commits: write workspace status files to git without ever losing a user's commit.

Commits are built with git plumbing in the daemon's own repository (a temporary index,
`commit-tree`), always on top of the newest remote head, and pushed without force. When
someone pushed in between, the push is refused; we fetch, rebuild our change on their
commit and try again with backoff. A commit happens only when the files changed.

Two places: the branch `kaito-status` (default; the watched branch is never written), or
`.kaito/status/` on the watched branch (`--status tree`), which the daemon recognises as
its own and does not reconcile.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

import git
import structlog

from ..source.git import GitSource, SourceError, _clean

log = structlog.get_logger("kaito_gitops.status")

AUTHOR = {
    "GIT_AUTHOR_NAME": "kaito-gitops",
    "GIT_AUTHOR_EMAIL": "kaito-gitops@users.noreply.github.com",
    "GIT_COMMITTER_NAME": "kaito-gitops",
    "GIT_COMMITTER_EMAIL": "kaito-gitops@users.noreply.github.com",
}
TRAILER = "Kaito-Gitops-Status: true"


class PushRejected(Exception):
    pass


@dataclass
class WriteResult:
    committed: bool
    sha: str = ""
    attempts: int = 0


class StatusWriter:
    def __init__(self, source: GitSource, branch: str, root: str, *, max_attempts: int = 8):
        """`branch`: where to commit; `root`: folder inside the branch ("" for the status branch)."""
        self.source = source
        self.branch = branch
        self.root = root.strip("/")
        self.max_attempts = max_attempts
        self._lock = threading.Lock()
        self.commits = 0

    @property
    def repo(self) -> git.Repo:
        return self.source.repo

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.source.auth.env(), **AUTHOR}

    def _git(self, *args: str, env: dict | None = None, stdin: str | None = None) -> str:
        proc = subprocess.run(
            ["git", "--git-dir", self.repo.git_dir, *args],
            env=env or self._env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0:
            return proc.stdout
        text = _clean((proc.stderr or proc.stdout).strip())
        # "cannot lock ref ... but expected" is the same lost race, caught at the moment of the update
        lost_race = ("rejected", "non-fast-forward", "fetch first", "cannot lock ref", "stale info")
        if args[0] == "push" and any(w in text for w in lost_race):
            raise PushRejected(text)
        if args[0] == "update-ref":
            raise PushRejected(text)
        raise SourceError(f"git {args[0]} failed: {text[-400:]}")

    # -- reading the current status --------------------------------------------------------
    def _remote_tip(self) -> str | None:
        """The branch's commit on the remote (fetched into our repository), or None if it does not exist yet."""
        ref = f"refs/heads/{self.branch}"
        if self.source.local:
            try:
                return self.repo.commit(ref).hexsha
            except (git.BadName, ValueError):
                return None
        out = self._git("ls-remote", "--", self.source.url, ref)
        if not out.strip():
            return None
        sha = out.split()[0]
        if self.source.has_commit(sha):
            return sha
        # the branch may move between ls-remote and fetch: use what the fetch brought
        self.source.fetch(f"+{ref}:refs/kaito-gitops/status-tip")
        return self.repo.commit("refs/kaito-gitops/status-tip").hexsha

    def read(self) -> dict[str, str]:
        """The status folder as the remote has it now."""
        return self.current_files(self._remote_tip())

    def current_files(self, tip: str | None) -> dict[str, str]:
        """The status folder at `tip`, by path relative to it (only that folder is read)."""
        if not tip:
            return {}
        tree = self.repo.commit(tip).tree
        if self.root:
            try:
                tree = tree / self.root
            except KeyError:
                return {}
        skip = len(tree.path) + 1 if tree.path else 0
        out: dict[str, str] = {}
        for item in tree.traverse():
            if item.type == "blob":
                out[item.path[skip:]] = item.data_stream.read().decode("utf-8", "replace")
        return out

    # -- writing ----------------------------------------------------------------------------
    def _build(
        self, parent: str | None, current: dict[str, str], files: dict[str, str], message: str
    ) -> str | None:
        """A commit with `files` as the status folder on top of `parent` (whose folder holds
        `current`); None when nothing changes. Only files that differ are written."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {**self._env(), "GIT_INDEX_FILE": os.path.join(tmp, "index")}
            if parent:
                self._git("read-tree", parent, env=env)
            prefix = f"{self.root}/" if self.root else ""
            lines = [f"0 {'0' * 40}\t{prefix + rel}" for rel in sorted(set(current) - set(files))]
            for rel, text in sorted(files.items()):
                if current.get(rel) == text:
                    continue  # read-tree already has it
                blob = self._git("hash-object", "-w", "--stdin", env=env, stdin=text).strip()
                lines.append(f"100644 {blob}\t{prefix + rel}")
            # --index-info works in bare repositories (--force-remove wants a work tree)
            self._git("update-index", "--index-info", env=env, stdin="\n".join(lines) + "\n")
            tree = self._git("write-tree", env=env).strip()
        if parent and self.repo.commit(parent).tree.hexsha == tree:
            return None
        args = ["commit-tree", tree, "-m", message]
        if parent:
            args[2:2] = ["-p", parent]
        return self._git(*args).strip()

    def _publish(self, sha: str, parent: str | None) -> None:
        ref = f"refs/heads/{self.branch}"
        if self.source.local:
            # compare-and-swap: refused if the branch moved since we read it
            self._git("update-ref", ref, sha, parent or "0" * 40)
            return
        self._git("push", "--porcelain", "--", self.source.url, f"{sha}:{ref}")

    def write(self, files: dict[str, str], message: str) -> WriteResult:
        """Commit `files` (replacing the status folder) unless they are already there."""
        with self._lock:
            delay = 0.2
            for attempt in range(1, self.max_attempts + 1):
                parent = self._remote_tip()
                current = self.current_files(parent)
                if parent and current == files:
                    return WriteResult(False, parent, attempt)
                sha = self._build(parent, current, files, f"{message}\n\n{TRAILER}\n")
                if sha is None:
                    return WriteResult(False, parent or "", attempt)
                try:
                    self._publish(sha, parent)
                except PushRejected as e:
                    log.info(
                        "status push refused, someone pushed first; rebuilding on their commit",
                        attempt=attempt,
                        detail=str(e)[-160:],
                    )
                    time.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, 10.0)
                    continue
                self.commits += 1
                return WriteResult(True, sha, attempt)
            raise SourceError(f"could not push status to {self.branch} after {self.max_attempts} attempts")
