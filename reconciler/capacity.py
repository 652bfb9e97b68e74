"""Quota and region capacity before merge: will the node pools of a plan come up?

Pure: a plan diff and what Azure said (AzureFacts, read by provisioners/azure_facts.py) in,
one CapacityReport out. The two failures AKS users hit most are checked:

- QuotaExceeded: the vCPUs every added or grown pool needs in one VM family, together, against
  the family's free quota in the cluster's location. A workspace's own pool is already in the
  current usage, so only growth counts.
- SKUNotAvailable: a size not offered in the location, or restricted for this subscription in
  the location or in the zones the cluster's nodes run in; the report says where it is offered.

Anything Azure did not answer is "unknown", with why, and never stops a plan or a review.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .plandiff import PlanDiff
from .planning import WorkspacePlan
from .validation import WorkspaceKey


@dataclass(frozen=True)
class FamilyQuota:
    family: str
    current: int
    limit: int

    @property
    def free(self) -> int:
        return max(0, self.limit - self.current)


@dataclass(frozen=True)
class SkuOffer:
    name: str
    family: str
    vcpus: int
    zones: tuple[str, ...] = ()  # zones offered in the location
    restricted_zones: tuple[str, ...] = ()  # of those, not for this subscription
    restricted: bool = False  # not for this subscription anywhere in the location


@dataclass
class AzureFacts:
    location: str
    cluster_zones: tuple[str, ...] = ()
    quotas: dict[str, FamilyQuota] | None = None  # by lower-case family; None: unknown
    quota_unknown: str = ""
    offers: dict[str, SkuOffer] | None = None  # by lower-case size, in the location; None: unknown
    offers_unknown: str = ""
    elsewhere: dict[str, list[tuple[str, tuple[str, ...]]]] = field(
        default_factory=dict
    )  # size -> [(location, zones)]


@dataclass(frozen=True)
class FamilyNeed:
    family: str
    needed: int  # vCPUs the revision adds in this family
    quota: FamilyQuota | None
    workspaces: tuple[WorkspaceKey, ...]
    vcpus: tuple[int, ...] = ()  # what each of `workspaces` adds

    @property
    def short(self) -> int:
        return max(0, self.needed - self.quota.free) if self.quota else 0


@dataclass
class CapacityReport:
    location: str
    families: list[FamilyNeed] = field(default_factory=list)
    problems: dict[WorkspaceKey, list[str]] = field(default_factory=dict)  # will fail as planned
    unknown: list[str] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        return bool(self.problems)


def _names(plan: WorkspacePlan) -> list[str]:
    """The size as AKS gets it first, then the catalog's name and aliases (Azure lists one of them)."""
    assert plan.sku is not None and plan.node_pool is not None
    return [plan.node_pool.vm_size, plan.sku.name, *plan.sku.aliases]


def _offer(plan: WorkspacePlan, offers: dict[str, SkuOffer] | None) -> SkuOffer | None:
    for n in _names(plan):
        if o := (offers or {}).get(n.lower()):
            return o
    return None


def _vcpus(plan: WorkspacePlan, offers: dict[str, SkuOffer] | None) -> tuple[str, int]:
    """(family, vCPUs per node) of the plan's size: the live SKU list first, then presets/gpus.yaml."""
    assert plan.sku is not None
    offer = _offer(plan, offers)
    if offer and offer.family and offer.vcpus:
        return offer.family, offer.vcpus
    return plan.sku.family, plan.sku.vcpus


def _provisioned(plan: WorkspacePlan | None) -> bool:
    return plan is not None and plan.provisioned and plan.node_pool is not None and plan.sku is not None


def _where(elsewhere: list[tuple[str, tuple[str, ...]]]) -> str:
    if not elsewhere:
        return "no other region this subscription can use"
    parts = [f"{loc} (zones {', '.join(z)})" if z else loc for loc, z in elsewhere[:8]]
    more = f" and {len(elsewhere) - 8} more" if len(elsewhere) > 8 else ""
    return ", ".join(parts) + more


def _offer_problem(plan: WorkspacePlan, facts: AzureFacts) -> str | None:
    if facts.offers is None:
        return None
    offer = _offer(plan, facts.offers)
    size = _names(plan)[0]
    elsewhere = next((x for n in _names(plan) if (x := facts.elsewhere.get(n.lower()))), [])
    where = _where(elsewhere)
    if offer is None:
        return f"{size} is not offered in {facts.location}; it is offered in: {where}"
    if offer.restricted:
        return f"{size} is restricted for this subscription in {facts.location}; it is offered in: {where}"
    usable = [z for z in offer.zones if z not in offer.restricted_zones]
    if facts.cluster_zones and offer.zones:
        blocked = [z for z in facts.cluster_zones if z not in usable]
        if blocked and len(blocked) == len(facts.cluster_zones):
            here = (
                f"{facts.location} zone(s) {', '.join(usable)}" if usable else f"no zone of {facts.location}"
            )
            return (
                f"{size} is not available for this subscription in zone(s) {', '.join(blocked)} of "
                f"{facts.location}, where the cluster's nodes run; it is offered in {here}, and in: {where}"
            )
    return None


def check(diff: PlanDiff, facts: AzureFacts) -> CapacityReport:
    report = CapacityReport(facts.location)
    if facts.quotas is None and facts.quota_unknown:
        report.unknown.append(f"quota unknown: {facts.quota_unknown}")
    if facts.offers is None and facts.offers_unknown:
        report.unknown.append(f"region capacity unknown: {facts.offers_unknown}")
    grows: dict[str, list[tuple[str, WorkspaceKey, int]]] = {}  # family (lower) -> (name, who, vCPUs)
    for c in diff.changes:
        after = c.after
        if c.action in ("remove", "unchanged") or not _provisioned(after):
            continue
        assert after is not None and after.sku is not None
        if problem := _offer_problem(after, facts):
            report.problems.setdefault(c.key, []).append(problem)
        family, per_node = _vcpus(after, facts.offers)
        if not family or not per_node:
            continue
        have = 0
        if _provisioned(c.before):
            assert c.before is not None
            before_family, before_per_node = _vcpus(c.before, facts.offers)
            if before_family.lower() == family.lower():
                have = c.before.nodes * before_per_node
        grow = after.nodes * per_node - have
        if grow <= 0:
            continue
        grows.setdefault(family.lower(), []).append((family, c.key, grow))
    for fam, items in sorted(grows.items()):
        name, keys, each = items[0][0], tuple(k for _, k, _ in items), tuple(g for *_, g in items)
        # a family the usages do not list has no quota granted in this location
        quota = None if facts.quotas is None else facts.quotas.get(fam, FamilyQuota(name, 0, 0))
        need = FamilyNeed(name, sum(each), quota, keys, each)
        report.families.append(need)
        if quota is not None and need.short:
            for k in keys:
                report.problems.setdefault(k, []).append(
                    f"this will fail with QuotaExceeded: the revision needs {need.needed} vCPUs of "
                    f"{name} in {facts.location} and {quota.free} are free "
                    f"({quota.current} of {quota.limit} used); ask for {need.short} more "
                    "(Azure portal: Quotas > Compute) or choose another size"
                )
    return report


def text_lines(report: CapacityReport) -> list[str]:
    """The plan's 'Quota and capacity' lines (plain text; markdown adds its own marks)."""
    lines = []
    for need in report.families:
        if need.quota is None:
            lines.append(f"{need.family}: needs {need.needed} vCPUs in {report.location}; quota unknown")
            continue
        verdict = f"SHORT by {need.short}" if need.short else "fits"
        lines.append(
            f"{need.family}: needs {need.needed} vCPUs in {report.location}, {need.quota.free} free "
            f"({need.quota.current}/{need.quota.limit} used): {verdict}"
        )
        lines += [f"  {k[0]}/{k[1]}: +{n} vCPUs" for k, n in zip(need.workspaces, need.vcpus, strict=True)]
    for (ns, name), problems in sorted(report.problems.items()):
        for p in problems:
            lines.append(f"{ns}/{name}: {p}")
    lines += report.unknown
    return lines


def sizes(diff: PlanDiff) -> list[tuple[str, ...]]:
    """The VM sizes the plan's added or changed node pools ask AKS for, each with its other names."""
    return sorted(
        {
            tuple(_names(c.after))
            for c in diff.changes
            if c.action not in ("remove", "unchanged") and c.after is not None and _provisioned(c.after)
        }
    )
