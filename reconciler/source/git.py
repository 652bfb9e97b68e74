"""The git source: the watched branch's newest revision and the workspace files in it.

A remote repository is fetched into a bare cache repository, shallow (depth 1, one branch),
and only after `git ls-remote` shows the branch moved; files are read from the commit's tree,
never checked out. A local path is read in place. Credentials come from files and reach git
through the environment (never the URL, argv or logs).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import git
import structlog

from .tree import revision_files

log = structlog.get_logger("kaito_gitops.source")

GIT_TIMEOUT = 120


class SourceError(Exception):
    """Fetching the repository failed; the message is safe to log (no credentials)."""


@dataclass(frozen=True)
class GitAuth:
    token_file: str | None = None  # HTTPS: a token (GitHub PAT, installation token) in a file
    username: str = "x-access-token"
    ssh_key_file: str | None = None
    known_hosts_file: str | None = None

    def env(self) -> dict[str, str]:
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true"}
        if self.token_file:
            token = Path(self.token_file).read_text().strip()
            basic = base64.b64encode(f"{self.username}:{token}".encode()).decode()
            env.update(
                {
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
                }
            )
        if self.ssh_key_file:
            parts = ["ssh", "-i", self.ssh_key_file, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
            if self.known_hosts_file:
                parts += [
                    "-o",
                    f"UserKnownHostsFile={self.known_hosts_file}",
                    "-o",
                    "StrictHostKeyChecking=yes",
                ]
            env["GIT_SSH_COMMAND"] = " ".join(parts)
        return env


def redact_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


_SECRETISH = re.compile(r"(Authorization: \w+ )\S+|(://)[^/@\s]+@", re.IGNORECASE)


def _clean(text: str) -> str:
    return _SECRETISH.sub(lambda m: (m.group(1) or m.group(2)) + "***" + ("" if m.group(1) else "@"), text)


class _Carry(dict):
    """Blob cache view: hits come from the previous revision's cache and are carried over."""

    def __init__(self, old: dict[str, bytes], new: dict[str, bytes]):
        super().__init__()
        self.old, self.new = old, new

    def __contains__(self, sha: object) -> bool:
        return sha in self.old or sha in self.new

    def __getitem__(self, sha: str) -> bytes:
        data = self.new.get(sha)
        if data is None:
            data = self.new[sha] = self.old[sha]
        return data

    def __setitem__(self, sha: str, data: bytes) -> None:
        self.new[sha] = data


class GitSource:
    def __init__(
        self,
        repo: str,
        branch: str = "main",
        cache_dir: str | Path = ".kaito-gitops/cache",
        auth: GitAuth | None = None,
        depth: int = 1,
    ):
        self.branch = branch
        self.auth = auth or GitAuth()
        self.depth = depth
        self._lock = threading.RLock()  # the daemon, the reviewer and the status writer share the repo
        local = Path(repo).expanduser()
        is_url = bool(re.match(r"^[\w+.-]+://", repo) or re.match(r"^[\w.-]+@[\w.-]+:", repo))
        self.local = not is_url
        if self.local:
            # a mistyped path is a usage error now, not a remote that fails to fetch forever
            if not local.is_dir():
                raise SourceError(f"{repo}: no such directory (give a local repository path or a git URL)")
            self.url = str(local.resolve())
            try:
                git.Repo(self.url)
                self._repo_path = self.url
            except git.InvalidGitRepositoryError:
                raise SourceError(f"{repo} is not a git repository (run `git init` there first)") from None
        else:
            parts = urlsplit(repo)
            if parts.username or parts.password:
                raise SourceError(
                    "credentials in the repository URL are not allowed (they end up in logs and process "
                    "lists); put the token in a file and pass --git-token-file"
                )
            self.url = repo
            cache = Path(cache_dir) / hashlib.sha256(repo.encode()).hexdigest()[:16]
            cache.mkdir(parents=True, exist_ok=True)
            if not (cache / "HEAD").exists():
                git.Repo.init(cache, bare=True)
            self._repo_path = str(cache)
        self._per_thread = threading.local()
        self.display = redact_url(self.url)
        self._blobs: dict[str, bytes] = {}  # content of blobs read at earlier revisions

    @property
    def repo(self) -> git.Repo:
        """This thread's handle on the repository.

        GitPython keeps one long-lived `git cat-file --batch` per Repo and reads its answers
        without a lock: two threads on one Repo (the daemon loading a revision while the status
        writer reads its branch) can read each other's answers, or wait forever for one.
        """
        repo = getattr(self._per_thread, "repo", None)
        if repo is None:
            repo = self._per_thread.repo = git.Repo(self._repo_path)
        return repo

    # ------------------------------------------------------------------------------------
    def _git(self, *args: str) -> str:
        env = {**os.environ, **self.auth.env()}
        try:
            return self.repo.git.execute(["git", *args], env=env, kill_after_timeout=GIT_TIMEOUT)
        except git.GitCommandError as e:
            detail = _clean((e.stderr or str(e)).strip())
            raise SourceError(f"git {args[0]} {self.display} failed: {detail[-500:]}") from None

    @property
    def _tracking_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def remote_head(self) -> str:
        """The branch's newest commit on the remote, without fetching objects."""
        if self.local:
            try:
                return self.repo.commit(f"refs/heads/{self.branch}").hexsha
            except (git.BadName, ValueError):
                raise SourceError(f"{self.display} has no branch {self.branch}") from None
        out = self._git("ls-remote", "--", self.url, f"refs/heads/{self.branch}")
        line = out.strip().splitlines()[0] if out.strip() else ""
        if not line:
            raise SourceError(f"{self.display} has no branch {self.branch}")
        return line.split()[0]

    def sync(self) -> str:
        """Make the newest revision of the branch available locally; return its sha."""
        with self._lock:
            head = self.remote_head()
            if not self.local:
                try:
                    have = self.repo.commit(self._tracking_ref).hexsha
                except (git.BadName, ValueError):
                    have = ""
                if have != head:
                    # shallow only the first time: later fetches bring every new commit, so that
                    # "does the loaded revision contain this merge?" has the history to answer
                    self.fetch(f"+refs/heads/{self.branch}:{self._tracking_ref}", shallow=not have)
            return head

    def fetch(self, refspec: str, shallow: bool = True) -> None:
        args = ["fetch", "--no-tags", "--prune"]
        if self.depth and shallow:
            args += [f"--depth={self.depth}"]
        with self._lock:  # two fetches at once fight over shallow.lock, and one fails
            self._git(*args, "--", self.url, refspec)

    def fetch_commit(self, ref: str) -> str:
        """Fetch another ref (a pull request head, a base branch) and return its sha."""
        if self.local:
            return self.repo.commit(ref).hexsha
        local_ref = "refs/kaito-gitops/" + re.sub(r"[^A-Za-z0-9/_.-]", "_", ref.removeprefix("refs/"))
        self.fetch(f"+{ref}:{local_ref}")
        return self.repo.commit(local_ref).hexsha

    def has_commit(self, sha: str) -> bool:
        """Whether the commit object is really here (gitpython resolves names lazily)."""
        try:
            self.repo.git.execute(["git", "cat-file", "-e", f"{sha}^{{commit}}"])
            return True
        except git.GitCommandError:
            return False

    def changed_paths(self, old: str, new: str) -> list[str]:
        """Paths that differ between two commits (both must be in the local repository)."""
        if not (self.has_commit(old) and self.has_commit(new)):
            raise SourceError("cannot compare revisions that are not both fetched")
        return [p for p in self._git("diff", "--name-only", old, new).splitlines() if p]

    def removals(self, old: str, new: str) -> dict[str, str]:
        """Files that commits from `old` to `new` deleted -> "" (deleted) or the path they moved to."""
        if not (self.has_commit(old) and self.has_commit(new)):
            raise SourceError("cannot compare revisions that are not both fetched")
        out: dict[str, str] = {}
        for line in self._git("diff", "--name-status", "-M", "--no-color", old, new).splitlines():
            parts = line.split("\t")
            if parts[0] == "D" and len(parts) == 2:
                out[parts[1]] = ""
            elif parts[0].startswith("R") and len(parts) == 3:
                out[parts[1]] = parts[2]
        return out

    def files(
        self, rev: str, prefixes: list[str], max_bytes: int, remember: bool = True
    ) -> list[tuple[str, bytes]]:
        """The files under `prefixes` at `rev`. With `remember`, its blobs become the cache for the
        next call (the daemon's revisions); other readers (pull requests) use it without replacing it."""
        blobs: dict[str, bytes] = {}
        out = list(revision_files(self.repo, rev, prefixes, max_bytes, blobs=_Carry(self._blobs, blobs)))
        if remember:
            self._blobs = blobs  # keep only what this revision has
        return out

    def watch_paths(self) -> list[str]:
        """Where a local repository's refs live (for the file watcher)."""
        if not self.local:
            return []
        return [self.repo.git_dir]
