"""Between two revisions: which edits Kaito would refuse as updates to immutable fields.

A GitOps tool cannot refuse a merged commit, so these are warnings that say the workspace
will be replaced (deleted and created again, nodes included), shown before the merge.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..findings import Finding, Severity
from ..workspace import Workspace


def _selector_map(ws: Workspace) -> dict[str, str]:
    out = dict(ws.resource.match_labels)
    for e in ws.resource.match_expressions:
        if e.get("operator") == "In" and len(e.get("values") or []) == 1:
            out[e.get("key")] = e["values"][0]
    return out


def replacement_reasons(old: Workspace, new: Workspace) -> Iterator[tuple[tuple, str]]:
    """(path in the new document, what changed) for every immutable field that differs."""
    if (old.inference is None) != (new.inference is None) or (old.tuning is None) != (new.tuning is None):
        yield (
            (("inference",) if new.inference is not None else ("tuning",)),
            "switching between inference and tuning",
        )
        return
    if old.resource.count != new.resource.count and not (
        old.resource.count in (None, 1) and new.resource.count in (None, 1)
    ):
        yield ("resource", "count"), f"resource.count ({old.resource.count} -> {new.resource.count})"
    if _selector_map(old) != _selector_map(new):
        yield ("resource", "labelSelector"), "resource.labelSelector"
    if (old.resource.instance_type or "") != (
        new.resource.instance_type or ""
    ) and old.resource.instance_type:
        yield (
            ("resource", "instanceType"),
            f"resource.instanceType ({old.resource.instance_type} -> {new.resource.instance_type or 'none'})",
        )
    if old.resource.partition != new.resource.partition:
        yield ("resource", "partition"), "resource.partition"
    if new.inference is not None and old.inference is not None:
        if old.inference.preset != new.inference.preset:
            yield ("inference", "preset"), "inference.preset"
        if (old.inference.template is None) != (new.inference.template is None):
            yield ("inference", "template"), "setting or removing inference.template"
    if new.tuning is not None and old.tuning is not None:
        if old.tuning.preset != new.tuning.preset:
            yield ("tuning", "preset"), "tuning.preset"
        if old.tuning.method != new.tuning.method:
            yield ("tuning", "method"), f"tuning.method ({old.tuning.method} -> {new.tuning.method})"
        old_in = old.tuning.input.name if old.tuning.input else None
        new_in = new.tuning.input.name if new.tuning.input else None
        if old_in != new_in:
            yield ("tuning", "input", "name"), "tuning.input.name"


def check_changes(old: Workspace, new: Workspace) -> list[Finding]:
    out = []
    for path, what in replacement_reasons(old, new):
        out.append(
            new.document.finding(
                path,
                "requires-replacement",
                f"changing {what} requires replacement: Kaito rejects this update, so kaito-gitops will delete "
                f"{new.namespace}/{new.name} and create it again (its nodes too)",
                Severity.WARNING,
                at_key=True,
            )
        )
    return out
