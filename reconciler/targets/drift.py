"""Drift: whether a live object still holds everything we applied. Pure."""

from __future__ import annotations

from typing import Any

from ..render.common import VOLATILE_ANNOTATIONS


def subset_differs(desired: Any, live: Any, path: str = "") -> str | None:
    """Where `live` does not contain `desired` (None when it does).

    The API server adds defaults and status, so a live object is a superset of what we
    applied; only values we set, and that are now different or gone, count as drift.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return path or "."
        for k, v in desired.items():
            if path == ".metadata.annotations" and k in VOLATILE_ANNOTATIONS:
                continue
            if k not in live:
                return f"{path}.{k}"
            d = subset_differs(v, live[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return path
        for i, (a, b) in enumerate(zip(desired, live, strict=True)):
            d = subset_differs(a, b, f"{path}[{i}]")
            if d:
                return d
        return None
    if desired == live or str(desired) == str(live):  # quantities come back as strings
        return None
    return path


def strip_for_compare(obj: dict) -> dict:
    md = obj.get("metadata", {})
    keep = {k: md[k] for k in ("name", "namespace", "labels", "annotations") if k in md}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": keep}
