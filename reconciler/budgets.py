"""Budgets: the spending caps of `.kaito-gitops.yaml`, and which workspaces would cross them.

Pure: a settings document and planned states in, findings out. A revision that crosses a cap
gets two errors, one at the cap's line in the settings file and one at each workspace that
crosses it, so `validate`, the pull-request check and the daemon all say where to look.

Which workspace "crosses" is decided the way the daemon applies a revision: workspaces that did
not change keep counting what they use; changed or new ones are added in order (those that
shrink first, then by file path), and one that takes a cap over it is held at its previous
version (or not created). What is applied therefore never exceeds a cap that held before.
"""

from __future__ import annotations

from dataclasses import dataclass

from .findings import Finding, Severity
from .loading import Document
from .planning import DesiredState, WorkspacePlan
from .validation import Revision, WorkspaceKey

__all__ = ["Budgets", "Cap", "check", "crossed_by", "from_revision", "hold", "usage_lines"]
HOURS_PER_MONTH = 730  # Azure's pricing calculator month


@dataclass(frozen=True)
class Cap:
    scope: str  # "total" or a namespace
    price_per_hour: float | None
    gpus: int | None
    path: str
    line: int
    col: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def covers(self, key: WorkspaceKey) -> bool:
        return self.scope == "total" or key[0] == self.scope

    @property
    def label(self) -> str:
        return "the total budget" if self.scope == "total" else f"the budget of namespace {self.scope}"


@dataclass(frozen=True)
class Budgets:
    path: str
    caps: tuple[Cap, ...]


def read_budgets(doc: Document) -> Budgets:
    """The caps of a settings document that passed its schema check."""
    data = doc.data if isinstance(doc.data, dict) else {}
    budgets = data.get("budgets") or {}
    caps: list[Cap] = []

    def cap(scope: str, raw: dict, at: tuple) -> None:
        line, col = doc.positions.key(at)
        caps.append(Cap(scope, raw.get("pricePerHour"), raw.get("gpus"), doc.path, line, col))

    if isinstance(budgets.get("total"), dict):
        cap("total", budgets["total"], ("budgets", "total"))
    for ns, raw in sorted((budgets.get("namespaces") or {}).items()):
        if isinstance(raw, dict):
            cap(ns, raw, ("budgets", "namespaces", ns))
    return Budgets(doc.path, tuple(caps))


def from_revision(rev: Revision) -> Budgets | None:
    return read_budgets(rev.settings) if rev.settings is not None else None


def hold(rev: Revision, state: DesiredState, before: DesiredState | None = None) -> list[Finding]:
    """Check the revision's budgets; a workspace that crosses one gets an error (so it is not
    applied: the daemon keeps its last good version) and leaves `state`. Returns the findings at
    the crossed caps, one per cap."""
    at_caps, at_workspaces = check(from_revision(rev), state, before)
    rev.file_findings.extend(at_caps)
    by_key = rev.by_key()
    for key, found in at_workspaces.items():
        rev.workspace_findings.setdefault(id(by_key[key]), []).extend(found)
        state.plans.pop(key, None)
    return at_caps


def _use(plan: WorkspacePlan | None) -> tuple[int, float]:
    if plan is None:
        return 0, 0.0
    return plan.gpus, plan.price_per_hour or 0.0


def crossed_by(budgets: Budgets | None, plans: dict[WorkspaceKey, WorkspacePlan], extra: WorkspacePlan):
    """The first cap that `extra` (a member the autoscaler would add) takes over, beside `plans`."""
    for cap in budgets.caps if budgets else ():
        if not cap.covers(extra.key):
            continue
        gpus, price = _use(extra)
        for key, plan in plans.items():
            if cap.covers(key):
                g, p = _use(plan)
                gpus, price = gpus + g, price + p
        if (cap.gpus is not None and gpus > cap.gpus) or (
            cap.price_per_hour is not None and price > cap.price_per_hour + 1e-9
        ):
            return cap
    return None


def _money(v: float) -> str:
    return f"${v:,.2f}"


def crossings(budgets: Budgets | None, after: DesiredState, before: DesiredState | None = None) -> dict:
    """{cap: (keys that cross it, in order; (gpus, $/h) with every change)} for crossed caps."""
    out: dict[Cap, tuple[list[WorkspaceKey], tuple[int, float]]] = {}
    if budgets is None:
        return out
    old = before.plans if before is not None else {}
    for cap in budgets.caps:
        keys = sorted(k for k in after.plans if cap.covers(k))
        changed = [k for k in keys if _use(after.plans[k]) != _use(old.get(k))]
        gpus = sum(_use(after.plans[k])[0] for k in keys if k not in changed)
        price = sum(_use(after.plans[k])[1] for k in keys if k not in changed)
        gpus += sum(_use(old.get(k))[0] for k in changed)
        price += sum(_use(old.get(k))[1] for k in changed)

        def delta(k: WorkspaceKey) -> tuple[int, float]:
            (ga, pa), (gb, pb) = _use(after.plans[k]), _use(old.get(k))
            return ga - gb, pa - pb

        order = sorted(changed, key=lambda k: (sum(delta(k)) > 0, after.plans[k].workspace.path, k))
        crossed: list[WorkspaceKey] = []
        for k in order:
            dg, dp = delta(k)
            over_gpus = cap.gpus is not None and gpus + dg > cap.gpus and dg > 0
            over_price = cap.price_per_hour is not None and price + dp > cap.price_per_hour + 1e-9 and dp > 0
            if over_gpus or over_price:
                crossed.append(k)  # held: its previous use stays counted
                continue
            gpus, price = gpus + dg, price + dp
        if crossed:
            total_gpus = sum(_use(after.plans[k])[0] for k in keys)
            total_price = sum(_use(after.plans[k])[1] for k in keys)
            out[cap] = (crossed, (total_gpus, round(total_price, 3)))
    return out


def _limit_text(cap: Cap) -> str:
    parts = []
    if cap.price_per_hour is not None:
        parts.append(f"{_money(cap.price_per_hour)}/h")
    if cap.gpus is not None:
        parts.append(f"{cap.gpus} GPU(s)")
    return " and ".join(parts)


def check(budgets: Budgets | None, after: DesiredState, before: DesiredState | None = None):
    """(findings at the caps' lines, {workspace key: findings at its file}) for every crossing."""
    at_caps: list[Finding] = []
    at_workspaces: dict[WorkspaceKey, list[Finding]] = {}
    for cap, (keys, (gpus, price)) in crossings(budgets, after, before).items():
        names = ", ".join(f"{after.plans[k].workspace.path} ({k[0]}/{k[1]})" for k in keys)
        at_caps.append(
            Finding(
                cap.path,
                cap.line,
                cap.col,
                Severity.ERROR,
                "budget-exceeded",
                f"{cap.label} ({_limit_text(cap)}) is crossed: the revision plans {gpus} GPU(s), "
                f"{_money(price)}/h; crossed by {names}. Raise the budget here or shrink the workspace(s)",
                "budgets." + (cap.scope if cap.scope == "total" else f"namespaces.{cap.scope}"),
            )
        )
        for k in keys:
            plan = after.plans[k]
            g, p = _use(plan)
            at_workspaces.setdefault(k, []).append(
                plan.workspace.document.finding(
                    ("resource",)
                    if "resource" in (plan.workspace.document.data or {})
                    else ("metadata", "name"),
                    "budget-exceeded",
                    f"this workspace ({g} GPU(s), {_money(p)}/h) takes {cap.label} over its "
                    f"{_limit_text(cap)} (set at {cap.where}); the daemon keeps its last good version "
                    "until the budget is raised in git",
                    at_key=True,
                )
            )
    return at_caps, at_workspaces


def usage_lines(budgets: Budgets | None, state: DesiredState) -> list[str]:
    """'namespace team-a: 8 of 16 GPUs, $29.38/h of $40.00/h' for every cap."""
    if budgets is None:
        return []
    lines = []
    for cap in budgets.caps:
        plans = [p for k, p in state.plans.items() if cap.covers(k)]
        gpus = sum(p.gpus for p in plans)
        price = sum(p.price_per_hour or 0 for p in plans)
        parts = []
        if cap.gpus is not None:
            parts.append(f"{gpus} of {cap.gpus} GPU(s)")
        if cap.price_per_hour is not None:
            parts.append(f"{_money(price)}/h of {_money(cap.price_per_hour)}/h")
        name = "total" if cap.scope == "total" else f"namespace {cap.scope}"
        over = (cap.gpus is not None and gpus > cap.gpus) or (
            cap.price_per_hour is not None and price > cap.price_per_hour + 1e-9
        )
        lines.append(f"{name}: {', '.join(parts)}" + (" (over budget)" if over else ""))
    return lines
