"""The pull-request comment and commit-status texts. Pure: plans and findings in, strings out.

One comment per pull request, found again by MARKER. Summary first; errors as file:line links
into the pull request's head; the plan in collapsible sections; all within GitHub's 65,536
characters: when it does not fit, whole sections are left out from the end and the comment
says how many and how to see them, never cutting a section or a link in half.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..findings import Finding
from ..plandiff import PlanDiff
from ..planview import (
    Checks,
    SetChange,
    checks_markdown,
    grouped,
    markdown_section,
    money,
    objects_markdown,
    set_markdown_section,
    signed_money,
)

MARKER = "<!-- kaito-gitops:review -->"
LIMIT = 65_536
BUDGET = LIMIT - 1_000  # room for the truncation note and the deployment section
STATUS_LIMIT = 140


@dataclass
class Deployment:
    """After merge: where the merged change stands, per workspace."""

    merge_sha: str
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (workspace, stage, detail)
    state: str = "pending"  # pending | success | failure


def _link(repo_html: str, sha: str, f: Finding) -> str:
    return f"[`{f.path}:{f.line}`]({repo_html}/blob/{sha}/{f.path}#L{f.line})"


def _finding_line(repo_html: str, sha: str, f: Finding) -> str:
    icon = ":x:" if f.is_error else ":warning:"
    where = f" `{f.field}`" if f.field else ""
    return f"- {icon} {_link(repo_html, sha, f)}{where}: {f.message} `{f.rule}`"


PAST = {"add": "added", "change": "changed", "replace": "replaced", "remove": "removed"}


def summary(diff: PlanDiff, errors: list[Finding]) -> str:
    ok = not errors and not any(c.after and c.after.problems for c in diff.changes)
    head = (
        ":white_check_mark: **kaito-gitops: ready to merge**"
        if ok
        else ":x: **kaito-gitops: fix the errors below**"
    )
    counts = ", ".join(f"{diff.count(a)} {PAST[a]}" for a in PAST if diff.count(a)) or "no workspace changes"
    objects = ", ".join(
        f"{diff.object_count(a)} {a}d" for a in ("create", "update", "delete") if diff.object_count(a)
    )
    return (
        f"{head}\n\nWorkspaces: {counts} · GPUs {diff.before.gpus} → {diff.after.gpus} ({diff.gpu_delta:+d}) · "
        f"{money(diff.before.price_per_hour)}/h → {money(diff.after.price_per_hour)}/h "
        f"({signed_money(diff.cost_delta)}/h)" + (f" · Other objects: {objects}" if objects else "")
    )


def comment_body(
    diff: PlanDiff,
    findings: list[Finding],
    *,
    repo_html: str,
    head_sha: str,
    base_ref: str,
    deployment: Deployment | None = None,
    checks: Checks | None = None,
    evaluation: str = "",
) -> str:
    """`evaluation` is the Eval section of a preview (evals/preview.py), shown before the plan."""
    errors = [f for f in findings if f.is_error]
    warnings = [f for f in findings if not f.is_error]
    parts = [MARKER, summary(diff, errors), ""]
    if checks is not None and checks.capacity is not None and checks.capacity.failing:
        parts += [
            ":warning: **Azure would refuse part of this plan** (quota or region capacity): see "
            "_Quota and capacity_ below; fix it before merging, or the node pools will not come.",
            "",
        ]
    if errors:
        parts += (
            [f"### Errors ({len(errors)})", ""]
            + [_finding_line(repo_html, head_sha, f) for f in errors]
            + [""]
        )
    if warnings:
        parts += [f"<details><summary>Warnings ({len(warnings)})</summary>", ""]
        parts += [_finding_line(repo_html, head_sha, f) for f in warnings] + ["", "</details>", ""]
    sections = [
        set_markdown_section(c) if isinstance(c, SetChange) else markdown_section(c) for c in grouped(diff)
    ]
    others = objects_markdown(diff)
    if others:
        sections.append(others)
    head_text = "\n".join(parts)
    footer = (
        f"\n<sub>Plan of `{head_sha[:12]}` against `{base_ref}`. This comment is updated on every push; "
        "kaito-gitops never posts a second one.</sub>\n"
    )
    deploy = deployment_section(deployment) if deployment else ""
    if checks is not None and (checks.budgets or checks.capacity is not None):
        head_text += checks_markdown(checks) + "\n"
    if evaluation:  # a blank line first: a heading right after </details> is not one on GitHub
        head_text = head_text.rstrip("\n") + "\n\n" + evaluation.rstrip("\n") + "\n\n"
    if sections:
        head_text += "### Plan\n\n"
    body = head_text
    left_out = 0
    for i, s in enumerate(sections):
        if len(body) + len(s) + len(footer) + len(deploy) > BUDGET:
            left_out = len(sections) - i
            break
        body += s + "\n"
    if left_out:
        body += (
            f"\n_{left_out} more workspace section(s) left out to stay within GitHub's {LIMIT:,}-character "
            f"comment limit; run `kaito-gitops plan --base {base_ref}` to see the whole plan._\n"
        )
    body += deploy + footer
    if len(body) > LIMIT:  # only possible with thousands of findings: cut at a line boundary
        cut = body[: LIMIT - 200].rsplit("\n", 1)[0]
        body = cut + "\n\n_Truncated to stay within GitHub's comment limit._\n"
    return body


def deployment_section(d: Deployment) -> str:
    icon = {"success": ":white_check_mark:", "failure": ":x:"}.get(d.state, ":hourglass_flowing_sand:")
    rows = [
        "",
        f"### Deployment {icon}",
        "",
        f"Merged as `{d.merge_sha[:12]}`.",
        "",
        "| workspace | stage | detail |",
        "| --- | --- | --- |",
    ]
    rows += [f"| `{w}` | {stage} | {detail.replace('|', '/')} |" for w, stage, detail in d.lines]
    return "\n".join(rows) + "\n"


def status_description(diff: PlanDiff, errors: int) -> str:
    if errors:
        text = f"{errors} error(s) in workspace files; see the kaito-gitops comment"
    else:
        text = (
            f"{diff.count('add')} add, {diff.count('change')} change, {diff.count('replace')} replace, "
            f"{diff.count('remove')} remove; {diff.after.gpus} GPU, {money(diff.after.price_per_hour)}/h"
        )
    return text[:STATUS_LIMIT]
