"""Logging: structlog, JSON lines in the daemon, readable lines in the CLI, never a secret."""

from __future__ import annotations

import logging
import re
import sys

import structlog

# Values that look like credentials are masked even if some code path logs them by mistake.
_PATTERNS = [
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?\s*(?:bearer|basic|token)\s+)[^\s'\",]+"),
    re.compile(r"(?i)((?:token|secret|password|api[_-]?key)['\"]?\s*[:=]\s*['\"]?)[^\s'\",]{4,}"),
    re.compile(r"(://)[^/@\s:]+:[^/@\s]+@"),
    re.compile(r"\b(gh[pousr]_)[A-Za-z0-9]{20,}"),
    re.compile(r"(sha256=)[0-9a-f]{64}"),
]


def mask(text: str) -> str:
    for p in _PATTERNS:
        text = p.sub(lambda m: m.group(1) + "***" + ("@" if m.group(1) == "://" else ""), text)
    return text


def _redact(_, __, event: dict) -> dict:
    for k, v in list(event.items()):
        if isinstance(v, str):
            event[k] = mask(v)
    return event


class _Stderr:
    """Whatever sys.stderr is when a line is written (it is swapped by test runners and daemons)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(json_lines: bool, level: str = "info") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(stream=_Stderr(), level=lvl, format="%(message)s")
    for noisy in ("urllib3", "azure", "git", "watchdog", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    renderer = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),
        cache_logger_on_first_use=False,
    )


def error_text(e: BaseException) -> str:
    """A one-line description of an exception for logs and status (a Kubernetes error by its message,
    not its headers), with anything that looks like a credential masked."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        import json

        reason = ""
        try:
            body = json.loads(e.body or "{}")
            reason = body.get("message", "")
        except (ValueError, TypeError):
            reason = (e.body or "")[:200] if isinstance(e.body, str) else ""
        return mask(f"Kubernetes API {e.status} {e.reason}: {reason}".strip())
    text = str(e).splitlines()[0] if str(e) else ""
    return mask(f"{type(e).__name__}: {text}"[:500])
