"""Eval previews in the cluster (`--preview-target kubernetes`, docs/evals.md).

The head's workspaces that the suites name are deployed in a namespace of the pull request's own,
`pr-<number>`, on node pools of their own, and the suites run against them and against the
workspaces deployed now (the base: what merging changes from; no second deployment of it is paid
for). The cost is in the comment before anything starts, and a preview is refused while it would
take more previews or more $/hour than the caps allow. A preview stays up for the next push
(nodes take minutes to come) until the pull request is merged or closed, or `ttl` after its last
push; the namespace carries its expiry, so a restarted daemon still tears it down on time.

Previews take no companion objects: a workspace that mounts a PVC or names a Secret is not
previewed (it would need data or credentials copied into the preview namespace).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, replace

import structlog

from ..companions import references
from ..planning import DesiredState, WorkspacePlan, plan_workspace
from ..planview import money
from ..render.common import LABEL_PREVIEW, RenderSettings
from ..render.nodepool import TAG_PREVIEW
from .preview import PreviewJob, PreviewOutcome, outcome_of, revisions

log = structlog.get_logger("kaito_gitops.preview")


def _span(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


BASE_WAIT = 30.0  # seconds a deployed workspace may take to look ready (the next refresh)


@dataclass(frozen=True)
class Caps:
    ttl: float = 3600.0  # seconds after the last push
    max_previews: int = 2  # preview namespaces at once
    max_price_per_hour: float = 10.0  # every preview's node pools together


def over_caps(live: dict, number: int, price: float, caps: Caps) -> str:
    """Why pull request `number`'s preview at `price` $/h may not run beside the `live` ones
    ({number: LivePreview}), or ''."""
    up = {n: p for n, p in live.items() if not p.terminating and n != number}
    if number not in live and len(up) >= caps.max_previews:
        names = ", ".join(f"pr-{n}" for n in sorted(up))
        return (
            f"not previewed: {len(up)} preview(s) run in the cluster already ({names}), as many as "
            f"--preview-max allows; push again once one ends (merge, close or its TTL)"
        )
    running = sum(p.price_per_hour for p in up.values())
    if price + running > caps.max_price_per_hour:
        return (
            f"not previewed: it needs {money(price)}/h and the previews up now {money(running)}/h, "
            f"over --preview-max-price {money(caps.max_price_per_hour)}/h"
        )
    return ""


_GUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")


def _labelled(obj: dict, number: int) -> dict:
    """A rendered object marked as pull request `number`'s preview (its pods too)."""
    obj = {**obj, "metadata": {**obj["metadata"]}}
    obj["metadata"]["labels"] = {**obj["metadata"].get("labels", {}), LABEL_PREVIEW: str(number)}
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict):
        md = template.get("metadata") or {}
        obj["spec"] = {
            **obj["spec"],
            "template": {
                **template,
                "metadata": {**md, "labels": {**md.get("labels", {}), LABEL_PREVIEW: str(number)}},
            },
        }
    return obj


def preview_plan(
    plan: WorkspacePlan, namespace: str, number: int, configmaps: dict, settings: RenderSettings, catalog
) -> WorkspacePlan:
    """`plan`'s workspace planned again in the preview namespace, marked as the preview's."""
    ws = replace(plan.workspace, namespace=namespace)
    moved = {(namespace, n): cm for (ns, n), cm in configmaps.items() if ns == plan.workspace.namespace}
    p = plan_workspace(ws, catalog=catalog, configmaps=moved, settings=settings)
    pool = p.node_pool
    if pool is not None:
        pool = replace(pool, tags={**pool.tags, TAG_PREVIEW: str(number)})
    return replace(p, objects=tuple(_labelled(o, number) for o in p.objects), node_pool=pool)


@dataclass
class Prepared:
    base_rev: object
    head_rev: object
    base_state: DesiredState
    head_state: DesiredState  # keyed by the repository's workspace keys, planned in pr-<number>
    suites: list
    skipped: list[str]

    @property
    def price_per_hour(self) -> float:
        return sum(p.price_per_hour or 0 for p in self.head_state.plans.values() if p.node_pool is not None)

    def pools(self) -> str:
        parts = [
            f"{p.nodes} × {p.node_pool.vm_size}"
            for p in self.head_state.plans.values()
            if p.node_pool is not None
        ]
        return ", ".join(parts) or "your own nodes (no node pool of its own)"


class ClusterPreviewer:
    """The previewer `PreviewRunner` drives for `--preview-target kubernetes`. Everything but
    `describe` runs on the runner's one worker thread."""

    def __init__(
        self,
        api_client,
        provisioner,
        *,
        render: RenderSettings | None = None,
        caps: Caps | None = None,
        namespace: str = "default",
        policy=None,
        byo_nodes: bool = False,
        timeout: float = 1800.0,
        reach: str = "service",
        refresh_every: float = 5.0,
        clock=time.time,
        deployed=None,
    ):
        """`deployed`: the daemon's own KubernetesTarget, read (never refreshed) for the base;
        without it, one of our own that lists the cluster while a base is asked."""
        from ..targets.kubernetes import PREVIEW_SELECTOR, KubernetesTarget
        from ..targets.preview_cluster import PreviewNamespaces

        self.api_client = api_client
        self.target = KubernetesTarget(api_client, selector=PREVIEW_SELECTOR)  # the previews' objects
        self.deployed = deployed or KubernetesTarget(api_client)
        self._refresh_deployed = deployed is None
        self.provisioner = provisioner
        self.namespaces = PreviewNamespaces(api_client)
        self.render = render or RenderSettings()
        self.caps = caps or Caps()
        self.namespace, self.policy, self.byo_nodes = namespace, policy, byo_nodes
        self.timeout, self.reach, self.refresh_every = timeout, reach, refresh_every
        self.clock = clock
        self._described: tuple[PreviewJob, Prepared] | None = None  # describe's work, for run
        self._job: PreviewJob | None = None  # the one running
        self._cancelled = threading.Event()
        self._stages: list = []

    # -- before it starts -------------------------------------------------------------------------
    def prepare(self, job: PreviewJob) -> Prepared:
        from ..catalog import load_catalog
        from ..planning import plan_revision
        from ..targets.preview_cluster import is_preview_namespace, preview_namespace

        base_rev, head_rev = revisions(job, self.namespace, "kubernetes", self.byo_nodes, self.policy)
        base_state, planned = plan_revision(base_rev), plan_revision(head_rev)
        settings = replace(self.render, revision=job.head_sha[:12])
        catalog, ns = load_catalog(), preview_namespace(job.number)
        head_state = DesiredState()
        taken: dict[str, tuple[str, str]] = {}  # name in the preview namespace -> workspace
        runnable, skipped = [], []
        for s in (s for s in head_rev.suites if s.name in job.suites and s.valid):
            why = ""
            for key in s.workspaces:
                plan = planned.plans.get(key)
                if plan is None or plan.kind != "inference":
                    continue  # run_suites reports it as the suite's error
                refs = [r for r in references(plan.workspace) if r.field != ("inference", "config")]
                if refs:
                    r = refs[0]
                    why = (
                        f"{key[1]} uses {r.kind} {r.name} ({'.'.join(map(str, r.field))}), which a preview "
                        "namespace does not have"
                    )
                elif is_preview_namespace(key[0]):
                    why = f"{key[0]}/{key[1]} lives in a namespace named like a preview's; previews leave it alone"
                elif taken.get(key[1], key) != key:
                    other = taken[key[1]]
                    why = f"{key[0]}/{key[1]} and {other[0]}/{other[1]} would share the name {key[1]} in {ns}"
                elif plan.problems:
                    why = f"{key[1]}: {plan.problems[0]}"
                if why:
                    break
                taken[key[1]] = key
                if key not in head_state.plans:
                    head_state.plans[key] = preview_plan(
                        plan, ns, job.number, head_rev.configmaps, settings, catalog
                    )
            if why:
                skipped.append(f"`{s.name}`: {why}")
            else:
                runnable.append(s)
        wanted = {k for s in runnable for k in s.workspaces}
        head_state.plans = {k: p for k, p in head_state.plans.items() if k in wanted}
        return Prepared(base_rev, head_rev, base_state, head_state, runnable, skipped)

    def describe(self, job: PreviewJob) -> tuple[str, str]:
        prep = self.prepare(job)
        self._described = (job, prep)  # run() takes it from here: the revisions are read once
        price = prep.price_per_hour
        ttl = _span(self.caps.ttl)
        where = (
            f"deployed in namespace `pr-{job.number}` of the cluster on {prep.pools()} at "
            f"{money(price)}/h, kept until the pull request is merged or closed or {ttl} after its "
            f"last push (at most {money(price * self.caps.ttl / 3600)} a push); the base is the "
            "workspaces deployed now"
        )
        return where, over_caps(self.namespaces.live(), job.number, price, self.caps) if prep.suites else ""

    # -- the preview --------------------------------------------------------------------------------
    def run(self, job: PreviewJob) -> PreviewOutcome:
        self._job = job
        self._cancelled.clear()
        try:
            return self._scrubbed(self._run(job))
        finally:
            self._job, self._stages = None, []

    def _run(self, job: PreviewJob) -> PreviewOutcome:
        from ..evalcmd import run_suites
        from ..targets.preview_cluster import ClusterStage, DeployedStage, preview_namespace

        described, self._described = self._described, None
        prep = described[1] if described is not None and described[0] is job else self.prepare(job)
        ns = preview_namespace(job.number)
        if not prep.suites:
            return outcome_of(job, [], [], prep.skipped, 0.0, not_here="in the cluster")
        refusal = over_caps(self.namespaces.live(), job.number, prep.price_per_hour, self.caps)
        if refusal:
            return PreviewOutcome(job, "error", refusal[:140], f"### Eval :warning:\n\n{refusal}.\n")
        if self._cancelled.is_set():
            return _superseded(job)
        self.namespaces.ensure(job.number, self.clock() + self.caps.ttl, prep.price_per_hour)
        self._remove(ns, keep={p.key for p in prep.head_state.plans.values()})
        say = lambda text: log.info("eval preview: " + text, pr=job.number)  # noqa: E731
        log.info("eval preview", pr=job.number, namespace=ns, suites=[s.name for s in prep.suites])
        t0 = time.perf_counter()
        base_stage = DeployedStage(
            self.deployed, self.reach, self.refresh_every, refresh=self._refresh_deployed
        )
        head_stage = ClusterStage(self.target, self.provisioner, ns, self.reach, self.refresh_every)
        self._stages = [base_stage, head_stage]
        if self._cancelled.is_set():
            return _superseded(job)
        # the base is what serves now: ready or not, waiting would not make it so
        http = head_stage.http_options()
        base = run_suites(prep.base_rev, prep.base_state, prep.suites, base_stage, BASE_WAIT, say, http)
        head = run_suites(prep.head_rev, prep.head_state, prep.suites, head_stage, self.timeout, say, http)
        seconds = time.perf_counter() - t0
        log.info("eval preview done", pr=job.number, seconds=round(seconds, 1))
        ran = (
            f"against the workspaces deployed now (base) and `{job.head_sha[:12]}` (head) in namespace "
            f"`{ns}` of the cluster ({prep.pools()}, {money(prep.price_per_hour)}/h until merge, close "
            f"or {_span(self.caps.ttl)} from now)"
        )
        return outcome_of(job, head, base, prep.skipped, seconds, ran=ran, not_here="in the cluster")

    def _remove(self, ns: str, keep: set = frozenset()) -> None:
        """The workloads in `ns` but `keep`, and their pools: a push that previews fewer
        workspaces, or a teardown (keep nothing)."""
        self.target.refresh()
        for key in [k for k in self.target.live_workspaces() if k[0] == ns and k not in keep]:
            self.target.remove(key)
            log.info("eval preview: workload removed", workspace=f"{key[0]}/{key[1]}")
        self.provisioner.refresh()
        for key in sorted(k for k in self.provisioner.owned() if k[0] == ns and k not in keep):
            self.provisioner.release(key)

    def _scrubbed(self, outcome: PreviewOutcome) -> PreviewOutcome:
        """Pull-request comments may be public: no API server address, no subscription ids."""
        host = (self.api_client.configuration.host or "").rstrip("/")

        def scrub(text: str) -> str:
            text = text.replace(host, "<api-server>") if host else text
            return _GUID.sub("<id>", text)

        return replace(outcome, section=scrub(outcome.section), description=scrub(outcome.description))

    def cancel(self, job: PreviewJob | None = None) -> None:
        """A newer push (or a close) supersedes `job`: if it is the one running, its waits end
        and no more cases are asked; what is deployed stays for the next run to update in place."""
        if job is not None and job is not self._job:
            return
        self._cancelled.set()
        for stage in self._stages:
            stage.stopped = "superseded by a newer push"

    def stop(self) -> None:
        self._cancelled.set()
        for stage in self._stages:
            stage.stopped = "the daemon is stopping"

    # -- teardown -----------------------------------------------------------------------------------
    def forget(self, number: int) -> None:
        """Merged or closed: the workloads and their pools, then the namespace."""
        preview = self.namespaces.live().get(number)
        if preview is not None and not preview.terminating:
            self._teardown(preview, "the pull request was merged or closed")

    def _teardown(self, preview, why: str) -> None:
        from ..targets.preview_cluster import preview_namespace

        ns = preview_namespace(preview.number)
        self._remove(ns)
        if self._refresh_deployed:
            self.deployed.refresh()
        ours = [k for k in self.deployed.live_workspaces() if k[0] == ns]
        if ours:  # the daemon put workspaces of the repository there since: the namespace stays
            log.warning("eval preview namespace holds deployed workspaces; not deleted", namespace=ns)
        else:
            self.namespaces.delete(preview)
        log.info("eval preview torn down", pr=preview.number, namespace=ns, why=why)

    def upkeep(self) -> None:
        """Tear down previews past their expiry; release pools whose preview namespace is gone
        (a teardown cut short, a namespace deleted by hand). Pool deletion takes minutes: each
        round moves it on."""
        from ..targets.preview_cluster import preview_namespace

        now, up = self.clock(), set()
        for preview in self.namespaces.live().values():
            if preview.terminating:
                continue
            if preview.expires_at is not None and preview.expires_at <= now:
                self._teardown(preview, "its time to live ran out")
            else:
                up.add(preview_namespace(preview.number))
        self.provisioner.refresh()
        for key in sorted(self.provisioner.owned()):
            if key[0] not in up:
                self.provisioner.release(key)


def _superseded(job: PreviewJob) -> PreviewOutcome:
    return PreviewOutcome(
        job, "error", "superseded by a newer push", "### Eval\n\nSuperseded by a newer push.\n"
    )
