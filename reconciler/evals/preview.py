"""Eval previews of pull requests, on the daemon's own machine (`--preview-target local`).

For the workspaces a pull request changes (and the suites it adds or edits), the suites run
against the base branch's workspaces and then the head's, served as local processes exactly as
`kaito-gitops eval --base` serves them. One preview runs at a time: they share the machine, and
figures taken side by side would measure each other. A newer push replaces a queued preview of the
same pull request; when more than `max_pending` pull requests wait, the newest is told so instead
of queued without end.

Suites whose workspaces this machine cannot hold (a 70B model on a CPU box) are not run: the
comment says why, and they do not fail the `kaito-gitops/eval` status. Previews on a cluster
(a `pr-<number>` namespace with its own node pools) are not built yet: docs/evals.md.
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


@dataclass
class PreviewOutcome:
    job: PreviewJob
    state: str  # success | failure | error (GitHub commit-status states)
    description: str
    section: str  # the Eval section of the pull-request comment
    results: list = field(default_factory=list)
    base: list = field(default_factory=list)


def pending_section(job: PreviewJob, queued_behind: int = 0) -> str:
    wait = f" It waits for {queued_behind} other preview(s) first." if queued_behind else ""
    return (
        "### Eval :hourglass_flowing_sand:\n\n"
        f"Previewing {len(job.suites)} suite(s) ({', '.join(f'`{s}`' for s in job.suites)}) against "
        f"`{job.base_ref}` and `{job.head_sha[:12]}`, served on the kaito-gitops daemon's machine "
        f"(local target, CPU: no GPU cost, nothing in the cluster).{wait} The results replace this line.\n"
    )


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
    job: PreviewJob, results: list, base: list, skipped: list[str], seconds: float
) -> PreviewOutcome:
    failed = any(not r.thresholds_met for r in results)
    icon = ":x:" if failed else ":white_check_mark:"
    parts = [f"### Eval {icon}", ""]
    if results:
        parts += [
            f"Suites run against `{job.base_ref}` (base) and `{job.head_sha[:12]}` (head) on the "
            f"kaito-gitops daemon's machine (local target, CPU) in {seconds:.0f} s. Thresholds are the head's.",
            "",
            markdown(results, base),
        ]
    if skipped:
        parts += ["_Not previewed on this machine:_", ""] + [f"- {line}" for line in skipped] + [""]
    if results:
        description = _summary(results, base)
    else:
        description = "not previewed: the workspaces are too big for the daemon's machine"
    return PreviewOutcome(
        job, "failure" if failed else "success", description[:140], "\n".join(parts), results, base
    )


class PreviewRunner:
    """One worker thread; `submit` queues, `on_done(outcome)` gets every finished preview."""

    def __init__(
        self,
        state_dir: Path,
        on_done,
        *,
        namespace: str = "default",
        policy=None,
        byo_nodes: bool = False,
        timeout: float = 600.0,
        max_pending: int = 4,
    ):
        self.state_dir = Path(state_dir)
        self.on_done = on_done
        self.namespace, self.policy, self.byo_nodes = namespace, policy, byo_nodes
        self.timeout = timeout
        self.max_pending = max_pending
        self._queue: list[PreviewJob] = []
        self._cond = threading.Condition()
        self._stop = False
        self._target = None  # the LocalTarget of the preview that runs now
        self.running: PreviewJob | None = None
        self._thread = threading.Thread(target=self._run, name="eval-preview", daemon=True)
        self._thread.start()

    def submit(self, job: PreviewJob) -> int | None:
        """Queue `job` (replacing a queued one of the same pull request); the number of previews
        ahead of it, or None when the queue is full."""
        with self._cond:
            self._queue = [j for j in self._queue if j.number != job.number]
            if len(self._queue) >= self.max_pending:
                return None
            self._queue.append(job)
            self._cond.notify()
            return len(self._queue) - 1 + (self.running is not None)

    def forget(self, number: int) -> None:
        """The pull request was merged or closed: drop its queued preview and its files."""
        with self._cond:
            self._queue = [j for j in self._queue if j.number != number]
        if self.running is None or self.running.number != number:
            shutil.rmtree(self.state_dir / f"pr-{number}", ignore_errors=True)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        target = self._target
        if target is not None:  # the running preview's requests fail at once and it ends
            target.close()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self.running = self._queue.pop(0)
            try:
                outcome = self.preview(job)
            except Exception as e:  # a preview never stops the reviewer
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

    def preview(self, job: PreviewJob) -> PreviewOutcome:
        from ..evalcmd import run_suites
        from ..planning import plan_revision
        from ..targets.local import refusal_of
        from ..validation import validate_sources

        def revision(files, base=None):
            return validate_sources(
                files,
                namespace=self.namespace,
                target="local",
                base=base,
                byo_nodes=self.byo_nodes,
                policy=self.policy,
            )

        base_rev = revision(job.base_files)
        head_rev = revision(job.head_files, base_rev)
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
        if not suites or self._stop:
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
