"""Publishes the daemon's status to git after passes, on its own thread.

Passes never wait for a push: each pass hands over its reports and the writer thread
commits the newest snapshot when it is free (older snapshots are simply superseded).
"""

from __future__ import annotations

import threading
import time

import structlog

from ..logs import error_text
from .statusgit import StatusWriter
from .statusview import scaling_paths, status_files

log = structlog.get_logger("kaito_gitops.status")

# A change that only autoscaling made (members coming and going, a scale event) waits this long
# after the previous commit: a set that scales every few seconds must not be a commit storm.
SCALING_GAP = 60.0


class StatusReporter:
    def __init__(self, writer: StatusWriter, scaling_gap: float = SCALING_GAP):
        self.writer = writer
        self.scaling_gap = scaling_gap
        self._committed_at = float("-inf")  # monotonic time of the last write
        self._hurry = False  # flush(): write what waits now
        self._pending: tuple[dict[str, str], str, bool] | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self.last_error = ""
        self._last_written: dict[str, str] | None = None
        self._last_seen: tuple | None = None  # (revision, reports) of the last pass handed over
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)
        self._thread.start()

    def on_pass(self, daemon, result) -> None:
        reports = result.reports
        objects = getattr(result, "objects", [])
        scaling = tuple(  # the autoscaler's figures change between passes that change no report
            (k, st.last_event, st.cold_start_seconds, round(st.gpu_seconds_saved / 360))
            for k, st in sorted((getattr(daemon, "scaling", None) or {}).items())
        )
        rollouts = tuple(
            (k, r.updated, r.waiting) for k, r in sorted((getattr(daemon, "rollouts", None) or {}).items())
        )
        seen = (daemon.revision, reports, objects, id(getattr(daemon, "validated", None)), scaling, rollouts)
        if seen == self._last_seen and self.last_error == "":
            return  # the usual pass: nothing to report changed, so nothing to serialise
        self._last_seen = seen
        sets = daemon.validated.inference_sets if getattr(daemon, "validated", None) is not None else ()
        files = status_files(
            reports,
            daemon.revision,
            objects,
            sets,
            getattr(daemon, "scaling", None),
            getattr(daemon, "set_endpoints", None),
            getattr(daemon, "rollouts", None),
        )
        if files == self._last_written:
            with self._cond:
                self._pending = None  # back to what git has: an older deferred snapshot must not land
            return  # nothing changed since the last commit: no work, no commit
        changes = _summary(self._last_written or {}, files)
        message = f"kaito-gitops: status at {daemon.revision[:12]}" + (f"\n\n{changes}" if changes else "")
        autoscaled = daemon.autoscaled() if hasattr(daemon, "autoscaled") else []
        old = self._last_written or {}
        changed = {p for p in set(old) | set(files) if old.get(p) != files.get(p)} - {"STATUS.md"}
        only_scaling = bool(autoscaled) and changed <= scaling_paths(autoscaled)
        with self._cond:
            self._pending = (files, message, only_scaling)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    if self._pending is None:
                        self._cond.wait()
                        continue
                    wait = self._committed_at + self.scaling_gap - time.monotonic()
                    if not self._pending[2] or wait <= 0 or self._hurry:
                        break
                    self._cond.wait(wait)  # a newer snapshot may replace it meanwhile
                if self._pending is None and self._stop:
                    return
                files, message, _ = self._pending
                self._pending = None
                self._busy = True
            try:
                result = self.writer.write(files, message)
                self._last_written = files
                if result.committed:
                    self._committed_at = time.monotonic()
                self.last_error = ""
                if result.committed:
                    log.info(
                        "status committed",
                        sha=result.sha[:12],
                        branch=self.writer.branch,
                        attempts=result.attempts,
                    )
            except Exception as e:  # keep going: the next pass retries with fresh data
                self.last_error = error_text(e)
                log.warning("status commit failed", error=self.last_error)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the pending snapshot is written (tests, shutdown)."""
        with self._cond:
            self._hurry = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)
            self._hurry = False

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=10)


def _summary(old: dict[str, str], new: dict[str, str]) -> str:
    import re

    lines = []
    state = re.compile(r"^state: (\S+)$", re.MULTILINE)
    for path in sorted(set(old) | set(new)):
        if not path.startswith("status/"):
            continue
        name = path.removeprefix("status/").removesuffix(".yaml")
        a = state.search(old.get(path, ""))
        b = state.search(new.get(path, ""))
        before, after = (a.group(1) if a else None), (b.group(1) if b else None)
        if before != after:
            lines.append(f"{name}: {before or 'new'} -> {after or 'removed'}")
    return "\n".join(lines[:50])
