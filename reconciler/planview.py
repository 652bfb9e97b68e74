"""How a plan reads: text for terminals, Markdown for pull requests, JSON for tools."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from .capacity import CapacityReport
from .capacity import text_lines as capacity_lines
from .companions import key_text
from .inferenceset import member_index
from .plandiff import CompanionChange, PlanDiff, WorkspaceChange
from .planning import WorkspacePlan

SIGN = {"add": "+", "change": "~", "replace": "-/+", "remove": "-", "unchanged": "="}
OBJ_SIGN = {"create": "+", "update": "~", "replace": "-/+", "delete": "-", "unchanged": "="}


@dataclass
class Checks:
    """What the plan is checked against besides the files: budgets and, with an AKS cluster
    named, its quota and region capacity."""

    budgets: list[str] = field(default_factory=list)
    capacity: CapacityReport | None = None


def checks_text(checks: Checks | None) -> str:
    if checks is None:
        return ""
    out = []
    if checks.budgets:
        out += ["Budgets:", *(f"  {line}" for line in checks.budgets), ""]
    if checks.capacity is not None:
        lines = capacity_lines(checks.capacity) or ["no node pool to add or grow"]
        out += [f"Quota and capacity in {checks.capacity.location or 'the cluster'}:"]
        out += [f"  {line}" for line in lines] + [""]
    return "\n".join(out)


def checks_markdown(checks: Checks | None) -> str:
    if checks is None:
        return ""
    out = []
    if checks.budgets:
        out += ["#### Budgets", ""]
        out += [f"- {':x:' if '(over budget)' in b else ':white_check_mark:'} {b}" for b in checks.budgets]
        out.append("")
    cap = checks.capacity
    if cap is not None:
        out += [f"#### Quota and capacity in `{cap.location or 'the cluster'}`", ""]
        for need in cap.families:
            if need.quota is None:
                out.append(f"- :grey_question: `{need.family}`: needs {need.needed} vCPUs; quota unknown")
            else:
                mark = ":x:" if need.short else ":white_check_mark:"
                verdict = f" — **short by {need.short}**" if need.short else ""
                out.append(
                    f"- {mark} `{need.family}`: needs {need.needed} vCPUs, {need.quota.free} free "
                    f"({need.quota.current}/{need.quota.limit} used){verdict}"
                )
            out += [
                f"  - `{k[0]}/{k[1]}`: +{n} vCPUs" for k, n in zip(need.workspaces, need.vcpus, strict=True)
            ]
        for (ns, name), problems in sorted(cap.problems.items()):
            out += [f"- :x: `{ns}/{name}`: {p}" for p in problems]
        out += [f"- :grey_question: {u}" for u in cap.unknown]
        if not (cap.families or cap.problems or cap.unknown):
            out.append("- no node pool to add or grow")
        out.append("")
    return "\n".join(out)


def money(v: float | None) -> str:
    return "n/a" if v is None else f"${v:,.2f}"


def signed_money(v: float) -> str:
    return f"{'+' if v >= 0 else '-'}${abs(v):,.2f}"


def summary_line(diff: PlanDiff) -> str:
    return (
        f"{diff.count('add')} to add, {diff.count('change')} to change, {diff.count('replace')} to replace, "
        f"{diff.count('remove')} to remove; GPUs {diff.before.gpus} -> {diff.after.gpus} ({diff.gpu_delta:+d}), "
        f"{money(diff.before.price_per_hour)}/h -> {money(diff.after.price_per_hour)}/h "
        f"({signed_money(diff.cost_delta)}/h)"
    )


def hardware_line(p: WorkspacePlan, each: bool = False) -> str:
    """`each`: for one replica of an InferenceSet (every member has a pool of its own)."""
    if p.sku is None:
        return f"{p.nodes} bring-your-own node(s), GPUs per node read from node labels"
    pool = f"; node pool {p.node_pool.name}" if p.node_pool else "; bring-your-own nodes"
    if each and p.node_pool:
        pool = "; a node pool of its own"
    return (
        f"{p.nodes} x {p.sku.name} ({p.sku.gpu_count} x {p.sku.gpu} {p.sku.gpu_memory_gib:g} GiB) = "
        f"{p.gpus} GPU, {money(p.price_per_hour)}/hour{pool}"
    )


def sizing_line(p: WorkspacePlan) -> str | None:
    return p.sizing.describe() if p.sizing is not None else None


def model_line(p: WorkspacePlan) -> str:
    ws = p.workspace
    if ws.inference is not None and ws.inference.template is not None:
        return "inference from a custom pod template"
    name = p.model.name if p.model else (ws.preset.name if ws.preset else "?")
    hf = f" ({p.model.huggingface})" if p.model else ""
    if ws.tuning is not None:
        return f"tuning {ws.tuning.method} of {name}{hf}"
    return f"inference {name}{hf}"


def _workspace_lines(c: WorkspaceChange) -> list[str]:
    p = c.after or c.before
    assert p is not None
    ns, name = c.key
    lines = [f"{SIGN[c.action]} {ns}/{name}  ({p.workspace.path})"]
    lines.append(f"    {model_line(p)}")
    lines.append(
        f"    {hardware_line(p)}"
        + (f" [{c.pool_action}]" if c.pool_action not in ("none", "unchanged") else "")
    )
    s = sizing_line(p)
    if s:
        lines.append(f"    {s}")
    if c.reasons:
        lines.append(f"    replaced because: {', '.join(c.reasons)}")
    if c.after is not None and c.after.command:
        lines.append(f"    command: {shlex.join(c.after.command)}")
    objs = [f"{OBJ_SIGN[o.action]} {o.kind}/{o.name}" for o in c.objects if o.action != "unchanged"]
    if objs:
        lines.append(f"    objects: {', '.join(objs)}")
    for n in p.notes:
        lines.append(f"    note: {n}")
    for problem in c.after.problems if c.after else ():
        lines.append(f"    problem: {problem}")
    return lines


@dataclass
class SetChange:
    """An InferenceSet's members, shown as one entry: they are one template."""

    key: tuple[str, str]
    members: list[WorkspaceChange]
    min_replicas: int | None = None  # the set's autoscaling bounds, when it has any
    max_replicas: int | None = None
    template: WorkspacePlan | None = None  # one member's plan, for a set with no replica in git
    template_action: str = "unchanged"  # (no replica in git) add, change or unchanged against the base

    @property
    def action(self) -> str:
        if not self.members:
            return self.template_action
        acts = {c.action for c in self.members}
        return acts.pop() if len(acts) == 1 else "change"

    @property
    def plan(self) -> WorkspacePlan:
        if not self.members:
            return self.template
        c = self.members[0]
        return c.after or c.before

    @property
    def gpu_delta(self) -> int:
        return sum(c.gpu_delta for c in self.members)

    @property
    def cost_delta(self) -> float:
        return round(sum(c.cost_delta for c in self.members), 3)

    @property
    def replicas(self) -> int:
        return sum(1 for c in self.members if c.after is not None)

    def heading(self) -> str:
        n = self.replicas
        scale = ""
        if self.min_replicas is not None and self.min_replicas != self.max_replicas:
            scale = f", scales {self.min_replicas}-{self.max_replicas}"
        return f"InferenceSet, {n} replica(s){scale}"

    def cost_text(self) -> str:
        price, n = self.plan.price_per_hour, self.replicas
        out = f"{money(None if price is None else price * n)}/h for {n}"
        if price is not None and self.min_replicas is not None and self.min_replicas != self.max_replicas:
            out += (
                f"; {money(price * self.min_replicas)}/h at min {self.min_replicas}, "
                f"{money(price * self.max_replicas)}/h at max {self.max_replicas}"
            )
        return out

    def members_text(self, most: int = 6) -> str:
        def index(c) -> int:
            return member_index((c.after or c.before).workspace)

        names = [f"{SIGN[c.action]} {c.key[1]}" for c in sorted(self.members, key=index)]
        if not names:
            return "none until scaled up (replicas 0)"
        if len(names) > most:
            names = [*names[: most - 2], f"... {len(names) - most + 1} more", names[-1]]
        return ", ".join(names)


def grouped(diff: PlanDiff, show_unchanged: bool = False) -> list[WorkspaceChange | SetChange]:
    """The changes in order, an InferenceSet's members folded into one SetChange at the first."""
    out: list = []
    sets: dict[tuple[str, str], SetChange] = {}
    for c in diff.changes:
        if c.action == "unchanged" and not show_unchanged:
            continue
        p = c.after or c.before
        key = p.workspace.set_key
        if key is None:
            out.append(c)
            continue
        if key not in sets:
            s = diff.after.sets.get(key) or diff.before.sets.get(key)
            bounds = (s.scaling.min_replicas, s.scaling.max_replicas) if s is not None else (None, None)
            sets[key] = SetChange(key, [], *bounds)
            out.append(sets[key])
        sets[key].members.append(c)
    for key, template in sorted(diff.after.set_templates.items()):
        if key in sets:
            continue
        s = diff.after.sets[key]
        before = diff.before.set_templates.get(key)
        action = "add" if key not in diff.before.sets else "unchanged"
        if before is not None and before.objects != template.objects:
            action = "change"  # what a member would run when it scales up (hardware, price, model)
        if action != "unchanged" or show_unchanged:
            out.append(SetChange(key, [], s.scaling.min_replicas, s.scaling.max_replicas, template, action))
    return out


def _set_lines(g: SetChange) -> list[str]:
    p = g.plan
    lines = [f"{SIGN[g.action]} {g.key[0]}/{g.key[1]}  {g.heading()}  ({p.workspace.path})"]
    lines.append(f"    members: {g.members_text()}")
    lines.append(f"    {model_line(p)}")
    lines.append(f"    each replica: {hardware_line(p, each=True)}")
    s = sizing_line(p)
    if s:
        lines.append(f"    {s}")
    lines.append(f"    cost: {g.cost_text()}")
    for problem in p.problems:
        lines.append(f"    problem: {problem}")
    return lines


def objects_line(diff: PlanDiff) -> str:
    return (
        f"{diff.object_count('create')} to create, {diff.object_count('update')} to change, "
        f"{diff.object_count('delete')} to delete"
    )


def _changed_objects(diff: PlanDiff, show_unchanged: bool = False) -> list[CompanionChange]:
    return [c for c in diff.objects if show_unchanged or c.action != "unchanged"]


def text(diff: PlanDiff, show_unchanged: bool = False, checks: Checks | None = None) -> str:
    out = [f"Plan: {summary_line(diff)}", ""]
    for c in grouped(diff, show_unchanged):
        out += _set_lines(c) if isinstance(c, SetChange) else _workspace_lines(c)
        out.append("")
    changed = _changed_objects(diff, show_unchanged)
    if changed:
        out += [f"Other objects: {objects_line(diff)}"]
        for c in changed:
            out.append(f"{OBJ_SIGN[c.action]} {key_text(c.key)}  ({c.path})")
            out += [f"    {line}" for line in c.diff.splitlines()]
        out.append("")
    out.append(checks_text(checks))
    return "\n".join(out).rstrip() + "\n"


def markdown_section(c: WorkspaceChange) -> str:
    """One workspace as a collapsible section (used by `plan --format markdown` and PR comments)."""
    p = c.after or c.before
    assert p is not None
    ns, name = c.key
    head = (
        f"<details><summary><code>{SIGN[c.action]}</code> <b>{ns}/{name}</b>: {c.action}, "
        f"{p.gpus} GPU, {money(p.price_per_hour)}/h</summary>\n\n"
    )
    body = [
        f"- {model_line(p)} (`{p.workspace.path}`)",
        f"- {hardware_line(p)}"
        + (f" (**{c.pool_action}**)" if c.pool_action not in ("none", "unchanged") else ""),
    ]
    s = sizing_line(p)
    if s:
        body.append(f"- {s}")
    if c.reasons:
        body.append(f"- **replaced** because: {', '.join(c.reasons)}")
    objs = [f"`{OBJ_SIGN[o.action]} {o.kind}/{o.name}`" for o in c.objects if o.action != "unchanged"]
    if objs:
        body.append(f"- objects: {', '.join(objs)}")
    for n in p.notes:
        body.append(f"- note: {n}")
    for problem in c.after.problems if c.after else ():
        body.append(f"- :warning: {problem}")
    if c.after is not None and c.after.command:
        body.append(f"\n```\n{shlex.join(c.after.command)}\n```")
    return head + "\n".join(body) + "\n\n</details>\n"


def set_markdown_section(g: SetChange) -> str:
    p = g.plan
    head = (
        f"<details><summary><code>{SIGN[g.action]}</code> <b>{g.key[0]}/{g.key[1]}</b>: {g.heading()}, "
        f"{g.cost_text()}</summary>\n\n"
    )
    body = [f"- members: {g.members_text()}", f"- {model_line(p)} (`{p.workspace.path}`)"]
    body.append(f"- each replica: {hardware_line(p, each=True)}")
    s = sizing_line(p)
    if s:
        body.append(f"- {s}")
    for problem in p.problems:
        body.append(f"- :warning: {problem}")
    return head + "\n".join(body) + "\n\n</details>\n"


def objects_markdown(diff: PlanDiff) -> str:
    """The other objects as one section: a line each, and a field-level diff for each change."""
    changed = _changed_objects(diff)
    if not changed:
        return ""
    out = [f"#### Other objects: {objects_line(diff)}", ""]
    for c in changed:
        out.append(f"- `{OBJ_SIGN[c.action]} {key_text(c.key)}` (`{c.path}`)")
        if c.diff:
            body = "".join(f"  {line}\n" for line in c.diff.splitlines())
            out.append(f"  <details><summary>diff</summary>\n\n  ```diff\n{body}  ```\n  </details>")
    return "\n".join(out) + "\n"


def markdown(diff: PlanDiff, checks: Checks | None = None) -> str:
    out = ["| workspace | change | GPUs | $/hour |", "| --- | --- | --- | --- |"]
    entries = grouped(diff)
    for c in entries:
        what = f" ({c.heading()})" if isinstance(c, SetChange) else ""
        out.append(
            f"| `{c.key[0]}/{c.key[1]}`{what} | {c.action} | {c.gpu_delta:+d} | {signed_money(c.cost_delta)} |"
        )
    parts = [f"**Plan:** {summary_line(diff)}", "", *out, ""]
    parts += [set_markdown_section(c) if isinstance(c, SetChange) else markdown_section(c) for c in entries]
    parts.append(objects_markdown(diff))
    if checks is not None:
        parts.append(checks_markdown(checks))
    return "\n".join(parts)


def _checks_dict(checks: Checks | None) -> dict | None:
    if checks is None:
        return None
    cap = checks.capacity
    return {
        "budgets": checks.budgets,
        "capacity": None
        if cap is None
        else {
            "location": cap.location,
            "families": [
                {
                    "family": n.family,
                    "neededVcpus": n.needed,
                    "freeVcpus": n.quota.free if n.quota else None,
                    "shortVcpus": n.short if n.quota else None,
                    "workspaces": [f"{k[0]}/{k[1]}" for k in n.workspaces],
                    "vcpusPerWorkspace": dict(
                        zip((f"{k[0]}/{k[1]}" for k in n.workspaces), n.vcpus, strict=True)
                    ),
                }
                for n in cap.families
            ],
            "problems": {f"{k[0]}/{k[1]}": v for k, v in sorted(cap.problems.items())},
            "unknown": cap.unknown,
        },
    }


def as_json(diff: PlanDiff, checks: Checks | None = None) -> str:
    def plan_dict(p: WorkspacePlan | None):
        if p is None:
            return None
        s = p.sizing
        return {
            "file": p.workspace.path,
            "kind": p.kind,
            "model": p.model.name if p.model else None,
            "instanceType": p.sku.name if p.sku else None,
            "nodes": p.nodes,
            "gpusPerNode": p.gpus_per_node,
            "gpus": p.gpus,
            "pricePerHour": p.price_per_hour,
            "nodePool": {
                "name": p.node_pool.name,
                "vmSize": p.node_pool.vm_size,
                "count": p.node_pool.count,
                "osDiskGB": p.node_pool.os_disk_gb,
                "osSKU": p.node_pool.os_sku,
            }
            if p.node_pool
            else None,
            "sizing": _slots_dict(s) if s is not None else None,
            "command": list(p.command),
            "objects": [f"{o['kind']}/{o['metadata']['name']}" for o in p.objects],
            "notes": list(p.notes),
            "problems": list(p.problems),
        }

    return json.dumps(
        {
            "summary": {
                "add": diff.count("add"),
                "change": diff.count("change"),
                "replace": diff.count("replace"),
                "remove": diff.count("remove"),
                "gpus": diff.after.gpus,
                "gpuDelta": diff.gpu_delta,
                "pricePerHour": diff.after.price_per_hour,
                "priceDelta": diff.cost_delta,
            },
            "workspaces": [
                {
                    "namespace": c.key[0],
                    "name": c.key[1],
                    "action": c.action,
                    "nodePool": c.pool_action,
                    "reasons": c.reasons,
                    "objects": [o.__dict__ for o in c.objects],
                    "before": plan_dict(c.before),
                    "after": plan_dict(c.after),
                }
                for c in diff.changes
            ],
            "objects": [
                {
                    "kind": c.key[0],
                    "namespace": c.key[1],
                    "name": c.key[2],
                    "action": c.action,
                    "file": c.path,
                    "diff": c.diff,
                }
                for c in diff.objects
            ],
            "checks": _checks_dict(checks),
        },
        indent=2,
        default=str,
    )


def _slots_dict(obj) -> dict:
    return {k: getattr(obj, k) for k in obj.__slots__}
