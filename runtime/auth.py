"""The API key check of both inference servers (runtime.cpu_server and the proxy in runtime.inference)."""

from __future__ import annotations

import hmac


def bearer_ok(header: str | None, key: str) -> bool:
    """Whether an `Authorization` header value is `Bearer <key>`, compared in constant time."""
    scheme, _, token = (header or "").partition(" ")
    # as bytes: compare_digest raises TypeError for a str with non-ASCII characters
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
