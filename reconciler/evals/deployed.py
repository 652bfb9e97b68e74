"""After a merge: the eval suites against the deployed endpoints, with their figures in status.

A daemon pass callback. When a workspace a valid suite names is serving a revision the suite has
not run against yet (or the suite itself changed), its cases (and, with `--eval-deployed all`,
its load section) are sent to the workspace's endpoint on a worker thread. The figures go into the
workspace's status file and STATUS.md through `daemon.evals`. A suite's figures are compared with
its figures at the previous revision: a lower pass rate, or thresholds that held and no longer
do, is flagged as a regression. Each suite runs once per served revision, so an unchanged
cluster never causes another request or another status commit.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace

import structlog

from ..logs import error_text
from .scoring import SuiteResult

log = structlog.get_logger("kaito_gitops.evals")


def figures(result: SuiteResult, revision: str, previous: dict | None) -> dict:
    """One suite's entry in a status file (camelCase like the rest of it); no times, so an
    unchanged result writes identical bytes."""
    d = result.as_dict()
    doc = {
        "suite": result.suite.name,
        "file": result.suite.path,
        "revision": revision[:12],
        "passed": d["passed"],
        "cases": len(result.cases),
        "passRate": d["pass_rate"],
        "p50LatencyMs": d["p50_latency_ms"],
        "p95LatencyMs": d["p95_latency_ms"],
        "tokensPerSecond": d["tokens_per_second"],
        "thresholdsMet": d["thresholds_met"],
        "failures": d["failures"],
        "failedCases": [c.id for c in result.cases if not c.passed],
    }
    if previous is not None:
        doc["previous"] = {k: previous.get(k) for k in ("revision", "passRate", "thresholdsMet")}
        doc["regression"] = bool(
            (previous.get("passRate") or 0) > doc["passRate"]
            or (previous.get("thresholdsMet") and not doc["thresholdsMet"])
        )
    else:
        doc["regression"] = False
    return doc


def _suite_hash(suite) -> str:
    return hashlib.sha256(json.dumps(suite.document.data, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def figures_in_status(files: dict[str, str]) -> dict[tuple[str, str], tuple[dict, ...]]:
    """The `evals:` entries of status files (`status/<ns>/<name>.yaml` -> text), by workspace:
    what a daemon that restarts compares its next figures with. Unreadable files are skipped."""
    from ruamel.yaml import YAML, YAMLError

    from ..report.statusview import status_key

    yaml = YAML(typ="safe")
    out = {}
    for path, text in files.items():
        key = status_key(path)
        if key is None:
            continue
        try:
            doc = yaml.load(text)
        except YAMLError:
            continue
        entries = doc.get("evals") if isinstance(doc, dict) else None
        if isinstance(entries, list):
            good = tuple(
                e for e in entries if isinstance(e, dict) and {"file", "revision", "passRate"} <= e.keys()
            )
            if good:
                out[key] = good
    return out


class DeployedEvals:
    def __init__(self, daemon, *, load: bool = False, earlier=None):
        """`earlier`: a callable returning the status files from before a restart (read on the
        worker thread, not at start-up), so their figures stay in status and the next revision
        is still compared with them."""
        self.daemon = daemon
        self.load = load
        self._earlier = earlier
        self._done: dict[tuple, str] = {}  # (suite path, workspace) -> signature it ran against
        self._last: dict[tuple, dict] = {}  # (suite path, workspace) -> figures at the last revision
        self._queue: list[tuple] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="eval-deployed", daemon=True)
        self._thread.start()
        daemon.on_pass.append(self.on_pass)

    def on_pass(self, daemon, result) -> None:
        rev = daemon.validated
        if rev is None:
            return
        reports = {r.key: r for r in result.reports}
        wanted = []
        for suite in rev.suites:
            if not suite.valid:
                continue
            for key in suite.workspaces:
                r, plan = reports.get(key), daemon.desired.get(key)
                if r is None or plan is None or plan.kind != "inference" or not r.status.endpoint:
                    continue
                if r.status.state != "Ready" or not r.applied_revision:
                    continue
                signature = f"{r.applied_revision}:{_suite_hash(suite)}"
                if self._done.get((suite.path, key)) != signature:
                    self._done[(suite.path, key)] = signature
                    wanted.append((suite, key, r.status.endpoint, r.applied_revision))
        # suites or workspaces that left: their figures go too
        live = {(s.path, k) for s in rev.suites for k in s.workspaces}
        for gone in [k for k in self._done if k not in live]:
            self._done.pop(gone)
        kept = {}
        for key, entries in daemon.evals.items():
            entries = tuple(e for e in entries if (e["file"], key) in live)
            if entries:
                kept[key] = entries
        if kept != daemon.evals:
            daemon.evals = kept
        if wanted:
            with self._cond:
                self._queue.extend(wanted)
                self._cond.notify()

    def _seed(self) -> None:
        try:
            seed = figures_in_status(self._earlier())
        except Exception as e:  # a status branch that cannot be read: start without them
            log.warning("could not read earlier eval figures from status", error=error_text(e))
            return
        for key, entries in seed.items():
            for e in entries:
                self._last[(e["file"], key)] = {**e, "_previous": e.get("previous")}
        if seed:
            self.daemon.evals = {**seed, **self.daemon.evals}

    def _run(self) -> None:
        if self._earlier is not None:
            self._seed()
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                suite, key, endpoint, revision = self._queue.pop(0)
            try:
                doc = self._evaluate(suite, key, endpoint, revision)
            except Exception as e:  # never stop the daemon over an eval
                log.warning("eval of the deployed endpoint failed", suite=suite.name, error=error_text(e))
                continue
            entries = [e for e in self.daemon.evals.get(key, ()) if e["file"] != suite.path]
            self.daemon.evals = {
                **self.daemon.evals,
                key: tuple(sorted([*entries, doc], key=lambda e: e["file"])),
            }
            self.daemon.poke()  # a pass now, so the figures reach status without waiting for the poll

    def _evaluate(self, suite, key, endpoint: str, revision: str) -> dict:
        from ..targets.probe import Probe

        workspace = f"{key[0]}/{key[1]}"
        probe = Probe(endpoint, adapter=suite.adapter)
        try:
            cases = [probe.run_case(c) for c in suite.cases]
            result = SuiteResult(suite, workspace, cases)
            if self.load and suite.load is not None:
                seconds, tokens, latencies, failed = probe.run_load(suite.load)
                result = replace(
                    result,
                    load_seconds=seconds,
                    load_tokens=tokens,
                    load_latencies_ms=latencies,
                    load_failed=failed,
                )
        finally:
            probe.close()
        previous = self._last.get((suite.path, key))
        if previous is not None and previous["revision"] == revision[:12]:
            previous = previous.get("_previous")  # the suite changed, the workspace did not
        doc = figures(result, revision, previous)
        self._last[(suite.path, key)] = {**doc, "_previous": previous}
        log.info(
            "eval of the deployed endpoint",
            suite=suite.name,
            workspace=workspace,
            revision=revision[:12],
            pass_rate=doc["passRate"],
            thresholds_met=doc["thresholdsMet"],
            regression=doc["regression"],
        )
        return doc

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout=30)
