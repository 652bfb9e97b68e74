"""Publishes the daemon's status to git after passes, on its own thread.

Passes never wait for a push: each pass hands over its reports and the writer thread
commits the newest snapshot when it is free (older snapshots are simply superseded).
"""

from __future__ import annotations

import threading

import structlog

from ..logs import error_text
from .statusgit import StatusWriter
from .statusview import status_files

log = structlog.get_logger("kaito_gitops.status")


class StatusReporter:
    def __init__(self, writer: StatusWriter):
        self.writer = writer
        self._pending: tuple[dict[str, str], str] | None = None
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
        seen = (daemon.revision, reports, objects, id(getattr(daemon, "validated", None)))
        if seen == self._last_seen and self.last_error == "":
            return  # the usual pass: nothing to report changed, so nothing to serialise
        self._last_seen = seen
        sets = daemon.validated.inference_sets if getattr(daemon, "validated", None) is not None else ()
        files = status_files(reports, daemon.revision, objects, sets)
        if files == self._last_written:
            return  # nothing changed since the last commit: no work, no commit
        changes = _summary(self._last_written or {}, files)
        message = f"kaito-gitops: status at {daemon.revision[:12]}" + (f"\n\n{changes}" if changes else "")
        with self._cond:
            self._pending = (files, message)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._pending is None and self._stop:
                    return
                files, message = self._pending
                self._pending = None
                self._busy = True
            try:
                result = self.writer.write(files, message)
                self._last_written = files
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
            self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

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
