"""GitHub webhook deliveries: verified, de-duplicated, turned into small events.

HMAC-SHA256 of the raw body (`X-Hub-Signature-256: sha256=<hex>`), compared in constant
time; a body size cap; delivery IDs remembered so a redelivery triggers nothing twice.
Payload contents are untrusted: they only tell us *when* to look, never *what* to apply.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

MAX_BODY = 5 * 1024 * 1024


@dataclass(frozen=True)
class PushEvent:
    ref: str
    after: str
    repository: str


@dataclass(frozen=True)
class PullRequestEvent:
    action: str
    number: int
    head_sha: str
    base_ref: str
    merged: bool
    repository: str


@dataclass(frozen=True)
class Answer:
    status: int
    message: str
    event: PushEvent | PullRequestEvent | None = None


class WebhookReceiver:
    def __init__(self, secret: bytes, max_body: int = MAX_BODY, remember: int = 10_000):
        if not secret:
            raise ValueError("a webhook secret is required")
        self.secret = secret
        self.max_body = max_body
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()

    def verify(self, body: bytes, signature: str | None) -> bool:
        if not signature or not signature.startswith("sha256="):
            return False
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), signature.strip().encode())

    def _first_time(self, delivery: str) -> bool:
        with self._lock:
            if delivery in self._seen:
                return False
            self._seen[delivery] = None
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            return True

    def handle(self, headers: dict[str, str], body: bytes) -> Answer:
        """Decide what one delivery means. Headers are matched case-insensitively."""
        h = {k.lower(): v for k, v in headers.items()}
        if len(body) > self.max_body:
            return Answer(413, f"body over {self.max_body} bytes")
        if not self.verify(body, h.get("x-hub-signature-256")):
            return Answer(401, "missing or wrong X-Hub-Signature-256")
        delivery = h.get("x-github-delivery", "")
        event = h.get("x-github-event", "")
        if delivery and not self._first_time(delivery):
            return Answer(200, "duplicate delivery ignored")
        if event == "ping":
            return Answer(200, "pong")
        try:
            payload = json.loads(body)
        except ValueError:
            return Answer(400, "body is not JSON")
        if not isinstance(payload, dict):
            return Answer(400, "body is not a JSON object")
        repo = str((payload.get("repository") or {}).get("full_name", ""))
        if event == "push":
            return Answer(
                202,
                "push accepted",
                PushEvent(str(payload.get("ref", "")), str(payload.get("after", "")), repo),
            )
        if event == "pull_request":
            pr = payload.get("pull_request") or {}
            try:
                number = int(payload.get("number") or pr.get("number"))
            except (TypeError, ValueError):
                return Answer(400, "pull_request without a number")
            return Answer(
                202,
                "pull request accepted",
                PullRequestEvent(
                    str(payload.get("action", "")),
                    number,
                    str((pr.get("head") or {}).get("sha", "")),
                    str((pr.get("base") or {}).get("ref", "")),
                    bool(pr.get("merged")),
                    repo,
                ),
            )
        return Answer(202, f"event {event or 'without a name'} ignored")
