"""The reconcile loop: source -> load -> validate -> plan -> provision + apply -> status.

Level-triggered and idempotent. Each pass reads the branch head (fetching only when it
moved), re-plans only when the revision changed, takes one snapshot of the target and the
node provider, and hands every workspace to a pool of workers that compare desired with
live and do only what differs. Long operations (node pools) are started and observed on
later passes. A workspace that fails keeps its last good state and backs off on its own;
it never blocks the others.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog

from . import budgets, inferenceset, kinds
from .autoscale import SetScale
from .catalog import Sku, load_catalog, sku_from_gpu_labels
from .companions import ObjectKey
from .findings import Finding
from .logs import error_text
from .metrics import Metrics
from .objectsync import ObjectReport, ObjectSync
from .planning import DesiredState, WorkspacePlan, plan_cache_key, plan_revision, plan_workspace
from .provisioners.base import Provisioner
from .provisioners.none import byo_label_problem
from .render.common import RenderSettings
from .rollout import Rollout, roll
from .source.git import GitSource, SourceError
from .status import (
    Condition,
    Observation,
    ResourceStatus,
    WorkspaceStatus,
    carry_times,
    derive,
    failed_status,
    waiting_status,
)
from .targets.base import Target
from .validation import Revision, validate_sources, with_settings

log = structlog.get_logger("kaito_gitops.daemon")

WorkspaceKey = tuple[str, str]


@dataclass
class DaemonSettings:
    paths: list[str] = field(default_factory=lambda: [""])  # folders inside the repository ("" = all)
    namespace: str = "default"
    interval: float = 60.0
    jitter: float = 0.1  # +-10 % on the polling interval, so replicas and repos spread out
    workers: int = 8
    backoff_min: float = 1.0
    backoff_max: float = 600.0
    allow_empty_prune: bool = False
    max_file_bytes: int = 1024 * 1024
    target_name: str = "kubernetes"
    policy: kinds.ObjectPolicy = field(default_factory=kinds.ObjectPolicy)  # which other objects to apply


@dataclass
class WorkspaceReport:
    """What the reporters (status commits, PR comments) need about one workspace."""

    key: WorkspaceKey
    path: str
    revision: str
    kind: str
    instance_type: str
    status: WorkspaceStatus
    errors: list[Finding] = field(default_factory=list)
    gpus: int = 0
    nodes: int = 0
    applied_revision: str = ""
    # list price of its node pool while one exists (AKS bills from then on, ready or not, until it is
    # deleted); None: no pool of ours (not yet, bring-your-own nodes, or the local target)
    price_per_hour: float | None = None
    # the eval suites' figures against its endpoint, after merge (evals/deployed.py); status entries
    evals: tuple = ()


def spend(reports: list[WorkspaceReport]) -> dict[str, tuple[int, float]]:
    """namespace -> (GPUs, $/hour) of the node pools we provisioned that exist now, at list price."""
    out: dict[str, tuple[int, float]] = {}
    for r in reports:
        if r.price_per_hour is None:
            continue
        gpus, price = out.get(r.key[0], (0, 0.0))
        out[r.key[0]] = (gpus + r.gpus, round(price + r.price_per_hour, 3))
    return out


@dataclass
class PassResult:
    revision: str
    changed: bool  # the revision moved since the last pass
    writes: int = 0
    errors: dict[WorkspaceKey, str] = field(default_factory=dict)
    skipped: list[WorkspaceKey] = field(default_factory=list)  # in backoff
    removed: list[WorkspaceKey] = field(default_factory=list)
    held: list[WorkspaceKey] = field(default_factory=list)  # not pruned on purpose
    seconds: float = 0.0
    reports: list[WorkspaceReport] = field(default_factory=list)  # status after the pass, built once
    object_writes: int = 0  # of `writes`, those on companion objects
    objects: list[ObjectReport] = field(default_factory=list)
    objects_held: list[ObjectKey] = field(default_factory=list)  # not pruned: the prune guard


def autoscaled(validated: Revision) -> list:
    """The InferenceSets the autoscaler may scale: bounds apart, and no error held."""
    return [
        s
        for s in validated.inference_sets
        if s.name and not s.scaling.fixed and s.key not in validated.held_sets
    ]


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Daemon:
    def __init__(
        self,
        source: GitSource,
        target: Target,
        provisioner: Provisioner,
        settings: DaemonSettings,
        render: RenderSettings | None = None,
        metrics: Metrics | None = None,
    ):
        self.source = source
        self.target = target
        self.provisioner = provisioner
        self.settings = settings
        self.render = render or RenderSettings()
        self.metrics = metrics or Metrics()
        self.revision = ""  # the revision loaded: what workspaces, plans and status are about
        self.head = ""  # the branch head last seen; ahead of `revision` by our own status commits
        self.validated: Revision | None = None
        self.desired: dict[WorkspaceKey, WorkspacePlan] = {}
        self.last_good: dict[WorkspaceKey, WorkspacePlan] = {}
        self.present: set[WorkspaceKey] = set()  # keys with a Workspace document (valid or not)
        self.findings: dict[WorkspaceKey, list[Finding]] = {}
        self.statuses: dict[WorkspaceKey, WorkspaceStatus] = {}
        self.applied_revision: dict[WorkspaceKey, str] = {}
        self._backoff: dict[WorkspaceKey, tuple[int, float]] = {}
        self._global_failures = 0
        self._trigger = threading.Event()
        self._stop = threading.Event()
        self.last_pass: PassResult | None = None
        self.heartbeat = time.monotonic()
        self.synced = threading.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, settings.workers), thread_name_prefix="reconcile"
        )
        self.on_pass: list = []  # callbacks(daemon, PassResult), e.g. the status reporter
        self.ignore_prefixes: list[str] = []  # our own status commits live here; they are not reconciled
        self._removing: set[WorkspaceKey] = set()  # teardown started, nodes not yet released
        self._leaving: dict[WorkspaceKey, WorkspacePlan] = {}  # removed from git, teardown not finished
        self._validation_cache: dict = {}  # parse + schema results by (path, content)
        self._plan_cache: dict = {}  # plans by everything they depend on but the revision
        self._byo_skus: dict[WorkspaceKey, Sku] = {}  # bring-your-own GPUs, as their node labels say
        # why workspaces left the repository, as git tells it: "deleted" -> the commit range that
        # deleted the file; "moved" -> the path it moved to, outside the watched folders
        self._deleted_in_git: dict[WorkspaceKey, str] = {}
        self._moved_out: dict[WorkspaceKey, str] = {}
        self.objects = ObjectSync()  # the other objects of the watched folders (objectsync.py)
        self.evals: dict[WorkspaceKey, tuple] = {}  # suites' figures per workspace (evals/deployed.py)
        # InferenceSets the autoscaler scales (scaler.py): the members each runs now, and what the
        # autoscaler has asked for since (applied at the start of the next pass, on this thread)
        self.set_counts: dict[tuple[str, str], int] = {}
        self._asked_counts: dict[tuple[str, str], int] = {}
        self._counts_lock = threading.Lock()
        self.scaling: dict[tuple[str, str], SetScale] = {}  # the autoscaler's state, shown in status
        self._in_git: tuple[dict, set] = ({}, set())  # desired and present as git has them, before counts
        self._member_plans: dict = {}  # plans of members beyond spec.replicas, by plan_cache_key
        self._scaled_away: set[WorkspaceKey] = set()  # members a set may run but does not now
        self._budget_stops: dict[tuple[str, str], int] = {}  # sets a budget keeps below their count
        self.set_endpoints: dict[tuple[str, str], str] = {}  # each InferenceSet's one endpoint
        # template rollouts across set members (rollout.py): what each member last had applied, what
        # it runs this pass where the rollout has not reached it yet, and the rollouts under way
        self._applied_plans: dict[WorkspaceKey, WorkspacePlan] = {}
        self._pass_plans: dict[WorkspaceKey, WorkspacePlan] = {}
        self.rollouts: dict[tuple[str, str], Rollout] = {}
        # members written since they were last seen Ready: a status read right after an update may
        # still be the old pods' (a StatefulSet's status lags its spec), so they do not count as ready
        self._unsettled: set[WorkspaceKey] = set()
        if hasattr(target, "on_change"):  # targets that know at once when a workload changes
            target.on_change = self.poke

    # -- triggers ---------------------------------------------------------------------------
    def poke(self) -> None:
        """Something happened (webhook, ref change): run a pass as soon as possible."""
        self._trigger.set()

    def stop(self) -> None:
        self._stop.set()
        self._trigger.set()

    # -- loading ----------------------------------------------------------------------------
    def _load(self, rev: str) -> None:
        start = time.perf_counter()
        prefixes = with_settings([p for p in self.settings.paths if p])
        files = self.source.files(rev, prefixes, self.settings.max_file_bytes)
        validated = validate_sources(
            files,
            namespace=self.settings.namespace,
            target=self.settings.target_name,
            max_file_bytes=self.settings.max_file_bytes,
            cache=self._validation_cache,
            byo_nodes=self.render.byo_nodes,
            policy=self.settings.policy,
        )
        settings = replace(self.render, revision=rev[:12])
        state = plan_revision(
            validated,
            settings,
            byo=self._byo_skus,
            cache=self._plan_cache,
            object_cache=self.objects.plan_cache,
        )
        # a workspace that would take a budget over it is held like an invalid one (last good version)
        for f in budgets.hold(validated, state, DesiredState(dict(self.desired))):
            log.warning(
                "budget crossed: holding the workspaces that cross it", revision=rev[:12], finding=f.text()
            )
        present = {ws.key for ws in validated.workspaces if ws.name}
        desired = dict(state.plans)
        findings: dict[WorkspaceKey, list[Finding]] = {}
        for ws in validated.workspaces:
            errs = [f for f in validated.findings_of(ws) if f.is_error]
            if errs:
                findings.setdefault(ws.key, []).extend(errs)
                if ws.key in self.last_good and ws.key not in desired:
                    desired[ws.key] = self.last_good[ws.key]  # keep applying the last good version
        for key, plan in self.last_good.items():
            if key not in present and plan.workspace.path in validated.unreadable_files:
                desired[key] = plan  # its file cannot be read right now: hold, do not prune
                present.add(key)
            elif key not in present and plan.workspace.set_key in validated.held_sets:
                desired[key] = plan  # its InferenceSet has an error: the member keeps its last good version
                present.add(key)
                findings.setdefault(key, []).extend(validated.held_sets[plan.workspace.set_key])
        last_good = {k: v for k, v in self.last_good.items() if k in present}
        last_good.update({k: p for k, p in state.plans.items() if not p.problems})
        self._in_git = (dict(desired), set(present))
        desired, present = self._with_counts(validated, rev, *self._in_git, fresh=True)
        # members the autoscaler added are good too: a later error in the set holds them, not drops them
        last_good.update({k: p for k, p in desired.items() if k not in state.plans and p.workspace.set_name})
        for key, old in self.desired.items():  # a changed workspace gets a fresh start
            if key in desired and desired[key] is not old:
                self._backoff.pop(key, None)
            elif key not in desired:
                self._backoff.pop(key, None)  # its removal starts afresh
                self._leaving[key] = old  # shown as Deleting until its nodes are released too
        self._explain_removals(self.revision, rev, present)
        self.objects.load(validated, state, lambda: self._removals(self.revision, rev))
        self._log_invalid_files(validated, rev)
        self.validated, self.desired, self.present, self.findings, self.last_good = (
            validated,
            desired,
            present,
            findings,
            last_good,
        )
        self.revision = rev
        self.metrics.revision_info.clear()
        self.metrics.revision_info.labels(revision=rev[:12]).set(1)
        log.info(
            "revision loaded",
            revision=rev[:12],
            files=len(validated.files),
            workspaces=len(present),
            valid=len(state.plans),
            errors=sum(len(v) for v in findings.values()),
            seconds=round(time.perf_counter() - start, 3),
        )

    # -- InferenceSets the autoscaler scales ------------------------------------------------------
    def scale(self, key: tuple[str, str], count: int) -> None:
        """The autoscaler asks for `count` members of set `key`; the next pass (at once) applies it."""
        with self._counts_lock:
            self._asked_counts[key] = count
        self.poke()

    def count_of(self, key: tuple[str, str]) -> int | None:
        """Members set `key` runs, or will at the next pass (None: not an autoscaled set)."""
        with self._counts_lock:
            return self._asked_counts.get(key, self.set_counts.get(key))

    def autoscaled(self) -> list:
        return autoscaled(self.validated) if self.validated is not None else []

    def _apply_asked_counts(self) -> None:
        if self.validated is None:
            return
        scalable = {s.key for s in self.autoscaled()}  # a held set keeps its count until it is fixed
        with self._counts_lock:
            asked, self._asked_counts = self._asked_counts, {}
            asked = {k: n for k, n in asked.items() if k in scalable and self.set_counts.get(k) != n}
            self.set_counts.update(asked)
        if not asked:
            return
        old = self.desired
        self.desired, self.present = self._with_counts(self.validated, self.revision, *self._in_git)
        for key, plan in self.desired.items():  # members added are good: an error later holds them
            if key not in old and plan.workspace.set_name:
                self.last_good[key] = plan
        for key, plan in old.items():
            if key not in self.desired:
                self._backoff.pop(key, None)
                self._leaving[key] = plan  # Deleting until its nodes are released too

    def _with_counts(self, validated, rev: str, desired: dict, present: set, fresh: bool = False):
        """Desired and present workspaces with each autoscaled set at its count: git plans
        spec.replicas members; the members below it that the count leaves out are not run, and
        those above it are made from the template as Kaito's controller would, within the budgets.
        A set with an error keeps the members it runs now, at their last good version."""
        desired, present = dict(desired), set(present)
        sets = {s.key: s for s in autoscaled(validated)}
        held = {
            s.key: s
            for s in validated.inference_sets
            if s.key in validated.held_sets and s.key in self.set_counts
        }
        for key in [k for k in self.set_counts if k not in sets and k not in held]:
            del self.set_counts[key]
        for key in held:
            running = {k: p for k, p in self.desired.items() if p.workspace.set_key == key}
            for k in [k for k, p in desired.items() if p.workspace.set_key == key and k not in running]:
                desired.pop(k)
                present.discard(k)
            desired.update(running)
            present.update(running)
        caps = budgets.from_revision(validated)
        used: dict = {}
        for key, s in sets.items():
            lo, hi = s.scaling.min_replicas, s.scaling.max_replicas
            count = self.set_counts[key] = min(hi, max(lo, self.set_counts.get(key, s.replicas)))
            for i in range(count, s.replicas):
                k = (s.namespace, s.member_name(i))
                desired.pop(k, None)
                present.discard(k)
            for i in range(s.replicas, count):
                k = (s.namespace, s.member_name(i))
                plan = self._member_plan(validated, rev, s, i, used)
                cap = budgets.crossed_by(caps, desired, plan)
                if cap is not None:  # scaling stops where a budget would be crossed
                    self.set_counts[key] = i
                    if self._budget_stops.get(key) != i:
                        log.warning(
                            "scaling stops at a budget",
                            inferenceset=f"{key[0]}/{key[1]}",
                            replicas=i,
                            wanted=count,
                            budget=f"{cap.label} ({cap.where})",
                        )
                    self._budget_stops[key] = i
                    break
                desired[k] = plan
                present.add(k)
            else:
                self._budget_stops.pop(key, None)
        self._scaled_away = {
            (s.namespace, s.member_name(i))
            for key, s in {**sets, **held}.items()
            for i in range(self.set_counts[key], s.scaling.max_replicas)
        } - set(desired)
        if fresh:
            self._member_plans = used
        else:
            self._member_plans.update(used)
        return desired, present

    def _member_plan(self, validated, rev: str, s, index: int, used: dict) -> WorkspacePlan:
        ws = inferenceset.member(s, index)
        settings = replace(self.render, revision=rev[:12])
        byo = self._byo_skus.get(ws.key)
        ckey = plan_cache_key(ws, validated.configmaps, settings, byo)
        plan = used.get(ckey) or self._member_plans.get(ckey)
        if plan is None:
            plan = plan_workspace(
                ws, catalog=load_catalog(), configmaps=validated.configmaps, settings=settings, byo_sku=byo
            )
        used[ckey] = plan
        return plan

    def member_gpus(self, s) -> int:
        """GPUs one member of set `s` takes (the plan is cached: the autoscaler asks every tick)."""
        return self._member_plan(self.validated, self.revision, s, 0, self._member_plans).gpus

    def beyond_count(self, key: WorkspaceKey) -> bool:
        """A member the autoscaler scaled away: removing it is deliberate, never an accident."""
        return key in self._scaled_away

    def _removals(self, prev: str, rev: str) -> dict[str, str]:
        """How files left git between two revisions (path -> where it moved, "" if deleted)."""
        if not prev:
            return {}
        try:
            return self.source.removals(prev, rev)
        except SourceError as e:
            log.warning("cannot tell how files left git", error=str(e))
            return {}

    def _log_invalid_files(self, validated: Revision, rev: str) -> None:
        """Once per revision, each file with an error and its first error, so `kubectl logs` says
        what is wrong (and where) without reading the status branch."""
        first: dict[str, tuple[int, Finding]] = {}
        for f in validated.findings:
            if f.is_error:
                n, head = first.get(f.path, (0, f))
                first[f.path] = (n + 1, head)
        for path, (n, f) in sorted(first.items()):
            log.warning(
                "invalid file",
                revision=rev[:12],
                file=path,
                errors=n,
                first_error=f"{f.path}:{f.line}:{f.col}: {(f.field + ': ') if f.field else ''}{f.message}",
            )

    def _explain_removals(self, prev: str, rev: str, present: set[WorkspaceKey]) -> None:
        """Tell a deliberate removal (a commit deleted the file) from an accident (the file moved out
        of the watched folders, or nothing in git explains why the workspace is gone)."""
        for key in [k for k in self._deleted_in_git if k in present]:
            del self._deleted_in_git[key]
        for key in [k for k in self._moved_out if k in present]:
            del self._moved_out[key]
        vanished = {k: p.workspace.path for k, p in self.desired.items() if k not in present}
        removals = self._removals(prev, rev) if vanished else {}
        for key, path in vanished.items():
            if path not in removals:
                continue
            if removals[path]:
                self._moved_out[key] = removals[path]
            else:
                self._deleted_in_git[key] = f"{path} deleted in {prev[:12]}..{rev[:12]}"

    def _prune_guard(self, removable: set[WorkspaceKey], rev: str) -> bool:
        """Whether removing every workspace is safe: each one's file was deleted by a commit.

        The guard is for a source that yields nothing by accident (a wrong --path, a folder moved
        away, a restart that has no history to compare with), not for a commit that deletes the files.
        """
        if self.settings.allow_empty_prune:
            return True
        accidental = sorted(k for k in removable if k not in self._deleted_in_git)
        if not accidental:
            log.info(
                "every workspace was deleted in git: removing them all",
                revision=rev[:12],
                deleted=sorted(self._deleted_in_git[k] for k in removable),
            )
            return True
        moved = {f"{k[0]}/{k[1]}": self._moved_out[k] for k in accidental if k in self._moved_out}
        why = (
            f"their files moved outside the watched path(s) {self.settings.paths}: {moved}"
            if moved
            else "no commit this daemon has seen deletes their files (a wrong --path, a folder that is not "
            "there, or a restart after the files were deleted)"
        )
        log.error(
            "refusing to prune every workspace: the repository yields none but the target has some; "
            "pass --allow-empty-prune if that is intended",
            revision=rev[:12],
            workspaces=len(removable),
            reason=why,
        )
        return False

    # -- one pass ---------------------------------------------------------------------------
    def run_pass(self) -> PassResult:
        start = time.perf_counter()
        try:
            t = time.perf_counter()
            rev = self.source.sync()
            self.metrics.fetch_seconds.observe(time.perf_counter() - t)
        except SourceError:
            self.metrics.fetch_failures.inc()
            raise
        changed = rev != self.head
        if changed and self.head and self.ignore_prefixes and self._only_ours(self.head, rev):
            changed = False  # our own status commit: nothing to reconcile, and nothing new to report
        self.head = rev
        if changed:
            self._load(rev)
        self._apply_asked_counts()
        self.target.refresh()
        self.set_endpoints = self.target.serve_sets(self.validated.inference_sets if self.validated else [])
        self.provisioner.refresh()
        self._size_byo()
        self._roll_sets()
        result = PassResult(rev, changed)
        self._reconcile_objects(result)  # before the workspaces: they may mount what these create
        live = self.target.live_workspaces()
        owned = self.provisioner.owned()
        keys = set(self.desired) | set(live) | owned | self._removing | set(self._leaving)
        unreadable = self.validated.unreadable_files if self.validated else set()
        removable = {k for k in keys - set(self.desired) - self.present if live.get(k, "") not in unreadable}
        result.held = sorted(k for k in keys - set(self.desired) - removable)
        guarded = {k for k in removable if not self.beyond_count(k)}
        if guarded and not self.present and not self._prune_guard(guarded, rev):
            result.held += sorted(guarded)
            removable -= guarded
        now = time.monotonic()
        todo = []
        for key in sorted(set(self.desired) | removable):
            attempts, due = self._backoff.get(key, (0, 0.0))
            if due > now:
                result.skipped.append(key)
                continue
            todo.append(key)
        self.metrics.queue_depth.set(len(todo))
        futures = {self._executor.submit(self._reconcile_one, key, key in removable): key for key in todo}
        for fut in as_completed(futures):
            key = futures[fut]
            self.metrics.queue_depth.dec()
            try:
                writes, removed = fut.result()
                result.writes += writes
                self._backoff.pop(key, None)
                if removed:
                    result.removed.append(key)
                    self.metrics.forget_workspace(key)
                else:
                    self.metrics.last_sync.labels(namespace=key[0], workspace=key[1]).set(time.time())
            except Exception as e:  # one workspace's failure is its own; back it off
                attempts = self._backoff.get(key, (0, 0.0))[0] + 1
                delay = min(self.settings.backoff_max, self.settings.backoff_min * 2 ** (attempts - 1))
                self._backoff[key] = (attempts, time.monotonic() + delay * random.uniform(0.8, 1.0))
                msg = error_text(e)
                result.errors[key] = msg
                self.metrics.errors.inc()
                log.warning(
                    "reconcile failed",
                    workspace=f"{key[0]}/{key[1]}",
                    error=msg,
                    attempt=attempts,
                    retry_in=round(delay, 1),
                )
                self._record_error(key, msg)
        result.seconds = time.perf_counter() - start
        self.metrics.pass_seconds.observe(result.seconds)
        result.reports = self.reports()
        result.objects = self.objects.reports(self.validated, self.revision)
        self._count_states(result.reports)
        self.last_pass = result
        self.synced.set()
        log.info(
            "pass done",
            revision=rev[:12],
            changed=changed,
            workspaces=len(todo),
            writes=result.writes,
            errors=len(result.errors),
            removed=len(result.removed),
            held=len(result.held),
            seconds=round(result.seconds, 3),
        )
        for callback in self.on_pass:
            try:
                callback(self, result)
            except Exception as e:  # a reporter must never stop reconciling
                log.warning("pass callback failed", error=error_text(e))
        return result

    def _reconcile_objects(self, result: PassResult) -> None:
        """The other objects first: workspaces may mount what they create."""
        res = self.objects.reconcile(
            self.target,
            empty=not self.present and not (self.validated and self.validated.objects),
            allow_empty_prune=self.settings.allow_empty_prune,
            revision=self.revision,
        )
        result.objects_held = res.held
        result.writes += res.writes
        result.object_writes = res.writes
        self.metrics.applies.inc(len(res.applied))
        self.metrics.prunes.inc(len(res.deleted))
        self.metrics.errors.inc(len(res.errors))

    def _size_byo(self) -> None:
        """Bring-your-own nodes: plan with the GPUs their labels report, known only once the cluster is read."""
        if self.validated is None:
            return
        settings = replace(self.render, revision=self.revision[:12])
        for key, plan in list(self.desired.items()):
            if plan.provisioned:  # nodes we provision are sized from the catalog
                continue
            nodes = self.target.nodes(plan)
            if not nodes or byo_label_problem(nodes):
                continue
            sku = sku_from_gpu_labels(dict(nodes[0].gpu_labels))
            if sku is None or plan.sku == sku:
                continue
            configmaps = self.validated.configmaps
            new = plan_workspace(
                plan.workspace, catalog=load_catalog(), configmaps=configmaps, settings=settings, byo_sku=sku
            )
            # later revisions plan this workspace for these GPUs straight away (and reuse this plan);
            # the plan for the old GPUs is dropped now rather than at the next revision (memory)
            self._plan_cache.pop(
                plan_cache_key(plan.workspace, configmaps, settings, self._byo_skus.get(key)), None
            )
            self._byo_skus[key] = sku
            self._plan_cache[plan_cache_key(plan.workspace, configmaps, settings, sku)] = new
            self.desired[key] = new
            if self.last_good.get(key) is plan:
                self.last_good[key] = new
            log.info(
                "sized for bring-your-own nodes",
                workspace=f"{key[0]}/{key[1]}",
                gpu=sku.gpu,
                gpus_per_node=sku.gpu_count,
                gpu_memory_gib=sku.gpu_memory_gib,
            )

        for gone in set(self._byo_skus) - set(self.desired):
            del self._byo_skus[gone]

    def _roll_sets(self) -> None:
        """Members of a set whose template changed get it as the set's updateStrategy allows."""
        plans, rollouts = {}, {}
        by_set: dict[tuple[str, str], list] = {}
        for key, plan in self.desired.items():
            if plan.workspace.set_key is not None:
                by_set.setdefault(plan.workspace.set_key, []).append(
                    (inferenceset.member_index(plan.workspace), key)
                )
        sets = {s.key: s for s in (self.validated.inference_sets if self.validated else [])}
        for set_key, members in by_set.items():
            if set_key not in sets:
                continue
            ready = {
                k
                for _, k in members
                if (st := self.statuses.get(k)) is not None
                and st.state == "Ready"
                and k not in self._unsettled
            }
            r = roll(members, self.desired, self._applied_plans, ready, sets[set_key].update)
            plans.update({k: p for k, p in r.plans.items() if p is not self.desired[k]})
            if not r.done:
                rollouts[set_key] = r
                if r.waiting:
                    log.info("rollout waiting", inferenceset=f"{set_key[0]}/{set_key[1]}", why=r.waiting)
        self._pass_plans, self.rollouts = plans, rollouts

    def _rolled_out(self, key: WorkspaceKey) -> bool:
        """Every pod runs the current template (a cluster says so; a local process is replaced whole)."""
        rolled_out = getattr(self.target, "rolled_out", None)
        return rolled_out is None or rolled_out(key)

    def _only_ours(self, old: str, new: str) -> bool:
        try:
            paths = self.source.changed_paths(old, new)
        except SourceError:
            return False
        return bool(paths) and all(any(p.startswith(pre) for pre in self.ignore_prefixes) for p in paths)

    def _reconcile_one(self, key: WorkspaceKey, remove: bool) -> tuple[int, bool]:
        t0 = time.perf_counter()
        try:
            if remove:
                gone, res = self.target.remove(key)
                self.metrics.prunes.inc(len(res.deleted))
                released = self.provisioner.release(key) if gone else False
                if gone and released:
                    self._removing.discard(key)
                    self._leaving.pop(key, None)
                    self._deleted_in_git.pop(key, None)
                    self._moved_out.pop(key, None)
                    self.statuses.pop(key, None)
                    self.applied_revision.pop(key, None)
                    self._applied_plans.pop(key, None)
                    self._unsettled.discard(key)
                    log.info("workspace removed", workspace=f"{key[0]}/{key[1]}")
                else:
                    self._removing.add(key)  # keep coming back until the nodes are gone too
                return res.writes, gone and released
            plan = self._pass_plans.get(key) or self.desired[key]  # a set's rollout may hold it back
            waiting = self.objects.waiting_for(plan, self.target, self.validated)
            if waiting:  # no nodes, no pods until what it mounts exists (not a crash loop)
                log.info("waiting", workspace=f"{key[0]}/{key[1]}", reason=waiting)
                self.statuses[key] = carry_times(
                    self.statuses.get(key), waiting_status(plan.kind, waiting), now_iso()
                )
                return 0, False
            nodes = self.target.nodes(plan)
            resource = self.provisioner.ensure(plan, nodes)
            writes = 0
            if resource.ready:
                res = self.target.apply(plan)
                if not res.pending:
                    self._applied_plans[key] = plan
                writes = res.writes
                self.metrics.applies.inc(len(res.applied))
                if res.writes:
                    self.applied_revision[key] = self.revision
                self.applied_revision.setdefault(key, self.revision)
            obs = self.target.observe(key, plan)
            self._record(key, obs, resource)
            if writes:
                self._unsettled.add(key)
            elif key in self._unsettled and self.statuses[key].state == "Ready" and self._rolled_out(key):
                self._unsettled.discard(key)
            self.metrics.reconcile_seconds.labels(result="ok").observe(time.perf_counter() - t0)
            return writes, False
        except Exception:
            self.metrics.reconcile_seconds.labels(result="error").observe(time.perf_counter() - t0)
            raise

    def _record(self, key: WorkspaceKey, obs: Observation, resource: ResourceStatus) -> None:
        errs = self.findings.get(key, [])
        plan = self.desired.get(key)
        last_error = ""
        if errs:
            last_error = f"revision {self.revision[:12]} is invalid, still running the last good version: {errs[0].text()}"
        elif plan is not None and plan.problems:
            last_error = plan.problems[0]
        new = derive(obs, resource, last_error=last_error)
        self.statuses[key] = carry_times(self.statuses.get(key), new, now_iso())

    def _record_error(self, key: WorkspaceKey, msg: str) -> None:
        prev = self.statuses.get(key)
        if prev is not None:
            self.statuses[key] = replace(prev, last_error=msg)
        else:
            plan = self.desired.get(key)
            kind = plan.kind if plan else "inference"
            self.statuses[key] = carry_times(None, failed_status(kind, msg), now_iso())

    def _count_states(self, reports: list[WorkspaceReport]) -> None:
        counts: dict[str, int] = {}
        for s in self.statuses.values():
            counts[s.state] = counts.get(s.state, 0) + 1
        self.metrics.workspaces.clear()
        for state, n in counts.items():
            self.metrics.workspaces.labels(state=state).set(n)
        # conditions are set afresh each pass, so a removed workspace's series go with it
        self.metrics.condition.clear()
        for (ns, name), st in self.statuses.items():
            for c in st.conditions:
                self.metrics.condition.labels(namespace=ns, workspace=name, condition=c.type).set(
                    1 if c.status == "True" else 0
                )
        self.metrics.in_backoff.set(len(self._backoff))
        self.metrics.spend.clear()  # the figures STATUS.md shows
        self.metrics.gpus_billed.clear()
        for ns, (gpus, price) in spend(reports).items():
            self.metrics.spend.labels(namespace=ns).set(price)
            self.metrics.gpus_billed.labels(namespace=ns).set(gpus)

    # -- reports --------------------------------------------------------------------------------
    def reports(self) -> list[WorkspaceReport]:
        """Status of every workspace in the repository (invalid ones included)."""
        out = []
        workspaces = {
            ws.key: ws
            for ws in (self.validated.workspaces if self.validated else [])
            if ws.name and not self.beyond_count(ws.key)  # scaled away: not a workspace for now
        }
        pools = self.provisioner.owned()  # what is billed: pools that exist, as the last refresh saw them
        for key in sorted(set(workspaces) | set(self.desired)):
            plan = self.desired.get(key)
            ws = plan.workspace if plan else workspaces[key]
            errs = self.findings.get(key, [])
            status = self.statuses.get(key)
            if status is None:
                if errs:
                    status = failed_status(ws.kind, errs[0].text())
                else:
                    status = WorkspaceStatus("Pending")
            out.append(
                WorkspaceReport(
                    key=key,
                    path=workspaces[key].path if key in workspaces else ws.path,
                    revision=self.revision,
                    kind=ws.kind,
                    instance_type=ws.resource.instance_type or "",
                    status=status,
                    errors=errs,
                    gpus=plan.gpus if plan else 0,
                    nodes=plan.nodes if plan else 0,
                    applied_revision=self.applied_revision.get(key, ""),
                    price_per_hour=plan.price_per_hour if plan and key in pools else None,
                    evals=self.evals.get(key, ()),
                )
            )
        for key, plan in sorted(self._leaving.items()):
            if key in workspaces or key in self.desired:
                continue
            deleting = WorkspaceStatus(
                "Deleting",
                (
                    Condition(
                        "WorkspaceDeleting",
                        "True",
                        "workspaceDeleted",
                        "removed from git: deleting the workload, then releasing its nodes",
                    ),
                ),
            )
            out.append(
                WorkspaceReport(
                    key=key,
                    path=plan.workspace.path,
                    revision=self.revision,
                    kind=plan.kind,
                    instance_type=plan.workspace.resource.instance_type or "",
                    status=deleting,
                    gpus=plan.gpus,
                    nodes=plan.nodes,
                    price_per_hour=plan.price_per_hour if key in pools else None,
                )
            )
        return out

    # -- the loop ---------------------------------------------------------------------------
    def _next_wait(self) -> float:
        base = self.settings.interval
        wait = base * random.uniform(1 - self.settings.jitter, 1 + self.settings.jitter)
        if self._global_failures:
            wait = min(
                self.settings.backoff_max, self.settings.backoff_min * 2 ** (self._global_failures - 1)
            )
        due = [d for _, d in self._backoff.values()]
        if due:
            wait = min(wait, max(0.05, min(due) - time.monotonic()))
        return wait

    def run_forever(self, is_leader=lambda: True) -> None:
        log.info(
            "daemon started",
            repo=self.source.display,
            branch=self.source.branch,
            target=self.target.name,
            provisioner=self.provisioner.name,
            interval=self.settings.interval,
            workers=self.settings.workers,
        )
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            if is_leader():
                try:
                    self.run_pass()
                    self._global_failures = 0
                except Exception as e:  # source or target unreachable: back off, keep serving health
                    self._global_failures += 1
                    self.metrics.pass_failures.inc()
                    log.error(
                        "pass failed",
                        error=error_text(e),
                        failures=self._global_failures,
                        retry_in=round(self._next_wait(), 1),
                    )
            self._trigger.wait(self._next_wait())
            self._trigger.clear()
        log.info("daemon stopping")

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.target.close()
