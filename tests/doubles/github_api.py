"""A local double of the GitHub REST API, plus webhook helpers.

It speaks the wire format the reviewer meets on api.github.com: real paths, JSON shapes that
githubkit's response models accept, `Link` pagination, rate-limit headers, ETag revalidation,
GitHub's error bodies, token and GitHub App (JWT -> installation token) authentication.
Tests seed repositories and pull requests, drive the real client against `start()`'s URL,
then inspect what was written. Nothing here patches a client.

Plain HTTP on 127.0.0.1: githubkit takes `base_url=double.start()`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
import uuid
import zlib
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HTML = "https://github.com"
PUBLIC_API = "https://api.github.com"
DOCS = "https://docs.github.com/rest"
ZERO_SHA = "0" * 40
COMMENT_MAX = 65536
STATUS_DESCRIPTION_MAX = 140
STATUSES_PER_CONTEXT_MAX = 1000
PULL_FILES_MAX = 3000
STATUS_STATES = ("error", "failure", "pending", "success")
SECONDARY_DOCS = (
    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)
PRIMARY_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
APP_PERMISSIONS = {
    "checks": "write",
    "contents": "read",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
    "statuses": "write",
}
APP_EVENTS = ["issue_comment", "pull_request", "push"]


# ---------------------------------------------------------------- small pure helpers


def fake_sha(seed: str) -> str:
    """A stable 40-hex commit id for a test label (git's SHA-1 length)."""
    return hashlib.sha1(seed.encode()).hexdigest()


def _stable_id(text: str, base: int = 100_000_000) -> int:
    # Derived from the name, so webhook payloads built without a double carry the same ids
    # as the double's REST answers for the same repository, pull request or user.
    return base + zlib.crc32(text.encode()) % 800_000_000


def _node_id(kind: str, number: int) -> str:
    # GitHub's legacy global node id: base64("<len>:<Kind><id>").
    return b64encode(f"{len(kind):03d}:{kind}{number}".encode()).decode()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def generate_rsa_key() -> tuple[str, str]:
    """A fresh RSA key pair (private PEM in GitHub's PKCS#1 download format, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


# ---------------------------------------------------------------- JSON shapes (shared by REST and webhooks)


def _user_type(login: str) -> str:
    return "Bot" if login.endswith("[bot]") else "User"


def user_json(api: str, login: str, type_: str | None = None) -> dict[str, Any]:
    """GitHub's `simple-user` object."""
    type_ = type_ or _user_type(login)
    uid = _stable_id(login, base=1000)
    url = f"{api}/users/{quote(login)}"
    html = f"{HTML}/apps/{login.removesuffix('[bot]')}" if type_ == "Bot" else f"{HTML}/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": _node_id("Bot" if type_ == "Bot" else "User", uid),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "",
        "url": url,
        "html_url": html,
        "followers_url": f"{url}/followers",
        "following_url": f"{url}/following{{/other_user}}",
        "gists_url": f"{url}/gists{{/gist_id}}",
        "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{url}/subscriptions",
        "organizations_url": f"{url}/orgs",
        "repos_url": f"{url}/repos",
        "events_url": f"{url}/events{{/privacy}}",
        "received_events_url": f"{url}/received_events",
        "type": type_,
        "user_view_type": "public",
        "site_admin": False,
    }


def repo_json(
    api: str,
    owner: str,
    name: str,
    *,
    default_branch: str = "main",
    private: bool = False,
    owner_type: str = "Organization",
    clone_url: str | None = None,
    created: float = 1_700_000_000.0,
) -> dict[str, Any]:
    """GitHub's full `repository` object (what pull requests and webhooks embed)."""
    full = f"{owner}/{name}"
    u = f"{api}/repos/{full}"
    rid = _stable_id(full)
    templates = {
        "forks_url": "/forks",
        "keys_url": "/keys{/key_id}",
        "collaborators_url": "/collaborators{/collaborator}",
        "teams_url": "/teams",
        "hooks_url": "/hooks",
        "issue_events_url": "/issues/events{/number}",
        "events_url": "/events",
        "assignees_url": "/assignees{/user}",
        "branches_url": "/branches{/branch}",
        "tags_url": "/tags",
        "blobs_url": "/git/blobs{/sha}",
        "git_tags_url": "/git/tags{/sha}",
        "git_refs_url": "/git/refs{/sha}",
        "trees_url": "/git/trees{/sha}",
        "statuses_url": "/statuses/{sha}",
        "languages_url": "/languages",
        "stargazers_url": "/stargazers",
        "contributors_url": "/contributors",
        "subscribers_url": "/subscribers",
        "subscription_url": "/subscription",
        "commits_url": "/commits{/sha}",
        "git_commits_url": "/git/commits{/sha}",
        "comments_url": "/comments{/number}",
        "issue_comment_url": "/issues/comments{/number}",
        "contents_url": "/contents/{+path}",
        "compare_url": "/compare/{base}...{head}",
        "merges_url": "/merges",
        "archive_url": "/{archive_format}{/ref}",
        "downloads_url": "/downloads",
        "issues_url": "/issues{/number}",
        "pulls_url": "/pulls{/number}",
        "milestones_url": "/milestones{/number}",
        "notifications_url": "/notifications{?since,all,participating}",
        "labels_url": "/labels{/name}",
        "releases_url": "/releases{/id}",
        "deployments_url": "/deployments",
    }
    out: dict[str, Any] = {
        "id": rid,
        "node_id": _node_id("Repository", rid),
        "name": name,
        "full_name": full,
        "private": private,
        "owner": user_json(api, owner, owner_type),
        "html_url": f"{HTML}/{full}",
        "description": None,
        "fork": False,
        "url": u,
    }
    out.update({key: u + suffix for key, suffix in templates.items()})
    out.update(
        {
            "created_at": _iso(created),
            "updated_at": _iso(created),
            "pushed_at": _iso(created),
            "git_url": f"git://github.com/{full}.git",
            "ssh_url": f"git@github.com:{full}.git",
            "clone_url": clone_url or f"{HTML}/{full}.git",
            "svn_url": f"{HTML}/{full}",
            "homepage": None,
            "size": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "language": None,
            "has_issues": True,
            "has_projects": True,
            "has_downloads": True,
            "has_wiki": True,
            "has_pages": False,
            "has_discussions": False,
            "forks_count": 0,
            "mirror_url": None,
            "archived": False,
            "disabled": False,
            "open_issues_count": 0,
            "license": None,
            "allow_forking": True,
            "is_template": False,
            "web_commit_signoff_required": False,
            "topics": [],
            "visibility": "private" if private else "public",
            "forks": 0,
            "open_issues": 0,
            "watchers": 0,
            "default_branch": default_branch,
        }
    )
    return out


@dataclass
class _Pull:
    owner: str
    name: str
    number: int
    head_sha: str
    head_ref: str
    base_ref: str
    base_sha: str
    files: list[dict[str, Any]]
    state: str
    user_login: str
    title: str
    body: str | None
    draft: bool
    created_at: float
    updated_at: float
    merged: bool = False
    merge_commit_sha: str | None = None
    closed_at: float | None = None
    merged_at: float | None = None
    merged_by: str | None = None
    head_history: list[str] = field(default_factory=list)


def _pull_json(api: str, repo: dict[str, Any], pr: _Pull, *, full: bool, comments: int = 0) -> dict[str, Any]:
    """`pull-request-simple` (lists), or the full `pull-request` (single GET, webhooks)."""
    fn = repo["full_name"]
    u = f"{api}/repos/{fn}/pulls/{pr.number}"
    issue = f"{api}/repos/{fn}/issues/{pr.number}"
    html = f"{HTML}/{fn}/pull/{pr.number}"
    pid = _stable_id(f"{fn}#{pr.number}")
    owner = repo["owner"]
    out: dict[str, Any] = {
        "url": u,
        "id": pid,
        "node_id": _node_id("PullRequest", pid),
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": issue,
        "commits_url": f"{u}/commits",
        "review_comments_url": f"{u}/comments",
        "review_comment_url": f"{api}/repos/{fn}/pulls/comments{{/number}}",
        "comments_url": f"{issue}/comments",
        "statuses_url": f"{api}/repos/{fn}/statuses/{pr.head_sha}",
        "number": pr.number,
        "state": pr.state,
        "locked": False,
        "title": pr.title,
        "user": user_json(api, pr.user_login),
        "body": pr.body,
        "labels": [],
        "milestone": None,
        "active_lock_reason": None,
        "created_at": _iso(pr.created_at),
        "updated_at": _iso(pr.updated_at),
        "closed_at": _iso(pr.closed_at) if pr.closed_at else None,
        "merged_at": _iso(pr.merged_at) if pr.merged_at else None,
        "merge_commit_sha": pr.merge_commit_sha,
        "assignee": None,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": {
            "label": f"{owner['login']}:{pr.head_ref}",
            "ref": pr.head_ref,
            "sha": pr.head_sha,
            "user": owner,
            "repo": repo,
        },
        "base": {
            "label": f"{owner['login']}:{pr.base_ref}",
            "ref": pr.base_ref,
            "sha": pr.base_sha,
            "user": owner,
            "repo": repo,
        },
        "_links": {
            "self": {"href": u},
            "html": {"href": html},
            "issue": {"href": issue},
            "comments": {"href": f"{issue}/comments"},
            "review_comments": {"href": f"{u}/comments"},
            "review_comment": {"href": f"{api}/repos/{fn}/pulls/comments{{/number}}"},
            "commits": {"href": f"{u}/commits"},
            "statuses": {"href": f"{api}/repos/{fn}/statuses/{pr.head_sha}"},
        },
        "author_association": "CONTRIBUTOR",
        "auto_merge": None,
        "draft": pr.draft,
    }
    if full:
        files = pr.files[:PULL_FILES_MAX]
        out.update(
            {
                "merged": pr.merged,
                "mergeable": True if pr.state == "open" else None,
                "rebaseable": True if pr.state == "open" else None,
                "mergeable_state": "clean" if pr.state == "open" else "unknown",
                "merged_by": user_json(api, pr.merged_by) if pr.merged_by else None,
                "comments": comments,
                "review_comments": 0,
                "maintainer_can_modify": False,
                "commits": max(1, len(pr.head_history)),
                "additions": sum(f["additions"] for f in files),
                "deletions": sum(f["deletions"] for f in files),
                "changed_files": len(files),
            }
        )
    return out


def _file_json(api: str, full_name: str, head_sha: str, f: dict[str, Any]) -> dict[str, Any]:
    """`diff-entry`; the seeded dict may carry `patch` and `previous_filename`."""
    name = f["filename"]
    out = {
        "sha": f.get("sha") or fake_sha(f"{head_sha}:{name}"),
        "filename": name,
        "status": f.get("status", "modified"),
        "additions": f["additions"],
        "deletions": f["deletions"],
        "changes": f.get("changes", f["additions"] + f["deletions"]),
        "blob_url": f"{HTML}/{full_name}/blob/{head_sha}/{quote(name)}",
        "raw_url": f"{HTML}/{full_name}/raw/{head_sha}/{quote(name)}",
        "contents_url": f"{api}/repos/{full_name}/contents/{quote(name)}?ref={head_sha}",
    }
    for key in ("patch", "previous_filename"):
        if key in f:
            out[key] = f[key]
    return out


# ---------------------------------------------------------------- webhooks (pure functions)


def sign(secret: bytes | str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends: HMAC-SHA256 over the raw body."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def payload_body(payload: dict[str, Any]) -> bytes:
    """Serialise a payload the way deliveries arrive (compact JSON, UTF-8)."""
    return json.dumps(payload, separators=(",", ":")).encode()


def delivery_headers(
    event: str,
    body: bytes,
    secret: bytes | str | None,
    delivery_id: str | None = None,
    *,
    hook_id: int = 123456789,
    target_id: int | None = None,
    target_type: str = "repository",
) -> dict[str, str]:
    """Headers of one webhook delivery. With no secret configured GitHub sends no signatures."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/4f0e3b2",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": str(hook_id),
        "X-GitHub-Hook-Installation-Target-ID": str(target_id or hook_id),
        "X-GitHub-Hook-Installation-Target-Type": target_type,
    }
    if secret is not None:
        key = secret.encode() if isinstance(secret, str) else secret
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest()
        headers["X-Hub-Signature-256"] = sign(key, body)
    return headers


def deliver(
    url: str,
    event: str,
    payload: dict[str, Any],
    secret: bytes | str | None,
    delivery_id: str | None = None,
    timeout: float = 10.0,
) -> httpx.Response:
    """POST one delivery to a receiver, as GitHub's hookshot would."""
    body = payload_body(payload)
    return httpx.post(
        url, content=body, headers=delivery_headers(event, body, secret, delivery_id), timeout=timeout
    )


def _installation(installation_id: int | None) -> dict[str, Any]:
    if installation_id is None:
        return {}
    return {"installation": {"id": installation_id, "node_id": _node_id("Installation", installation_id)}}


def push_payload(
    owner: str,
    name: str,
    ref: str,
    before: str,
    after: str,
    commits: list[dict[str, Any]],
    clone_url: str | None = None,
    *,
    pusher: str = "octocat",
    forced: bool = False,
    default_branch: str = "main",
    installation_id: int | None = None,
) -> dict[str, Any]:
    """A `push` event. Each commit: {id, message, added, removed, modified} (+ optional author)."""
    full = f"{owner}/{name}"
    now = time.time()
    repository = repo_json(PUBLIC_API, owner, name, default_branch=default_branch, clone_url=clone_url)
    # The push event keeps GitHub's old quirks: epoch-second timestamps and `master_branch`.
    repository.update(
        {"created_at": 1_700_000_000, "pushed_at": int(now), "stargazers": 0, "master_branch": default_branch}
    )
    repository["owner"].update({"name": owner, "email": None})
    entries = []
    for c in commits:
        author = c.get("author") or {
            "name": pusher,
            "email": f"{pusher}@users.noreply.github.com",
            "username": pusher,
        }
        entries.append(
            {
                "id": c["id"],
                "tree_id": c.get("tree_id") or fake_sha("tree:" + c["id"]),
                "distinct": c.get("distinct", True),
                "message": c.get("message", ""),
                "timestamp": c.get("timestamp") or datetime.fromtimestamp(now, UTC).isoformat(),
                "url": f"{HTML}/{full}/commit/{c['id']}",
                "author": author,
                "committer": c.get("committer") or author,
                "added": list(c.get("added", [])),
                "removed": list(c.get("removed", [])),
                "modified": list(c.get("modified", [])),
            }
        )
    created, deleted = before == ZERO_SHA, after == ZERO_SHA
    compare = f"{HTML}/{full}/compare/{before[:12]}...{after[:12]}"
    if created:
        compare = f"{HTML}/{full}/commit/{after[:12]}"
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "repository": repository,
        "pusher": {"name": pusher, "email": f"{pusher}@users.noreply.github.com"},
        "sender": user_json(PUBLIC_API, pusher),
        **_installation(installation_id),
        "created": created,
        "deleted": deleted,
        "forced": forced,
        "base_ref": None,
        "compare": compare,
        "commits": entries,
        "head_commit": entries[-1] if entries else None,
    }


def pull_request_payload(
    action: str,
    owner: str,
    name: str,
    number: int,
    head_sha: str,
    head_ref: str,
    base_ref: str = "main",
    base_sha: str | None = None,
    merged: bool = False,
    merge_commit_sha: str | None = None,
    user_login: str = "octocat",
    *,
    before: str | None = None,
    sender_login: str | None = None,
    title: str | None = None,
    draft: bool = False,
    installation_id: int | None = None,
) -> dict[str, Any]:
    """A `pull_request` event (opened, synchronize, reopened, closed[+merged], ...)."""
    now = time.time()
    closed = action == "closed"
    pr = _Pull(
        owner=owner,
        name=name,
        number=number,
        head_sha=head_sha,
        head_ref=head_ref,
        base_ref=base_ref,
        base_sha=base_sha or fake_sha(f"{owner}/{name}:{base_ref}"),
        files=[],
        state="closed" if closed else "open",
        user_login=user_login,
        title=title or f"Update workspaces ({head_ref})",
        body=None,
        draft=draft,
        created_at=now,
        updated_at=now,
        merged=merged,
        merge_commit_sha=merge_commit_sha,
        closed_at=now if closed else None,
        merged_at=now if merged else None,
        merged_by=(sender_login or user_login) if merged else None,
        head_history=[head_sha],
    )
    out: dict[str, Any] = {"action": action, "number": number}
    if action == "synchronize":
        out["before"] = before or fake_sha(f"before:{head_sha}")
        out["after"] = head_sha
    out["pull_request"] = _pull_json(PUBLIC_API, repo_json(PUBLIC_API, owner, name), pr, full=True)
    out["repository"] = repo_json(PUBLIC_API, owner, name)
    out["sender"] = user_json(PUBLIC_API, sender_login or user_login)
    out.update(_installation(installation_id))
    return out


# ---------------------------------------------------------------- the double's state


@dataclass
class GitHubApp:
    """A GitHub App registered with the double. `private_key_pem` is None when the test supplied
    only the public half."""

    app_id: int
    slug: str
    installation_id: int
    client_id: str
    owner: str
    public_key_pem: str
    private_key_pem: str | None

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # canonical /repos/{owner}/{name}/... form, also for /repositories/{id}/... links
    query: dict[str, list[str]]
    login: str | None  # user login, "<slug>[bot]", "app:<slug>" for App JWTs, None if unauthenticated
    body: Any  # parsed JSON, the raw text if it did not parse, None without a body
    status: int


@dataclass
class _Repo:
    owner: str
    name: str
    default_branch: str
    private: bool
    owner_type: str
    clone_url: str | None
    branches: dict[str, str] = field(default_factory=dict)
    commits: set[str] = field(default_factory=set)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def id(self) -> int:
        return _stable_id(self.full_name)


@dataclass
class _Comment:
    id: int
    repo: str  # lower-cased full name
    number: int
    body: str
    login: str
    user_type: str
    app: GitHubApp | None
    created_at: float
    updated_at: float


@dataclass
class _Status:
    id: int
    repo: str
    sha: str
    state: str
    target_url: str | None
    description: str | None
    context: str
    login: str
    user_type: str
    created_at: float


@dataclass
class _Identity:
    login: str
    type: str  # "User" | "Bot" (for JWTs: the app itself)
    kind: str  # "token" | "installation" | "app"
    app: GitHubApp | None = None
    expires_at: float | None = None

    @property
    def budget_key(self) -> str:
        # An App's JWT calls have a budget apart from its installation's.
        return f"app:{self.app.slug}" if self.kind == "app" and self.app else self.login


@dataclass
class _Budget:
    limit: int
    remaining: int
    reset_at: int


@dataclass
class _Fault:
    kind: str  # "fail" | "secondary"
    status: int
    count: int
    retry_after: int
    match: str | None


class _Fail(Exception):
    """An error answer: status plus GitHub's JSON body."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _error(status: int, message: str, doc: str, **extra: Any) -> _Fail:
    # Since 2024 GitHub echoes the status as a string in error bodies.
    return _Fail(status, {"message": message, "documentation_url": doc, "status": str(status), **extra})


def _validation(doc: str, *errors: dict[str, Any]) -> _Fail:
    return _error(422, "Validation Failed", doc, errors=list(errors))


@dataclass
class _Req:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: Any
    identity: _Identity | None
    doc: str
    link_path: str

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class _Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


_Handler = Callable[..., _Answer]

_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"


class GitHubDouble:
    """An in-process HTTP server answering the GitHub REST calls the reviewer makes."""

    def __init__(self, default_rate_limit: int = 5000) -> None:
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._repos: dict[str, _Repo] = {}
        self._pulls: dict[tuple[str, int], _Pull] = {}
        self._comments: dict[int, _Comment] = {}
        self._statuses: list[_Status] = []
        self._tokens: dict[str, _Identity] = {}
        self._user_types: dict[str, str] = {}
        self._apps: dict[int, GitHubApp] = {}
        self._budgets: dict[str, _Budget] = {}
        self._default_limit = default_rate_limit
        self._default_remaining: int | None = None  # set by set_rate_limit for identities not seen yet
        self._default_reset_at: int | None = None
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._next_comment_id = 1_000_000_001
        self._next_status_id = 30_000_000_001
        self._routes: list[tuple[str, re.Pattern[str], _Handler, str, str]] = []
        self._add_routes()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Listen on 127.0.0.1:<random port>; returns the base URL for githubkit."""
        if self._server is not None:
            return self.base_url
        self._server = _Server(("127.0.0.1", 0), _RequestHandler)
        self._server.double = self
        # A short poll interval keeps stop() fast; serve_forever checks for shutdown between polls.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> GitHubDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("GitHubDouble is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def api_url(self) -> str:
        """The base URL without the trailing slash, as it appears inside JSON `url` fields."""
        return self.base_url.rstrip("/")

    # ------------------------------------------------------------ seeding

    def add_token(self, token: str, login: str, type: str = "User") -> None:
        """Accept `token` (as `token <t>` or `Bearer <t>`) as acting for `login`."""
        if type not in ("User", "Bot"):
            raise ValueError("type must be 'User' or 'Bot'")
        with self._lock:
            self._tokens[token] = _Identity(login=login, type=type, kind="token")
            self._user_types[login] = type

    def add_app(
        self,
        app_id: int,
        slug: str,
        public_key_pem: str | bytes | None = None,
        *,
        installation_id: int | None = None,
        owner: str = "kaito-org",
        client_id: str | None = None,
    ) -> GitHubApp:
        """Register a GitHub App with one installation covering every repository.

        Without `public_key_pem` a key pair is generated and the private half returned on the app.
        """
        private = None
        if public_key_pem is None:
            private, public = generate_rsa_key()
        else:
            public = public_key_pem.decode() if isinstance(public_key_pem, bytes) else public_key_pem
        app = GitHubApp(
            app_id=app_id,
            slug=slug,
            installation_id=installation_id or 50_000_000 + app_id,
            client_id=client_id or f"Iv23li{fake_sha(slug)[:14]}",
            owner=owner,
            public_key_pem=public,
            private_key_pem=private,
        )
        with self._lock:
            self._apps[app_id] = app
            self._user_types[app.bot_login] = "Bot"
        return app

    def add_repo(
        self,
        owner: str,
        name: str,
        *,
        default_branch: str = "main",
        private: bool = False,
        owner_type: str = "Organization",
        clone_url: str | None = None,
    ) -> None:
        with self._lock:
            repo = _Repo(owner, name, default_branch, private, owner_type, clone_url)
            tip = fake_sha(f"{owner}/{name}:{default_branch}")
            repo.branches[default_branch] = tip
            repo.commits.add(tip)
            self._repos[repo.full_name.lower()] = repo

    def add_commit(self, owner: str, name: str, sha: str, branch: str | None = None) -> None:
        """Make `sha` known (statuses may be posted on it); optionally move `branch` to it."""
        with self._lock:
            repo = self._seeded_repo(owner, name)
            repo.commits.add(sha)
            if branch:
                repo.branches[branch] = sha

    def add_pull(
        self,
        owner: str,
        name: str,
        number: int,
        head_sha: str,
        base_ref: str = "main",
        head_ref: str | None = None,
        base_sha: str | None = None,
        files: list[dict[str, Any]] | None = None,
        state: str = "open",
        user_login: str = "octocat",
        *,
        title: str | None = None,
        body: str | None = None,
        draft: bool = False,
    ) -> None:
        """Seed a pull request. Files: {filename, status, additions, deletions, ...,
        previous_filename?, patch?}; missing counts default to 0."""
        with self._lock:
            repo = self._seeded_repo(owner, name)
            key = (repo.full_name.lower(), number)
            if key in self._pulls:
                raise ValueError(f"pull request {owner}/{name}#{number} already exists")
            head_ref = head_ref or f"feature-{number}"
            base_sha = base_sha or repo.branches.get(base_ref) or fake_sha(f"{owner}/{name}:{base_ref}")
            now = time.time()
            pr = _Pull(
                owner=repo.owner,
                name=repo.name,
                number=number,
                head_sha=head_sha,
                head_ref=head_ref,
                base_ref=base_ref,
                base_sha=base_sha,
                files=self._normalise_files(files or []),
                state=state,
                user_login=user_login,
                title=title or f"Update workspaces ({head_ref})",
                body=body,
                draft=draft,
                created_at=now,
                updated_at=now,
                closed_at=None if state == "open" else now,
                head_history=[head_sha],
            )
            self._pulls[key] = pr
            repo.commits.update({head_sha, base_sha})
            repo.branches.setdefault(base_ref, base_sha)
            repo.branches[head_ref] = head_sha

    def set_pull_head(
        self,
        owner: str,
        name: str,
        number: int,
        head_sha: str,
        files: list[dict[str, Any]] | None = None,
    ) -> None:
        """A new push to the pull request's branch (the `synchronize` case)."""
        with self._lock:
            pr = self._seeded_pull(owner, name, number)
            pr.head_sha = head_sha
            pr.head_history.append(head_sha)
            pr.updated_at = time.time()
            if files is not None:
                pr.files = self._normalise_files(files)
            repo = self._seeded_repo(owner, name)
            repo.commits.add(head_sha)
            repo.branches[pr.head_ref] = head_sha

    def close_pull(
        self,
        owner: str,
        name: str,
        number: int,
        merged: bool = True,
        merge_commit_sha: str | None = None,
        merged_by: str = "octocat",
    ) -> None:
        """Close (and by default merge) a pull request; a merge moves the base branch."""
        with self._lock:
            pr = self._seeded_pull(owner, name, number)
            now = time.time()
            pr.state, pr.closed_at, pr.updated_at = "closed", now, now
            if merged:
                pr.merged, pr.merged_at, pr.merged_by = True, now, merged_by
                pr.merge_commit_sha = merge_commit_sha or fake_sha(f"merge:{owner}/{name}#{number}")
                repo = self._seeded_repo(owner, name)
                repo.commits.add(pr.merge_commit_sha)
                repo.branches[pr.base_ref] = pr.merge_commit_sha

    def add_comment(self, owner: str, name: str, number: int, body: str, user_login: str = "octocat") -> int:
        """Seed an existing comment (someone else's, or a bot comment from an earlier run)."""
        with self._lock:
            pr = self._seeded_pull(owner, name, number)
            user_type = self._user_types.get(user_login) or _user_type(user_login)
            app = next((a for a in self._apps.values() if a.bot_login == user_login), None)
            return self._store_comment(
                f"{pr.owner}/{pr.name}".lower(), number, body, user_login, user_type, app
            )

    # ------------------------------------------------------------ behaviour knobs

    def set_rate_limit(
        self,
        remaining: int,
        reset_in_seconds: int = 3600,
        *,
        limit: int | None = None,
        login: str | None = None,
    ) -> None:
        """Set the core budget of `login` (every identity, present and future, when None)."""
        with self._lock:
            reset_at = math.ceil(time.time() + reset_in_seconds)
            if login is None:
                if limit is not None:
                    self._default_limit = limit
                self._default_remaining, self._default_reset_at = remaining, reset_at
                targets = list(self._budgets.values())
            else:
                targets = [self._budget(login)]
            for b in targets:
                b.limit = limit if limit is not None else b.limit
                b.remaining, b.reset_at = remaining, reset_at

    def secondary_limit_next(
        self, count: int, retry_after: int = 1, *, status: int = 403, match: str | None = None
    ) -> None:
        """Answer the next `count` requests (matching regex `match` on "METHOD /path") with a
        secondary rate limit: 403 (or 429) and `Retry-After`."""
        with self._lock:
            self._faults.append(_Fault("secondary", status, count, retry_after, match))

    def fail_next(self, count: int, status: int = 502, *, match: str | None = None) -> None:
        """Answer the next `count` requests (matching `match`) with a server error."""
        with self._lock:
            self._faults.append(_Fault("fail", status, count, 0, match))

    # ------------------------------------------------------------ inspection

    def comments(self, owner: str, name: str, number: int) -> list[dict[str, Any]]:
        """The pull request's comments as the API shows them, oldest first."""
        with self._lock:
            key = f"{owner}/{name}".lower()
            return [
                self._comment_json(c) for c in self._comments.values() if (c.repo, c.number) == (key, number)
            ]

    def statuses(self, owner: str, name: str, sha: str) -> list[dict[str, Any]]:
        """Statuses posted on `sha`, oldest first (the API lists newest first)."""
        with self._lock:
            repo = self._seeded_repo(owner, name)
            return [
                self._status_json(repo, s)
                for s in self._statuses
                if s.repo == repo.full_name.lower() and s.sha == sha
            ]

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request answered so far, in order."""
        with self._lock:
            return list(self._requests)

    def write_count(self, path_prefix: str = "/") -> int:
        """POST/PATCH/PUT/DELETE requests answered 2xx (installation-token minting included unless
        `path_prefix` excludes it, e.g. "/repos/")."""
        with self._lock:
            return sum(
                1
                for r in self._requests
                if r.method in ("POST", "PATCH", "PUT", "DELETE")
                and 200 <= r.status < 300
                and r.path.startswith(path_prefix)
            )

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ------------------------------------------------------------ request handling

    def _add_routes(self) -> None:
        comments = _REPO + r"/issues/(?P<number>\d+)/comments"
        comment = _REPO + r"/issues/comments/(?P<comment_id>\d+)"
        pull = _REPO + r"/pulls/(?P<number>\d+)"
        # (method, path regex, handler, documentation page#anchor, who may call)
        table: list[tuple[str, str, _Handler, str, str]] = [
            ("GET", "/user", self._get_user, "users/users#get-the-authenticated-user", "token"),
            ("GET", "/rate_limit", self._get_rate_limit, "rate-limit/rate-limit#get-rate-limit-status-for-the-authenticated-user", "any"),
            ("GET", "/app", self._get_app, "apps/apps#get-the-authenticated-app", "app"),
            ("POST", r"/app/installations/(?P<installation_id>\d+)/access_tokens", self._create_installation_token, "apps/apps#create-an-installation-access-token-for-an-app", "app"),
            ("GET", _REPO + "/installation", self._get_repo_installation, "apps/apps#get-a-repository-installation-for-the-authenticated-app", "app"),
            ("GET", comments, self._list_comments, "issues/comments#list-issue-comments", "token"),
            ("POST", comments, self._create_comment, "issues/comments#create-an-issue-comment", "token"),
            ("GET", comment, self._get_comment, "issues/comments#get-an-issue-comment", "token"),
            ("PATCH", comment, self._update_comment, "issues/comments#update-an-issue-comment", "token"),
            ("DELETE", comment, self._delete_comment, "issues/comments#delete-an-issue-comment", "token"),
            ("POST", _REPO + r"/statuses/(?P<sha>[^/]+)", self._create_status, "commits/statuses#create-a-commit-status", "token"),
            ("GET", _REPO + r"/commits/(?P<sha>[^/]+)/pulls", self._commit_pulls, "commits/commits#list-pull-requests-associated-with-a-commit", "token"),
            ("GET", _REPO + r"/commits/(?P<ref>.+)/statuses", self._list_statuses, "commits/statuses#list-commit-statuses-for-a-reference", "token"),
            ("GET", _REPO + r"/commits/(?P<ref>.+)/status", self._combined_status, "commits/statuses#get-the-combined-status-for-a-specific-reference", "token"),
            ("GET", _REPO + "/pulls", self._list_pulls, "pulls/pulls#list-pull-requests", "token"),
            ("GET", pull, self._get_pull, "pulls/pulls#get-a-pull-request", "token"),
            ("GET", pull + "/files", self._list_files, "pulls/pulls#list-pull-requests-files", "token"),
        ]  # fmt: skip
        self._routes = [(m, re.compile(p), h, doc, who) for m, p, h, doc, who in table]

    def _handle(
        self, method: str, target: str, headers: Any, raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(target)
        query = parse_qs(split.query, keep_blank_values=True)
        with self._lock:
            path = self._canonical_path(split.path)
            identity: _Identity | None = None
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
            count_it = True
            try:
                identity = self._authenticate(headers.get("Authorization"))
                route = self._route(method, path)
                if route is not None and route[0] is self._get_rate_limit:
                    count_it = False  # GitHub does not charge /rate_limit against the budget
                budget = self._budget(identity.budget_key)
                if count_it and budget.remaining <= 0:
                    raise self._primary_limit(identity)
                self._inject_fault(method, path, identity)
                if route is None:
                    raise _error(404, "Not Found", DOCS)
                handler, params, doc, who = route
                self._authorize(identity, who)
                if raw and not isinstance(body, dict | list):
                    raise _error(400, "Problems parsing JSON", f"{DOCS}/{doc}")
                req = _Req(
                    method, path, query, headers, body, identity, f"{DOCS}/{doc}", self._link_path(path)
                )
                answer = handler(req, **params)
            except _Fail as fail:
                answer = _Answer(fail.status, fail.body, fail.headers)
            payload = b"" if answer.body is None else json.dumps(answer.body).encode()
            out = {"X-GitHub-Request-Id": f"{secrets.token_hex(4).upper()}:{secrets.token_hex(6).upper()}"}
            out["X-GitHub-Api-Version-Selected"] = headers.get("X-GitHub-Api-Version") or "2022-11-28"
            out.update(answer.headers)
            if method == "GET" and answer.status == 200:
                # Weak ETag over the exact body: a 304 can never hand out stale data, and like
                # GitHub a 304 does not count against the rate limit.
                etag = f'W/"{hashlib.sha256(payload).hexdigest()}"'
                out.update({"ETag": etag, "Cache-Control": "private, max-age=60, s-maxage=60"})
                out["Vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
                if self._etag_matches(headers.get("If-None-Match"), etag):
                    answer, payload, count_it = _Answer(304), b"", False
            out.update(self._rate_headers(identity, count_it and answer.status != 401))
            if payload:
                out["Content-Type"] = "application/json; charset=utf-8"
                out["X-GitHub-Media-Type"] = "github.v3; format=json"
            self._requests.append(
                RecordedRequest(method, path, query, self._login_of(identity), body, answer.status)
            )
            return answer.status, out, payload

    # -- plumbing

    def _canonical_path(self, path: str) -> str:
        # Link headers name repositories by id; fold that form back to /repos/{owner}/{name}.
        m = re.fullmatch(r"/repositories/(\d+)(/.*)?", path)
        if m:
            for repo in self._repos.values():
                if repo.id == int(m.group(1)):
                    return f"/repos/{repo.full_name}{m.group(2) or ''}"
        return path.rstrip("/") or "/"

    def _link_path(self, path: str) -> str:
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        if m and (repo := self._repos.get(f"{m.group(1)}/{m.group(2)}".lower())):
            return f"/repositories/{repo.id}{m.group(3) or ''}"
        return path

    def _route(self, method: str, path: str) -> tuple[_Handler, dict[str, str], str, str] | None:
        for verb, pattern, handler, doc, who in self._routes:
            m = pattern.fullmatch(path)
            if m and verb == method:
                return handler, {k: unquote(v) for k, v in m.groupdict().items()}, doc, who
        return None

    @staticmethod
    def _etag_matches(header: str | None, etag: str) -> bool:
        if not header:
            return False
        wanted = {t.strip().removeprefix("W/") for t in header.split(",")}
        return etag.removeprefix("W/") in wanted or "*" in wanted

    @staticmethod
    def _login_of(identity: _Identity | None) -> str | None:
        if identity is None:
            return None
        return f"app:{identity.app.slug}" if identity.kind == "app" and identity.app else identity.login

    def _authenticate(self, header: str | None) -> _Identity:
        if not header:
            raise _error(401, "Requires authentication", DOCS)
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() not in ("token", "bearer") or not credential:
            raise _error(401, "Bad credentials", DOCS)
        identity = self._tokens.get(credential)
        if identity is not None:
            if identity.expires_at is not None and identity.expires_at <= time.time():
                raise _error(401, "Bad credentials", DOCS)
            return identity
        if scheme.lower() == "bearer" and credential.count(".") == 2:
            return self._verify_jwt(credential)
        raise _error(401, "Bad credentials", DOCS)

    def _verify_jwt(self, token: str) -> _Identity:
        undecodable = _error(401, "A JSON web token could not be decoded", DOCS)
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise undecodable from None
        iss = str(claims.get("iss", ""))
        app = next((a for a in self._apps.values() if iss in (str(a.app_id), a.client_id)), None)
        if app is None or header.get("alg") != "RS256":
            raise undecodable
        try:
            jwt.decode(
                token, app.public_key_pem, algorithms=["RS256"], options={"require": ["iat", "exp", "iss"]}
            )
        except jwt.ExpiredSignatureError:
            raise _error(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the future time "
                "at which the assertion expires",
                DOCS,
            ) from None
        except jwt.PyJWTError:
            raise undecodable from None
        now = time.time()
        # GitHub refuses JWTs that live longer than 10 minutes or claim to come from the future
        # (it allows a minute of clock drift for iat).
        if claims["exp"] - now > 600 + 60:
            raise _error(401, "'Expiration time' claim ('exp') is too far in the future", DOCS)
        if claims["iat"] > now + 60:
            raise _error(
                401,
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
                DOCS,
            )
        return _Identity(login=app.bot_login, type="Bot", kind="app", app=app)

    def _authorize(self, identity: _Identity, who: str) -> None:
        if who == "any":
            return
        if who == "app" and identity.kind != "app":
            raise _error(401, "A JSON web token could not be decoded", DOCS)
        if who == "token" and identity.kind == "app":
            # An App JWT only opens /app endpoints; repository work needs an installation token.
            raise _error(403, "Resource not accessible by integration", DOCS)

    def _budget(self, key: str) -> _Budget:
        now = time.time()
        b = self._budgets.get(key)
        if b is None:
            limit = 60 if key == "" else self._default_limit
            remaining = self._default_remaining if self._default_remaining is not None else limit
            reset_at = self._default_reset_at or math.ceil(now + 3600)
            b = self._budgets[key] = _Budget(limit, remaining, reset_at)
        if now >= b.reset_at:  # the window rolled over: a fresh budget, as on GitHub
            b.remaining, b.reset_at = b.limit, math.ceil(now + 3600)
        return b

    def _rate_headers(self, identity: _Identity | None, charge: bool) -> dict[str, str]:
        b = self._budget(identity.budget_key if identity else "")
        if charge and b.remaining > 0:
            b.remaining -= 1
        return {
            "x-ratelimit-limit": str(b.limit),
            "x-ratelimit-remaining": str(b.remaining),
            "x-ratelimit-reset": str(b.reset_at),
            "x-ratelimit-used": str(b.limit - b.remaining),
            "x-ratelimit-resource": "core",
        }

    def _primary_limit(self, identity: _Identity) -> _Fail:
        if identity.kind == "installation" and identity.app:
            who = f"installation ID {identity.app.installation_id}"
        else:
            who = f"user ID {_stable_id(identity.login, base=1000)}"
        return _error(
            403,
            f"API rate limit exceeded for {who}. If you reach out to GitHub Support for help, please "
            f"include the request ID {secrets.token_hex(4).upper()} and timestamp {_iso(time.time())}.",
            PRIMARY_DOCS,
        )

    def _inject_fault(self, method: str, path: str, identity: _Identity) -> None:
        for fault in self._faults:
            if fault.count <= 0 or (fault.match and not re.search(fault.match, f"{method} {path}")):
                continue
            fault.count -= 1
            self._faults = [f for f in self._faults if f.count > 0]
            if fault.kind == "secondary":
                fail = _error(
                    fault.status,
                    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
                    "again. If you reach out to GitHub Support for help, please include the request ID "
                    f"{secrets.token_hex(4).upper()}.",
                    SECONDARY_DOCS,
                )
                fail.headers["Retry-After"] = str(fault.retry_after)
                raise fail
            raise _Fail(fault.status, {"message": HTTPStatus(fault.status).phrase})

    def _seeded_repo(self, owner: str, name: str) -> _Repo:
        repo = self._repos.get(f"{owner}/{name}".lower())
        if repo is None:
            raise KeyError(f"add_repo({owner!r}, {name!r}) first")
        return repo

    def _seeded_pull(self, owner: str, name: str, number: int) -> _Pull:
        pr = self._pulls.get((f"{owner}/{name}".lower(), number))
        if pr is None:
            raise KeyError(f"add_pull({owner!r}, {name!r}, {number}) first")
        return pr

    @staticmethod
    def _normalise_files(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for f in files:
            f = dict(f)
            f.setdefault("status", "modified")
            f.setdefault("additions", 0)
            f.setdefault("deletions", 0)
            out.append(f)
        return out

    def _repo(self, req: _Req, owner: str, repo: str) -> _Repo:
        found = self._repos.get(f"{owner}/{repo}".lower())
        if found is None:
            raise _error(404, "Not Found", req.doc)
        return found

    def _pull(self, req: _Req, repo: _Repo, number: str | int) -> _Pull:
        pr = self._pulls.get((repo.full_name.lower(), int(number)))
        if pr is None:
            raise _error(404, "Not Found", req.doc)
        return pr

    def _repo_json(self, repo: _Repo) -> dict[str, Any]:
        return repo_json(
            self.api_url,
            repo.owner,
            repo.name,
            default_branch=repo.default_branch,
            private=repo.private,
            owner_type=repo.owner_type,
            clone_url=repo.clone_url,
        )

    def _user_json(self, login: str, type_: str | None = None) -> dict[str, Any]:
        return user_json(self.api_url, login, type_ or self._user_types.get(login))

    def _paginate(self, req: _Req, items: list[Any]) -> tuple[list[Any], dict[str, str]]:
        """Slice one page and build GitHub's Link header (absolute URLs, other params kept)."""

        def number(name: str, default: int) -> int:
            try:
                return int(req.arg(name) or default)
            except ValueError:
                return default

        per_page = min(max(number("per_page", 30), 1), 100)
        page = max(number("page", 1), 1)
        last = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        kept = [(k, v) for k, values in req.query.items() if k != "page" for v in values]

        def url(p: int) -> str:
            return f"{self.api_url}{req.link_path}?{urlencode([*kept, ('page', str(p))])}"

        rels = []
        if page > 1:
            rels.append(f'<{url(min(page - 1, last))}>; rel="prev"')
        if page < last:
            rels.append(f'<{url(page + 1)}>; rel="next"')
            rels.append(f'<{url(last)}>; rel="last"')
        if page > 1:
            rels.append(f'<{url(1)}>; rel="first"')
        return chunk, ({"Link": ", ".join(rels)} if rels else {})

    # ------------------------------------------------------------ users, apps

    def _get_user(self, req: _Req) -> _Answer:
        ident = req.identity
        assert ident is not None
        if ident.type == "Bot":
            raise _error(403, "Resource not accessible by integration", req.doc)
        user = self._user_json(ident.login, "User")
        created = _iso(1_600_000_000)
        user.update(
            {
                "name": ident.login,
                "company": None,
                "blog": "",
                "location": None,
                "email": None,
                "hireable": None,
                "bio": None,
                "twitter_username": None,
                "notification_email": None,
                "public_repos": 0,
                "public_gists": 0,
                "followers": 0,
                "following": 0,
                "created_at": created,
                "updated_at": created,
                "private_gists": 0,
                "total_private_repos": 0,
                "owned_private_repos": 0,
                "disk_usage": 0,
                "collaborators": 0,
                "two_factor_authentication": True,
            }
        )
        return _Answer(200, user)

    def _get_rate_limit(self, req: _Req) -> _Answer:
        b = self._budget(req.identity.budget_key if req.identity else "")
        core = {
            "limit": b.limit,
            "remaining": b.remaining,
            "reset": b.reset_at,
            "used": b.limit - b.remaining,
            "resource": "core",
        }
        search = {"limit": 30, "remaining": 30, "reset": b.reset_at, "used": 0, "resource": "search"}
        body: dict[str, Any] = {"resources": {"core": core, "search": search}}
        if req.headers.get("X-GitHub-Api-Version", "2022-11-28") < "2026-03-10":
            body["rate"] = core  # API version 2026-03-10 dropped this deprecated copy of resources.core
        return _Answer(200, body)

    def _app_json(self, app: GitHubApp) -> dict[str, Any]:
        created = _iso(1_650_000_000)
        return {
            "id": app.app_id,
            "slug": app.slug,
            "client_id": app.client_id,
            "node_id": _node_id("Integration", app.app_id),
            "owner": self._user_json(app.owner, "Organization"),
            "name": app.slug,
            "description": "",
            "external_url": f"https://{app.slug}.example.invalid",
            "html_url": f"{HTML}/apps/{app.slug}",
            "created_at": created,
            "updated_at": created,
            "permissions": dict(APP_PERMISSIONS),
            "events": list(APP_EVENTS),
            "installations_count": 1,
        }

    def _get_app(self, req: _Req) -> _Answer:
        assert req.identity is not None and req.identity.app is not None
        return _Answer(200, self._app_json(req.identity.app))

    def _create_installation_token(self, req: _Req, installation_id: str) -> _Answer:
        app = req.identity.app if req.identity else None
        if app is None or app.installation_id != int(installation_id):
            raise _error(404, "Not Found", req.doc)
        token = "ghs_" + secrets.token_hex(18)
        expires = time.time() + 3600
        self._tokens[token] = _Identity(
            login=app.bot_login, type="Bot", kind="installation", app=app, expires_at=expires
        )
        return _Answer(
            201,
            {
                "token": token,
                "expires_at": _iso(expires),
                "permissions": dict(APP_PERMISSIONS),
                "repository_selection": "all",
            },
        )

    def _get_repo_installation(self, req: _Req, owner: str, repo: str) -> _Answer:
        self._repo(req, owner, repo)
        app = req.identity.app if req.identity else None
        assert app is not None
        created = _iso(1_650_000_000)
        account = self._user_json(app.owner, "Organization")
        return _Answer(
            200,
            {
                "id": app.installation_id,
                "account": account,
                "repository_selection": "all",
                "access_tokens_url": f"{self.api_url}/app/installations/{app.installation_id}/access_tokens",
                "repositories_url": f"{self.api_url}/installation/repositories",
                "html_url": f"{HTML}/organizations/{app.owner}/settings/installations/{app.installation_id}",
                "app_id": app.app_id,
                "app_slug": app.slug,
                "client_id": app.client_id,
                "target_id": account["id"],
                "target_type": "Organization",
                "permissions": dict(APP_PERMISSIONS),
                "events": list(APP_EVENTS),
                "created_at": created,
                "updated_at": created,
                "single_file_name": None,
                "has_multiple_single_files": False,
                "single_file_paths": [],
                "suspended_by": None,
                "suspended_at": None,
            },
        )

    # ------------------------------------------------------------ issue comments

    def _store_comment(
        self, repo: str, number: int, body: str, login: str, user_type: str, app: GitHubApp | None
    ) -> int:
        now = time.time()
        cid = self._next_comment_id
        self._next_comment_id += 1
        self._comments[cid] = _Comment(cid, repo, number, body, login, user_type, app, now, now)
        return cid

    def _comment_json(self, c: _Comment) -> dict[str, Any]:
        repo = self._repos[c.repo]
        api = f"{self.api_url}/repos/{repo.full_name}"
        return {
            "url": f"{api}/issues/comments/{c.id}",
            "html_url": f"{HTML}/{repo.full_name}/pull/{c.number}#issuecomment-{c.id}",
            "issue_url": f"{api}/issues/{c.number}",
            "id": c.id,
            "node_id": _node_id("IssueComment", c.id),
            "user": self._user_json(c.login, c.user_type),
            "created_at": _iso(c.created_at),
            "updated_at": _iso(c.updated_at),
            "author_association": "NONE" if c.user_type == "Bot" else "CONTRIBUTOR",
            "body": c.body,
            "reactions": {
                "url": f"{api}/issues/comments/{c.id}/reactions",
                "total_count": 0,
                "+1": 0,
                "-1": 0,
                "laugh": 0,
                "hooray": 0,
                "confused": 0,
                "heart": 0,
                "rocket": 0,
                "eyes": 0,
            },
            "performed_via_github_app": self._app_json(c.app) if c.app else None,
        }

    def _comment_body(self, req: _Req) -> str:
        body = req.body.get("body") if isinstance(req.body, dict) else None
        if not isinstance(req.body, dict) or "body" not in req.body:
            raise _error(422, 'Invalid request.\n\n"body" wasn\'t supplied.', req.doc)
        if not isinstance(body, str):
            raise _error(
                422,
                f"Invalid request.\n\nFor 'properties/body', {json.dumps(body)} is not a string.",
                req.doc,
            )
        if not body.strip():
            raise _validation(req.doc, {"resource": "IssueComment", "code": "missing_field", "field": "body"})
        if len(body) > COMMENT_MAX:
            # The shape api.github.com answers today (2024-2025 reports); older answers said
            # code "custom", field "body". Callers should key on 422 + "too long".
            raise _validation(
                req.doc,
                {
                    "resource": "IssueComment",
                    "code": "unprocessable",
                    "field": "data",
                    "message": f"Body is too long (maximum is {COMMENT_MAX} characters)",
                },
            )
        return body

    def _list_comments(self, req: _Req, owner: str, repo: str, number: str) -> _Answer:
        r = self._repo(req, owner, repo)
        self._pull(req, r, number)
        key = r.full_name.lower()
        items = [c for c in self._comments.values() if (c.repo, c.number) == (key, int(number))]
        since = _parse_iso(req.arg("since") or "")
        if since is not None:
            items = [c for c in items if c.updated_at >= since]
        page, link = self._paginate(req, items)  # always ascending id, as GitHub documents
        return _Answer(200, [self._comment_json(c) for c in page], link)

    def _create_comment(self, req: _Req, owner: str, repo: str, number: str) -> _Answer:
        r = self._repo(req, owner, repo)
        self._pull(req, r, number)
        body = self._comment_body(req)
        ident = req.identity
        assert ident is not None
        cid = self._store_comment(r.full_name.lower(), int(number), body, ident.login, ident.type, ident.app)
        out = self._comment_json(self._comments[cid])
        return _Answer(201, out, {"Location": out["url"]})

    def _find_comment(self, req: _Req, owner: str, repo: str, comment_id: str) -> _Comment:
        r = self._repo(req, owner, repo)
        c = self._comments.get(int(comment_id))
        if c is None or c.repo != r.full_name.lower():
            raise _error(404, "Not Found", req.doc)
        return c

    def _check_author(self, req: _Req, c: _Comment) -> None:
        ident = req.identity
        assert ident is not None
        if c.login != ident.login:
            if ident.type == "Bot":
                raise _error(403, "Resource not accessible by integration", req.doc)
            raise _error(403, "You must be the author of this comment to change it.", req.doc)

    def _get_comment(self, req: _Req, owner: str, repo: str, comment_id: str) -> _Answer:
        return _Answer(200, self._comment_json(self._find_comment(req, owner, repo, comment_id)))

    def _update_comment(self, req: _Req, owner: str, repo: str, comment_id: str) -> _Answer:
        c = self._find_comment(req, owner, repo, comment_id)
        self._check_author(req, c)
        c.body = self._comment_body(req)
        c.updated_at = time.time()
        return _Answer(200, self._comment_json(c))

    def _delete_comment(self, req: _Req, owner: str, repo: str, comment_id: str) -> _Answer:
        c = self._find_comment(req, owner, repo, comment_id)
        self._check_author(req, c)
        del self._comments[c.id]
        return _Answer(204)

    # ------------------------------------------------------------ commit statuses

    def _status_json(self, repo: _Repo, s: _Status, *, simple: bool = False) -> dict[str, Any]:
        creator = self._user_json(s.login, s.user_type)
        out = {
            "url": f"{self.api_url}/repos/{repo.full_name}/statuses/{s.sha}",
            "avatar_url": creator["avatar_url"],
            "id": s.id,
            "node_id": _node_id("StatusContext", s.id),
            "state": s.state,
            "description": s.description,
            "target_url": s.target_url,
            "context": s.context,
            "created_at": _iso(s.created_at),
            "updated_at": _iso(s.created_at),
        }
        if not simple:
            out["creator"] = creator
        return out

    def _resolve_ref(self, req: _Req, repo: _Repo, ref: str, status: int) -> str:
        ref = ref.removeprefix("refs/heads/").removeprefix("heads/")
        if ref in repo.commits:
            return ref
        if ref in repo.branches:
            return repo.branches[ref]
        raise _error(status, f"No commit found for SHA: {ref}", req.doc)

    def _create_status(self, req: _Req, owner: str, repo: str, sha: str) -> _Answer:
        r = self._repo(req, owner, repo)
        data = req.body if isinstance(req.body, dict) else {}
        if "state" not in data:
            raise _error(422, 'Invalid request.\n\n"state" wasn\'t supplied.', req.doc)
        state = data["state"]
        if state not in STATUS_STATES:
            raise _validation(
                req.doc,
                {
                    "resource": "Status",
                    "code": "custom",
                    "field": "state",
                    "message": "state is not included in the list",
                },
            )
        description = data.get("description")
        if description is not None and len(str(description)) > STATUS_DESCRIPTION_MAX:
            raise _validation(
                req.doc,
                {
                    "resource": "Status",
                    "code": "custom",
                    "field": "description",
                    "message": f"description is too long (maximum is {STATUS_DESCRIPTION_MAX} characters)",
                },
            )
        if sha not in r.commits:
            raise _error(422, f"No commit found for SHA: {sha}", req.doc)
        context = data.get("context") or "default"
        key = r.full_name.lower()
        if (
            sum(1 for s in self._statuses if (s.repo, s.sha, s.context) == (key, sha, context))
            >= STATUSES_PER_CONTEXT_MAX
        ):
            raise _validation(
                req.doc,
                {
                    "resource": "Status",
                    "code": "custom",
                    "field": "context",
                    "message": "This SHA and context has reached the maximum number of statuses.",
                },
            )
        ident = req.identity
        assert ident is not None
        s = _Status(
            self._next_status_id,
            key,
            sha,
            state,
            data.get("target_url"),
            description,
            context,
            ident.login,
            ident.type,
            time.time(),
        )
        self._next_status_id += 1
        self._statuses.append(s)
        return _Answer(201, self._status_json(r, s))

    def _statuses_for(self, repo: _Repo, sha: str) -> list[_Status]:
        key = repo.full_name.lower()
        return sorted((s for s in self._statuses if s.repo == key and s.sha == sha), key=lambda s: -s.id)

    def _list_statuses(self, req: _Req, owner: str, repo: str, ref: str) -> _Answer:
        r = self._repo(req, owner, repo)
        sha = self._resolve_ref(req, r, ref, 404)
        page, link = self._paginate(req, self._statuses_for(r, sha))  # newest first
        return _Answer(200, [self._status_json(r, s) for s in page], link)

    def _combined_status(self, req: _Req, owner: str, repo: str, ref: str) -> _Answer:
        r = self._repo(req, owner, repo)
        sha = self._resolve_ref(req, r, ref, 404)
        latest: dict[str, _Status] = {}
        for s in self._statuses_for(r, sha):
            latest.setdefault(s.context, s)
        states = {s.state for s in latest.values()}
        if states & {"error", "failure"}:
            state = "failure"
        elif not latest or "pending" in states:
            state = "pending"
        else:
            state = "success"
        repository = self._repo_json(r)
        return _Answer(
            200,
            {
                "state": state,
                "statuses": [self._status_json(r, s, simple=True) for s in latest.values()],
                "sha": sha,
                "total_count": len(latest),
                "repository": repository,
                "commit_url": f"{self.api_url}/repos/{r.full_name}/commits/{sha}",
                "url": f"{self.api_url}/repos/{r.full_name}/commits/{sha}/status",
            },
        )

    # ------------------------------------------------------------ pull requests

    def _pull_json(self, repo: _Repo, pr: _Pull, *, full: bool) -> dict[str, Any]:
        key = repo.full_name.lower()
        count = (
            sum(1 for c in self._comments.values() if (c.repo, c.number) == (key, pr.number)) if full else 0
        )
        return _pull_json(self.api_url, self._repo_json(repo), pr, full=full, comments=count)

    def _list_pulls(self, req: _Req, owner: str, repo: str) -> _Answer:
        r = self._repo(req, owner, repo)
        state = req.arg("state", "open")
        if state not in ("open", "closed", "all"):
            raise _validation(req.doc, {"resource": "Issue", "code": "invalid", "field": "state"})
        key = r.full_name.lower()
        pulls = [p for (k, _), p in self._pulls.items() if k == key and state in ("all", p.state)]
        if head := req.arg("head"):
            pulls = [
                p for p in pulls if f"{r.owner}:{p.head_ref}".lower() == head.lower() or p.head_ref == head
            ]
        if base := req.arg("base"):
            pulls = [p for p in pulls if p.base_ref == base]
        by_updated = req.arg("sort") == "updated"
        pulls.sort(key=lambda p: (p.updated_at if by_updated else p.created_at, p.number))
        if req.arg("direction", "desc") != "asc":
            pulls.reverse()
        page, link = self._paginate(req, pulls)
        return _Answer(200, [self._pull_json(r, p, full=False) for p in page], link)

    def _get_pull(self, req: _Req, owner: str, repo: str, number: str) -> _Answer:
        r = self._repo(req, owner, repo)
        return _Answer(200, self._pull_json(r, self._pull(req, r, number), full=True))

    def _list_files(self, req: _Req, owner: str, repo: str, number: str) -> _Answer:
        r = self._repo(req, owner, repo)
        pr = self._pull(req, r, number)
        page, link = self._paginate(req, pr.files[:PULL_FILES_MAX])
        return _Answer(200, [_file_json(self.api_url, r.full_name, pr.head_sha, f) for f in page], link)

    def _commit_pulls(self, req: _Req, owner: str, repo: str, sha: str) -> _Answer:
        r = self._repo(req, owner, repo)
        if sha not in r.commits:
            raise _error(422, f"No commit found for SHA: {sha}", req.doc)
        key = r.full_name.lower()
        pulls = [
            p
            for (k, _), p in self._pulls.items()
            if k == key and (sha in p.head_history or sha == p.merge_commit_sha)
        ]
        pulls.sort(key=lambda p: -p.number)
        page, link = self._paginate(req, pulls)
        return _Answer(200, [self._pull_json(r, p, full=False) for p in page], link)


# ---------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    double: GitHubDouble


class _RequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps httpx's pooled connections alive between calls.
    protocol_version = "HTTP/1.1"
    # Small JSON answers written in two parts would otherwise wait ~40 ms for delayed ACKs.
    disable_nagle_algorithm = True
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, headers, payload = self.server.double._handle(self.command, self.path, self.headers, raw)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status not in (204, 304):  # these carry no body and no Content-Length
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        # Tests read GitHubDouble.requests; per-request stderr lines would only be noise.
        pass
