"""Send a raw webhook body to a URL, signed and headed the way GitHub's Hookshot does it
(doubles.github_api.delivery_headers; its `deliver` sends payload dicts, this one any bytes)."""

from __future__ import annotations

import urllib.error
import urllib.request

from doubles.github_api import delivery_headers


def deliver(url: str, body: bytes, event: str, secret: bytes | None, delivery: str | None = None) -> int:
    """POST `body` as one `event` delivery (unsigned when `secret` is None); return the status code."""
    req = urllib.request.Request(
        url, data=body, headers=delivery_headers(event, body, secret, delivery), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
