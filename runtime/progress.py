"""Tuning progress: one JSON object in a status file, plus one JSON log line per update.

The file (`--progress-file`, else env KAITO_PROGRESS_FILE) is replaced atomically (temporary
file + rename), so a reader never sees half of it. `read_progress(path)` reads it back; the daemon
and the local target use it. Fields:

    state            Running | Succeeded | Failed
    phase            starting, loading data, loading model, training, saving, pushing, done
    step, total_steps, epoch, loss, learning_rate, tokens_per_second, eta_seconds, elapsed_seconds
    history          [[step, loss], ...] (the last HISTORY_MAX logged losses)
    error            why it failed (null otherwise)
    started_at, updated_at (UTC, ISO 8601), and context the trainer adds (model, method, image, digest)

Standard library only at import time; `make_callback` imports transformers when called.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ENV = "KAITO_PROGRESS_FILE"
RUNNING, SUCCEEDED, FAILED = "Running", "Succeeded", "Failed"
HISTORY_MAX = 500


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log_line(event: str, level: str = "info", **fields: Any) -> None:
    """One JSON object on stdout."""
    rec = {"ts": now_iso(), "level": level, "event": event, **fields}
    sys.stdout.write(json.dumps(rec, default=str) + "\n")
    sys.stdout.flush()


def progress_path(arg: str | os.PathLike | None = None) -> Path | None:
    value = arg or os.environ.get(ENV)
    return Path(value) if value else None


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, default=str, separators=(",", ":"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_progress(path: str | os.PathLike) -> dict | None:
    """The last progress written to `path`, or None when there is none (yet) or it is unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ProgressWriter:
    """Holds the current progress; every update rewrites the file and (optionally) logs a line."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        logger: Callable[..., None] | None = log_line,
        enabled: bool = True,
        **context: Any,
    ):
        self.path = Path(path) if path else None
        self.logger = logger
        self.enabled = enabled
        self.started = time.monotonic()
        self.data: dict[str, Any] = {
            "state": RUNNING,
            "phase": "starting",
            "step": 0,
            "total_steps": None,
            "epoch": None,
            "loss": None,
            "learning_rate": None,
            "tokens_per_second": None,
            "eta_seconds": None,
            "elapsed_seconds": 0.0,
            "error": None,
            "started_at": now_iso(),
            "updated_at": now_iso(),
            "history": [],
            **context,
        }

    def update(self, event: str | None = "progress", log: bool = True, **fields: Any) -> None:
        if not self.enabled:
            return
        self.data.update(fields)
        self.data["elapsed_seconds"] = round(time.monotonic() - self.started, 3)
        self.data["updated_at"] = now_iso()
        if self.path is not None:
            try:
                write_json_atomic(self.path, self.data)
            except OSError as e:  # progress must never break training
                if self.logger:
                    self.logger("progress_write_failed", level="warning", error=str(e))
        if log and event and self.logger:
            shown = {k: v for k, v in self.data.items() if k not in ("history", "started_at", "updated_at")}
            level = "error" if self.data["state"] == FAILED else "info"
            self.logger(event, level=level, **shown)

    def phase(self, phase: str, **fields: Any) -> None:
        self.update("phase", phase=phase, **fields)

    def add_loss(self, step: int, loss: float) -> None:
        hist = self.data["history"]
        hist.append([step, round(float(loss), 6)])
        if len(hist) > HISTORY_MAX:
            del hist[: len(hist) - HISTORY_MAX]

    def succeeded(self, **fields: Any) -> None:
        self.update("succeeded", state=SUCCEEDED, phase="done", eta_seconds=0, error=None, **fields)

    def failed(self, error: str, **fields: Any) -> None:
        self.update("failed", state=FAILED, error=error, eta_seconds=None, **fields)


def make_callback(writer: ProgressWriter, min_interval: float = 1.0):
    """A transformers TrainerCallback that feeds `writer` (on the main process only)."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self):
            self.t_begin = None
            self.last_write = 0.0
            self.last_tokens: tuple[float, float] | None = None  # (time, num_tokens)

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.t_begin = time.monotonic()
            self.last_tokens = (self.t_begin, 0.0)
            writer.update(
                "train_begin",
                phase="training",
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=state.epoch or 0.0,
            )

        def _eta(self, state) -> float | None:
            if not self.t_begin or not state.global_step or not state.max_steps:
                return None
            per_step = (time.monotonic() - self.t_begin) / state.global_step
            return round(per_step * max(state.max_steps - state.global_step, 0), 1)

        def on_step_end(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            now = time.monotonic()
            if now - self.last_write >= min_interval or state.global_step >= state.max_steps:
                self.last_write = now
                writer.update(
                    None,
                    step=state.global_step,
                    total_steps=state.max_steps,
                    epoch=round(state.epoch or 0.0, 4),
                    eta_seconds=self._eta(state),
                )

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            fields: dict[str, Any] = {
                "step": state.global_step,
                "total_steps": state.max_steps,
                "eta_seconds": self._eta(state),
            }
            if "epoch" in logs or state.epoch is not None:
                fields["epoch"] = round(float(logs.get("epoch", state.epoch or 0.0)), 4)
            if "loss" in logs:
                fields["loss"] = round(float(logs["loss"]), 6)
                writer.add_loss(state.global_step, logs["loss"])
            if "learning_rate" in logs:
                fields["learning_rate"] = float(logs["learning_rate"])
            if "eval_loss" in logs:
                fields["eval_loss"] = round(float(logs["eval_loss"]), 6)
            if "num_tokens" in logs and self.last_tokens is not None:
                t, n = time.monotonic(), float(logs["num_tokens"])
                t0, n0 = self.last_tokens
                if t > t0 and n >= n0:
                    fields["tokens_per_second"] = round((n - n0) / (t - t0), 1)
                self.last_tokens = (t, n)
            if "train_runtime" in logs:  # the summary at the end of train()
                fields["train_runtime_seconds"] = round(float(logs["train_runtime"]), 3)
                if "train_loss" in logs:
                    fields["train_loss"] = round(float(logs["train_loss"]), 6)
            self.last_write = time.monotonic()
            writer.update("train_log", **fields)

    return ProgressCallback()
