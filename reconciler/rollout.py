"""Rolling a changed InferenceSet template across its members, as a StatefulSet rolls its pods. Pure.

`spec.updateStrategy` is Kaito's (a StatefulSet's): under `RollingUpdate`, members from the
highest index down get the new template, at most `maxUnavailable` of the set's members not ready
at any time, and members below `partition` keep the old one. A member that does not become ready
stops the rollout there: the rest stay on the version they run, and the set's status says which
member it waits for. `OnDelete` changes no running member; new members get the new template.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WorkspaceKey = tuple[str, str]


@dataclass(frozen=True)
class Strategy:
    max_unavailable: int | str = 1  # a count, or a percentage of the replicas ("25%")
    partition: int = 0
    on_delete: bool = False


def strategy(spec: dict) -> Strategy:
    """The set's updateStrategy (the schema has checked its shape)."""
    us = spec.get("updateStrategy") if isinstance(spec.get("updateStrategy"), dict) else {}
    ru = us.get("rollingUpdate") if isinstance(us.get("rollingUpdate"), dict) else {}
    mu = ru.get("maxUnavailable", 1)
    part = ru.get("partition", 0)
    return Strategy(
        max_unavailable=mu if isinstance(mu, int | str) and not isinstance(mu, bool) else 1,
        partition=part if isinstance(part, int) and not isinstance(part, bool) else 0,
        on_delete=us.get("type") == "OnDelete",
    )


def most_unavailable(s: Strategy, replicas: int) -> int:
    """maxUnavailable as a number of members: a percentage rounds down, and is at least one."""
    mu = s.max_unavailable
    if isinstance(mu, str):
        text = mu.rstrip("%")
        n = int(text) if text.isdigit() else 1
        mu = replicas * n // 100 if mu.endswith("%") else n
    return max(1, mu)


@dataclass
class Rollout:
    plans: dict = field(default_factory=dict)  # member -> the plan it runs this pass (old or new)
    updated: int = 0  # members on the new template
    total: int = 0
    waiting: str = ""  # why it does not go on ('' when done or going)

    @property
    def done(self) -> bool:
        return self.updated == self.total


def roll(
    members: list[tuple[int, WorkspaceKey]],
    desired: dict,
    applied: dict,
    ready: set[WorkspaceKey],
    s: Strategy,
) -> Rollout:
    """What each member (index, key) runs this pass: `desired` where the rollout has reached it,
    the plan last `applied` where it has not. A member never applied gets the new template."""
    out = Rollout(total=len(members))

    def same(key) -> bool:
        return key not in applied or applied[key].objects == desired[key].objects

    pending = [
        (i, k)
        for i, k in sorted(members, reverse=True)
        if not same(k) and i >= s.partition and not s.on_delete
    ]
    budget = most_unavailable(s, len(members)) - sum(1 for _, k in members if k not in ready)
    go = {k for _, k in pending[: max(0, budget)]}
    for _, key in members:
        new = same(key) or key in go
        out.plans[key] = desired[key] if new else applied[key]
        out.updated += 1 if same(key) else 0
    if pending and not go:
        waiting = sorted(k[1] for _, k in members if k not in ready)
        out.waiting = f"waiting for {', '.join(waiting)} to be ready" if waiting else ""
    return out
