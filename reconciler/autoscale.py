"""How many replicas an InferenceSet should run, from what its members are doing. Pure.

The figure is the one Knative and Kubernetes' HPA use: requests in flight (decoding, queued at a
member, or held by the activator while no member is ready) divided by the set's target per
replica, rounded up, kept within the bounds. Up is at once: waiting requests are users waiting.
Down is only to the highest figure of the last `scale-down-after` seconds (HPA's stabilisation
window), so a lull between bursts never stops a replica that the next burst needs, and a set
reaches zero only after a whole window without a single request.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .inferenceset import Scaling


@dataclass(frozen=True)
class Load:
    """What one set's members (and its activator) report at one moment."""

    running: float = 0.0  # sglang:num_running_reqs, summed
    queued: float = 0.0  # sglang:num_queue_reqs, summed
    held: float = 0.0  # requests the activator holds because no member is ready
    ready: int = 0  # members that answered
    requests: float = 0.0  # the activator's count of requests that came in, ever (-> `arrived`)
    arrived: float = 0.0  # requests that came in since the last look: short ones are never seen in flight
    unread: int = 0  # ready members (or the activator) whose /metrics did not answer: load unknown

    @property
    def in_flight(self) -> float:
        return self.running + self.queued + self.held


@dataclass(frozen=True)
class ScaleEvent:
    at: float  # wall-clock seconds
    old: int
    new: int
    reason: str


@dataclass
class SetScale:
    """One set's autoscaling state (its count is the daemon's): the window of recent figures, what
    it saved, its last event and cold start."""

    window: deque = field(default_factory=deque)  # (monotonic time, replicas wanted then)
    last_event: ScaleEvent | None = None
    gpu_seconds_saved: float = 0.0  # against running max-replicas all the time
    cold_start_seconds: float | None = None  # last 0 -> 1: first request held to first member ready
    cold_since: float | None = None  # monotonic time a request first waited at zero
    requests_seen: float | None = None  # the activator's request count at the last look
    watched_since: float | None = None  # first look: no scaling down before a whole window is seen
    unread: int = 0  # members whose load could not be read at the last look


def wanted(scaling: Scaling, load: Load) -> int:
    """Replicas for this load alone, within the bounds; at least one while requests come in."""
    n = math.ceil(load.in_flight / scaling.target_queue) if load.in_flight > 0 else 0
    if load.arrived > 0:
        n = max(n, 1)
    return min(scaling.max_replicas, max(scaling.min_replicas, n))


def decide(scaling: Scaling, state: SetScale, count: int, load: Load, now: float) -> tuple[int, str]:
    """The count to run now instead of `count`, and why ('' when it stays). Updates the window in `state`."""
    want = wanted(scaling, load)
    if state.watched_since is None:
        state.watched_since = now
    state.window.append((now, want))
    while state.window and state.window[0][0] < now - scaling.scale_down_after:
        state.window.popleft()
    current = min(scaling.max_replicas, max(scaling.min_replicas, count))
    if want > current:
        return want, (
            f"{load.in_flight:g} request(s) in flight, target {scaling.target_queue:g} per replica"
            if count
            else f"{load.in_flight:g} request(s) waiting with no replica running"
        )
    peak = max(w for _, w in state.window)
    # never down on a figure that is missing a member's load: a busy server answers /metrics slowest
    if peak < current and now - state.watched_since >= scaling.scale_down_after and not load.unread:
        window = _seconds(scaling.scale_down_after)
        if peak == 0:
            return 0, f"no request for {window}"
        return peak, f"at most {peak} replica(s) needed in the last {window}"
    if current != count:  # the bounds moved in git
        return current, f"bounds are {scaling.min_replicas}-{scaling.max_replicas}"
    return count, ""


def saved(scaling: Scaling, count: int, gpus_per_replica: int, seconds: float) -> float:
    """GPU-seconds not paid for over `seconds` at `count` replicas, against max-replicas."""
    return max(0, scaling.max_replicas - count) * gpus_per_replica * seconds


def _seconds(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"
