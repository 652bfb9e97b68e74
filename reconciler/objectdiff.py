"""What applying would change in one object, as a unified diff of YAML. Pure.

The live object and the server's dry-run answer are compared after dropping what the server
keeps for itself (uids, versions, timestamps, managedFields, status), so the diff shows only
fields someone wrote: ours, and anyone else's that our apply would overwrite.
"""

from __future__ import annotations

import difflib

import yaml

SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink")


def normalize(obj: dict | None) -> dict | None:
    if obj is None:
        return None
    out = {k: v for k, v in obj.items() if k != "status"}
    md = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_METADATA}
    out["metadata"] = md
    return out


def _lines(obj: dict | None) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, width=1000).splitlines(keepends=True)


def object_name(obj: dict) -> str:
    md = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{md.get('namespace', '')}/{md.get('name', '?')}"


def unified(live: dict | None, desired: dict | None, name: str) -> str:
    """'' when they agree; otherwise a unified diff from live to desired (either may be absent)."""
    a, b = _lines(normalize(live)), _lines(normalize(desired))
    if a == b:
        return ""
    return "".join(
        difflib.unified_diff(
            a,
            b,
            fromfile=f"live/{name}" if live else "/dev/null",
            tofile=f"desired/{name}" if desired else "/dev/null",
        )
    )
