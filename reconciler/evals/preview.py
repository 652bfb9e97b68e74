"""Eval previews of pull requests: which suites, the queue, and what the comment says.

For the workspaces a pull request changes (and the suites it adds or edits), the suites run
against the base and then the head. Where they run is the previewer's business:
`LocalPreviewer` (`--preview-target local`) serves both revisions as local processes on the
daemon's machine, exactly as `kaito-gitops eval --base` does; `cluster_preview.ClusterPreviewer`
(`--preview-target kubernetes`) deploys the head in a `pr-<number>` namespace and compares it
with the workspaces deployed now. One preview runs at a time: figures taken side by side would
measure each other. A newer push replaces a queued preview of the same pull request; when more
than `max_pending` pull requests wait, the newest is told so instead of queued without end.

Suites whose workspaces the preview cannot hold (a 70B model on a CPU box, a preview over its
price cap) are not run: the comment says why, and they do not fail the `kaito-gitops/eval` status.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ..logs import error_text
from .report import markdown
from .suite import EvalSuite

log = structlog.get_logger("kaito_gitops.preview")

CONTEXT = "kaito-gitops/eval"


def suites_to_preview(base_rev, head_rev, changed: set[tuple[str, str]]) -> list[EvalSuite]:
    """The head's valid suites that test a changed workspace, or that are new or edited."""
    before = {s.path: s.document.data for s in base_rev.suites} if base_rev is not None else {}
    return [
        s
        for s in head_rev.suites
        if s.valid and (set(s.workspaces) & changed or before.get(s.path, ...) != s.document.data)
    ]


@dataclass(frozen=True)
class PreviewJob:
    number: int
    head_sha: str
    base_ref: str
    base_files: list[tuple[str, bytes]]
    head_files: list[tuple[str, bytes]]
    suites: tuple[str, ...]  # suite names (file names without .yaml)
    refused: tuple[str, ...] = ()  # suites the pull request asks too much of: not run, the check fails


@dataclass
class PreviewOutcome:
    job: PreviewJob
    state: str  # success | failure | error (GitHub commit-status states)
    description: str
    section: str  # the Eval section of the pull-request comment
    results: list = field(default_factory=list)
    base: list = field(default_factory=list)


LOCAL_WHERE = (
    "served on the kaito-gitops daemon's machine (local target, CPU: no GPU cost, nothing in the cluster)"
)


def pending_section(job: PreviewJob, queued_behind: int = 0, where: str = LOCAL_WHERE) -> str:
    wait = f" It waits for {queued_behind} other preview(s) first." if queued_behind else ""
    return (
        "### Eval :hourglass_flowing_sand:\n\n"
        f"Previewing {len(job.suites)} suite(s) ({', '.join(f'`{s}`' for s in job.suites)}) against "
        f"`{job.base_ref}` and `{job.head_sha[:12]}`, {where}.{wait} The results replace this line.\n"
    )


MAX_TOKENS = 50_000  # a pull request's suite may not make a preview write more, per workspace


def too_costly(suite: EvalSuite, max_tokens: int = MAX_TOKENS) -> str:
    """Why a suite is not previewed for what it would ask (a pull request's author sets it), or ''."""
    if suite.most_tokens <= max_tokens:
        return ""
    return (
        f"it asks for up to {suite.most_tokens:,} tokens per workspace (cases' and load's max_tokens), "
        f"more than --preview-max-tokens {max_tokens:,}; run it with `kaito-gitops eval`"
    )


def refused_section(why: str) -> str:
    return f"### Eval :warning:\n\n{why[0].upper() + why[1:]}.\n"


def _summary(results: list, base: list) -> str:
    failing = [r for r in results if not r.thresholds_met]
    if failing:
        r = failing[0]
        return f"{len(failing)} of {len(results)} suite(s) fail: {r.suite.name} ({r.failures()[0]})"
    by = {(b.suite.name, b.workspace): b for b in base}
    rates = []
    for r in results:
        b = by.get((r.suite.name, r.workspace))
        was = f"{b.pass_rate:.0%} → " if b is not None and not b.error else ""
        rates.append(f"{r.suite.name} {was}{r.pass_rate:.0%}")
    return f"{len(results)} suite(s) meet their thresholds: " + ", ".join(rates)


def outcome_of(
    job: PreviewJob,
    results: list,
    base: list,
    skipped: list[str],
    seconds: float,
    *,
    ran: str = "",
    not_here: str = "on this machine",
) -> PreviewOutcome:
    """`ran`: where and against what (default: both revisions on the daemon's machine).
    `skipped` suites do not count (too big for where previews run); `refused` ones fail the
    status: what the pull request itself asks for must not pass the gate by not running."""
    refused = job.refused
    failed = any(not r.thresholds_met and not r.error for r in results)
    broken = [r for r in results if r.error]  # it did not serve, or stopped: not a verdict on answers
    icon = ":x:" if failed or refused or broken else ":white_check_mark:"
    parts = [f"### Eval {icon}", ""]
    ran = ran or (
        f"against `{job.base_ref}` (base) and `{job.head_sha[:12]}` (head) on the "
        "kaito-gitops daemon's machine (local target, CPU)"
    )
    if results:
        parts += [
            f"Suites run {ran} in {seconds:.0f} s. Thresholds are the head's.",
            "",
            markdown(results, base),
        ]
    if refused:
        parts += ["_Refused (the check fails until the suite asks for less):_", ""]
        parts += [f"- {line}" for line in refused] + [""]
    if skipped:
        parts += [f"_Not previewed {not_here}:_", ""] + [f"- {line}" for line in skipped] + [""]
    if failed:
        state, description = "failure", _summary(results, base)
    elif broken:
        state, description = "error", f"{broken[0].suite.name} could not run: {broken[0].error}"
    elif refused:
        state, description = "error", "not previewed: " + refused[0].replace("`", "")
    elif results:
        state, description = "success", _summary(results, base)
    else:
        state = "success"
        description = f"not previewed {not_here}: " + (skipped[0] if skipped else "nothing to run")
    return PreviewOutcome(job, state, description[:140], "\n".join(parts), results, base)


class PreviewRunner:
    """One worker thread; `submit` queues, `on_done(outcome)` gets every finished preview. Between
    previews (and at least every `upkeep_every` seconds) the previewer tears down what was
    forgotten or has expired."""

    def __init__(self, previewer, on_done, *, max_pending: int = 4, upkeep_every: float = 60.0):
        """`previewer`: a LocalPreviewer or a cluster_preview.ClusterPreviewer."""
        self.previewer = previewer
        self.on_done = on_done
        self.max_pending = max_pending
        self.upkeep_every = upkeep_every
        self._queue: list[PreviewJob] = []
        self._forgotten: list[int] = []
        self._cond = threading.Condition()
        self._stop = False
        self.running: PreviewJob | None = None
        self._thread = threading.Thread(target=self._run, name="eval-preview", daemon=True)
        self._thread.start()

    def describe(self, job: PreviewJob) -> tuple[str, str]:
        """(where the preview runs and what it costs, why it will not run or '')."""
        return self.previewer.describe(job)

    def submit(self, job: PreviewJob) -> int | None:
        """Queue `job` (replacing a queued one of the same pull request); the number of previews
        ahead of it, or None when the queue is full."""
        with self._cond:
            self._queue = [j for j in self._queue if j.number != job.number]
            if len(self._queue) >= self.max_pending:
                return None
            self._queue.append(job)
            self._cond.notify()
            running = self.running
            ahead = len(self._queue) - 1 + (running is not None)
        if running is not None and running.number == job.number:  # its result would be dropped
            log.info("eval preview superseded by a newer push", pr=job.number)
            self.previewer.cancel(running)  # that job only: never the next one of this pull request
        return ahead

    def forget(self, number: int) -> None:
        """The pull request was merged or closed: drop its queued preview; the worker removes what
        the preview left (its files, or its namespace and node pools)."""
        with self._cond:
            self._queue = [j for j in self._queue if j.number != number]
            self._forgotten.append(number)
            running = self.running
            self._cond.notify()
        if running is not None and running.number == number:
            self.previewer.cancel(running)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        self.previewer.stop()  # the running preview's waits and requests end at once
        self._thread.join(timeout=30)

    def _upkeep(self) -> None:
        with self._cond:
            forgotten, self._forgotten = self._forgotten, []
        for number in forgotten:
            try:
                self.previewer.forget(number)
            except Exception as e:  # the next round tries again
                log.warning("eval preview teardown failed", pr=number, error=error_text(e))
                with self._cond:
                    self._forgotten.append(number)
        try:
            self.previewer.upkeep()
        except Exception as e:
            log.warning("eval preview upkeep failed", error=error_text(e))

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._forgotten and not self._stop:
                    self._cond.wait(self.upkeep_every)
                if self._stop:
                    return
                job = self.running = self._queue.pop(0) if self._queue else None
            self._upkeep()
            if job is None:
                continue
            try:
                outcome = self.previewer.run(job)
            except Exception as e:  # a preview never stops the reviewer (nor a cancelled one's end)
                log.warning("eval preview failed", pr=job.number, error=error_text(e))
                outcome = PreviewOutcome(
                    job,
                    "error",
                    f"the preview could not run: {error_text(e)}"[:140],
                    f"### Eval :x:\n\nThe preview could not run: {error_text(e)}\n",
                )
            finally:
                self.running = None
            if not self._stop:
                self.on_done(outcome)


class LocalPreviewer:
    """Base and head served as local processes under `state_dir/pr-<number>/{base,head}`."""

    def __init__(
        self,
        state_dir: Path,
        *,
        namespace="default",
        policy=None,
        byo_nodes=False,
        timeout=600.0,
    ):
        self.state_dir = Path(state_dir)
        self.namespace, self.policy, self.byo_nodes = namespace, policy, byo_nodes
        self.timeout = timeout
        self._target = None  # the LocalTarget of the preview that runs now
        self._stopped = False
        self._cancelled = False  # the running preview was superseded
        self._job: PreviewJob | None = None

    def describe(self, job: PreviewJob) -> tuple[str, str]:
        return LOCAL_WHERE, ""

    def forget(self, number: int) -> None:
        shutil.rmtree(self.state_dir / f"pr-{number}", ignore_errors=True)

    def upkeep(self) -> None:
        return None

    def stop(self) -> None:
        self._stopped = True
        self.cancel()

    def cancel(self, job: PreviewJob | None = None) -> None:
        if job is not None and job is not self._job:
            return  # it ended already; the one running now is another
        self._cancelled = True
        target = self._target
        if target is not None:  # its requests fail at once and the preview ends
            target.close()

    def run(self, job: PreviewJob) -> PreviewOutcome:
        self._job, self._cancelled = job, False
        try:
            return self._run(job)
        finally:
            self._job = None

    def _run(self, job: PreviewJob) -> PreviewOutcome:
        from ..evalcmd import run_suites
        from ..planning import plan_revision
        from ..targets.local import refusal_of

        base_rev, head_rev = revisions(job, self.namespace, "local", self.byo_nodes, self.policy)
        base_state, head_state = plan_revision(base_rev), plan_revision(head_rev)
        suites = [s for s in head_rev.suites if s.name in job.suites and s.valid]
        folder = self.state_dir / f"pr-{job.number}"
        shutil.rmtree(folder, ignore_errors=True)
        runnable, skipped = [], []
        for s in suites:
            refusals = [
                refusal_of(state.plans[k])
                for k in s.workspaces
                for state in (base_state, head_state)
                if k in state.plans
            ]
            why = next((r for r in refusals if r), "")
            if why:
                skipped.append(f"`{s.name}`: {why}")
            else:
                runnable.append(s)
        log.info("eval preview", pr=job.number, head=job.head_sha[:12], suites=[s.name for s in runnable])
        t0 = time.perf_counter()
        base = self._serve_and_ask(base_rev, base_state, runnable, folder / "base", run_suites)
        head = self._serve_and_ask(head_rev, head_state, runnable, folder / "head", run_suites)
        seconds = time.perf_counter() - t0
        log.info(
            "eval preview done",
            pr=job.number,
            seconds=round(seconds, 1),
            met=all(r.thresholds_met for r in head),
        )
        return outcome_of(job, head, base, skipped, seconds)

    def _serve_and_ask(self, rev, state, suites, folder: Path, run_suites) -> list:
        if not suites or self._stopped or self._cancelled:
            return []
        from ..targets.local import LocalTarget

        target = self._target = LocalTarget(folder)
        try:
            return run_suites(
                rev, state, suites, target, self.timeout, say=lambda text: log.info("eval preview: " + text)
            )
        finally:
            self._target = None
            target.close()


def revisions(job: PreviewJob, namespace: str, target: str, byo_nodes: bool, policy):
    """The job's base and head, validated as the daemon validates them."""
    from ..validation import validate_sources

    def revision(files, base=None):
        return validate_sources(
            files, namespace=namespace, target=target, base=base, byo_nodes=byo_nodes, policy=policy
        )

    base_rev = revision(job.base_files)
    return base_rev, revision(job.head_files, base_rev)
