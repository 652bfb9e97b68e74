"""`kaito-gitops eval PATH --target local`: deploy what the eval suites test, ask, score, report.

The workspaces the suites name run as real local processes (the local target, as `run --target
local` runs them); each suite's cases go to the real endpoint one at a time, then its load
section concurrently. Processes are stopped afterwards, on errors, Ctrl-C and SIGTERM too.
Exit 0 when every suite's thresholds hold, 1 when one does not (or could not run), 2 for usage
errors. With `--format json`, stdout is exactly one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


def _say(text: str) -> None:
    print(f"kaito-gitops eval: {text}", file=sys.stderr, flush=True)


@contextmanager
def _sigterm_interrupts():
    """SIGTERM (and SIGHUP) stop an eval like Ctrl-C: the finally blocks stop every process."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def wait_ready(target, key, plan, timeout: float) -> tuple[str, str]:
    """(endpoint, '') once the workspace serves, or ('', why not) at a refusal or the timeout."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        obs = target.observe(key, plan)
        if obs.endpoint:
            return obs.endpoint, ""
        refused = target.failed(key)
        if refused:
            return "", f"{key[0]}/{key[1]} did not start: {refused}"
        last = obs.process_error or last
        time.sleep(0.25)
    return "", f"{key[0]}/{key[1]} was not ready after {timeout:g} s" + (f" (last: {last})" if last else "")


def _settled(target, key, plan, seconds: float = 3.0):
    """What the target sees once it had time to notice a failure (the local target checks its
    processes twice a second): a request that failed while the endpoint still looks ready."""
    deadline = time.monotonic() + seconds
    obs = target.observe(key, plan)
    while obs.endpoint and time.monotonic() < deadline:
        time.sleep(0.25)
        obs = target.observe(key, plan)
    return obs


def _ask(probe, suite, target, key, plan) -> tuple[list, str]:
    """The suite's cases one at a time; stops at a server that went away, saying so (the
    remaining cases would only fail the same way, after their timeouts)."""
    cases = []
    for i, case in enumerate(suite.cases):
        gave_up = target.failed(key)  # refused, out of retries, or the preview was called off
        if gave_up:
            return cases, f"{key[0]}/{key[1]}: {gave_up}; {len(suite.cases) - i} case(s) not run"
        result = probe.run_case(case)
        cases.append(result)
        if result.passed or not result.why.startswith("request failed"):
            continue
        obs = _settled(target, key, plan)
        if not obs.endpoint:
            why = target.failed(key) or obs.process_error or "its process exited"
            left = len(suite.cases) - i - 1
            return cases, (
                f"{key[0]}/{key[1]} stopped serving during the suite, at case {case.id} ({why})"
                + (f"; {left} case(s) not run" if left else "")
            )
    return cases, ""


def run_suites(rev, state, suites, target, timeout: float, say=_say, http: dict | None = None) -> list:
    """Every suite against every workspace it names; one result each, errors included. `say`
    gets the progress lines (stderr for the command, the log for the daemon's previews); `http`,
    how to reach the endpoints (a cluster preview through the API server: its credentials)."""
    from .evals.scoring import SuiteResult
    from .targets.probe import Probe

    t0 = time.perf_counter()
    wanted = sorted({k for s in suites if s.valid for k in s.workspaces if k in state.plans})
    target.apply_objects(state.objects, set(), prune=False)
    for key in wanted:
        say(f"starting {key[0]}/{key[1]}")
        target.apply(state.plans[key])
    ready: dict = {}
    for key in wanted:
        ready[key] = wait_ready(target, key, state.plans[key], timeout)
        if ready[key][0]:
            say(f"{key[0]}/{key[1]} is ready at {ready[key][0]} ({time.perf_counter() - t0:.1f} s)")
    start_seconds = time.perf_counter() - t0
    results = []
    for suite in suites:
        if not suite.valid:
            first = next(f for f in suite.errors if f.is_error)
            results.append(SuiteResult(suite, "", [], error=f"invalid suite: {first.text()}"))
            continue
        for key in suite.workspaces:
            name = f"{key[0]}/{key[1]}"
            plan = state.plans.get(key)
            if plan is None or plan.kind != "inference":
                why = "is not valid" if plan is None else "is not an inference workspace"
                results.append(SuiteResult(suite, name, [], error=f"workspace {name} {why}"))
                continue
            endpoint, why = ready[key]
            if endpoint and not target.observe(key, plan).endpoint:
                # it stopped during an earlier suite: the target restarts it; this suite waits for that
                say(f"{name} is not serving; waiting for it to come back")
                endpoint, why = wait_ready(target, key, plan, timeout)
            if not endpoint:
                results.append(SuiteResult(suite, name, [], error=why, start_seconds=start_seconds))
                continue
            probe = Probe(endpoint, adapter=suite.adapter, **(http or {}))
            try:
                say(f"{suite.name} on {name}: {len(suite.cases)} case(s)")
                t_cases = time.perf_counter()
                cases, stopped = _ask(probe, suite, target, key, plan)
                result = SuiteResult(suite, name, cases, start_seconds=start_seconds, error=stopped)
                result.cases_seconds = time.perf_counter() - t_cases
                if suite.load is not None and not stopped:
                    say(
                        f"{suite.name} on {name}: {suite.load.requests} request(s), {suite.load.concurrency} at a time"
                    )
                    seconds, tokens, latencies, failed = probe.run_load(suite.load)
                    result.load_seconds, result.load_tokens = seconds, tokens
                    result.load_latencies_ms, result.load_failed = latencies, failed
            finally:
                probe.close()
            results.append(result)
    return results


def _evaluate(rev, suites, folder: Path, timeout: float) -> list:
    """Serve `rev`'s workspaces the suites name under `folder`, run the suites, stop everything."""
    from .planning import plan_revision
    from .targets.local import LocalTarget

    target = LocalTarget(folder)
    try:
        with _sigterm_interrupts():
            return run_suites(rev, plan_revision(rev), suites, target, timeout)
    finally:
        target.close()


def cmd_eval(args) -> int:
    from .cli import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, UsageError, _load, _load_base
    from .cli_commands import _print_findings
    from .evals.report import as_json, markdown, text

    if args.target != "local":
        raise UsageError(
            "--target local is the only eval target for now (kubernetes previews: docs/evals.md)"
        )
    rev = _load(args.paths, args, target="local")
    suites = [s for s in rev.suites if not args.suite or s.name in args.suite]
    if not suites:
        raise UsageError(f"no eval suites (evals/*.yaml) under {' '.join(args.paths)}")
    _print_findings(rev, stream=sys.stderr)
    base_rev = _load_base(args.paths, args.base, args) if args.base else None
    folder = (
        Path(args.local_state_dir) if args.local_state_dir else Path(tempfile.mkdtemp(prefix="kaito-eval-"))
    )
    t0 = time.perf_counter()
    base = None
    try:
        if base_rev is not None:
            _say(f"base: the workspaces at {args.base}")
            base = _evaluate(base_rev, suites, folder / "base", args.timeout)
            _say("head: the workspaces as they are in the files")
        results = _evaluate(rev, suites, folder / "head" if base_rev is not None else folder, args.timeout)
    except KeyboardInterrupt:
        _say("interrupted: every process it started is stopped")
        return EXIT_USAGE
    seconds = time.perf_counter() - t0
    if args.format == "json":
        print(json.dumps(as_json(results, seconds, base)))
    elif args.format == "markdown":
        print(markdown(results, base))
    else:
        print(text(results, seconds, base))
    return EXIT_OK if all(r.thresholds_met for r in results) else EXIT_FINDINGS


def register(sub, add_common) -> None:
    p = sub.add_parser(
        "eval", help="run the eval suites (evals/*.yaml) against their workspaces, served locally"
    )
    p.add_argument("paths", nargs="*", default=["."], help="the repository, or folders in it")
    p.add_argument("--target", default="local", help="where to serve the workspaces: local (real processes)")
    p.add_argument(
        "--suite", action="append", metavar="NAME", help="only this suite (its file name; repeatable)"
    )
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    p.add_argument(
        "--base",
        metavar="REV",
        help="also run the suites against the workspaces at git revision REV: base, head, delta",
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a workspace may take to become ready"
    )
    p.add_argument(
        "--local-state-dir", help="where the processes keep logs and data (default: a temporary folder)"
    )
    add_common(p)
    p.set_defaults(func=cmd_eval)
