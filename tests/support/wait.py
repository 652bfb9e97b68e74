"""Waiting for something to happen in another thread or process, with a message when it does not."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_until(
    cond: Callable[[], Any],
    timeout: float = 20.0,
    what: str | Callable[[], str] = "the condition",
    *,
    step: float = 0.05,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> Any:
    """Call `cond` until it returns something truthy, and return that.

    Fails after `timeout` seconds, or as soon as `proc` has exited, naming `what` (a string, or
    a callable that describes the state at that moment) and the tail of `log`.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline or (proc is not None and proc.poll() is not None):
            break
        time.sleep(step)
    message = what() if callable(what) else what
    exited = (
        f" (the process exited with {proc.returncode})"
        if proc is not None and proc.poll() is not None
        else ""
    )
    tail = "\n" + log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"{message} not reached in {timeout:g} s{exited}{tail}")


def run_passes_until(
    daemon, cond: Callable[[], Any], timeout: float = 10.0, what: str = "the condition", *, step=0.05
):
    """Drive `daemon` by hand: run a pass, then check `cond`, until it holds; fail like `wait_until`,
    with every workspace's status in the message."""

    def passed() -> Any:
        daemon.run_pass()
        return cond()

    def describe() -> str:
        return f"{what} (statuses: {[(r.key, r.status) for r in daemon.reports()]})"

    return wait_until(passed, timeout, describe, step=step)
