"""Tuning progress records, as the tuning runtime writes them (file) and logs them (JSON lines)."""

from __future__ import annotations

import math
from typing import Any

from .status import Progress


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None  # a NaN loss, or a log line with Infinity: not a number to show


def progress_from_dict(data: Any) -> Progress | None:
    """A Progress from one record; None when it is not a progress record."""
    if not isinstance(data, dict) or "step" not in data:
        return None
    step = _num(data.get("step"))
    total = _num(data.get("total_steps", data.get("max_steps")))
    if step is None:
        return None
    return Progress(
        step=int(step),
        total_steps=int(total or 0),
        loss=_num(data.get("loss")),
        learning_rate=_num(data.get("learning_rate")),
        epoch=_num(data.get("epoch")),
        tokens_per_second=_num(data.get("tokens_per_second")),
        eta_seconds=_num(data.get("eta_seconds")),
        state=str(data.get("state") or ""),
        error=str(data.get("error") or ""),
    )
