"""The autoscaler: every few seconds, each autoscaled InferenceSet's load -> its count.

It reads load through the daemon's target (the only part that touches the network), decides
with autoscale.decide (pure), and hands a new count to the daemon, which applies it at the start
of its next pass, at once: members are planned, started and removed by the ordinary pass. A
request held at zero replicas wakes it immediately instead of at the next tick. It never writes
git: the bounds are in git, the count is the daemon's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import structlog

from .autoscale import Load, ScaleEvent, SetScale, decide, saved
from .logs import error_text

log = structlog.get_logger("kaito_gitops.scaler")

EVERY = 2.0


class Scaler:
    def __init__(self, daemon, every: float = EVERY, clock=time.monotonic):
        self.daemon = daemon
        self.every = every
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last: dict[tuple[str, str], float] = {}  # set -> clock at its last tick
        self._thread: threading.Thread | None = None
        self.is_leader = lambda: True  # set by `run` under leader election: only the leader scales
        if hasattr(daemon.target, "on_hold"):
            daemon.target.on_hold = lambda key: self._wake.set()

    def start(self) -> Scaler:
        self._thread = threading.Thread(target=self._run, name="scaler", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # a tick's failure is logged; the next one tries again
                log.warning("autoscaler tick failed", error=error_text(e))
            self._wake.wait(self.every)
            self._wake.clear()

    def tick(self) -> None:
        d = self.daemon
        if not self.is_leader():
            return
        states = d.scaling
        sets = d.autoscaled()
        for key in [k for k in states if k not in {s.key for s in sets}]:
            del states[key]
            self._last.pop(key, None)
        for s in sets:
            count = d.count_of(s.key)
            if count is None:  # not loaded by a pass yet
                continue
            members = [(s.namespace, s.member_name(i)) for i in range(count)]
            load = d.target.set_load(s, members)
            if load is None:
                continue
            self._step(s, states.setdefault(s.key, SetScale()), count, load)

    def _step(self, s, state: SetScale, count: int, load: Load) -> None:
        d, now = self.daemon, self.clock()
        ns, name = s.key
        last = self._last.get(s.key, now)
        self._last[s.key] = now
        state.gpu_seconds_saved += saved(s.scaling, count, d.member_gpus(s), now - last)
        if state.requests_seen is not None and load.requests >= state.requests_seen:
            load = replace(load, arrived=load.requests - state.requests_seen)
        state.requests_seen = load.requests
        if count == 0 and load.held and state.cold_since is None:
            state.cold_since = now
        if state.cold_since is not None and load.ready:
            state.cold_start_seconds = round(now - state.cold_since, 1)
            state.cold_since = None
            d.metrics.cold_start_seconds.labels(namespace=ns, inferenceset=name).observe(
                state.cold_start_seconds
            )
            log.info("cold start", inferenceset=f"{ns}/{name}", seconds=state.cold_start_seconds)
        if load.unread and not state.unread:
            log.warning(
                "cannot read the load of every member: not scaling down",
                inferenceset=f"{ns}/{name}",
                unread=load.unread,
            )
        state.unread = load.unread
        new, why = decide(s.scaling, state, count, load, now)
        d.metrics.gpu_hours_saved.labels(namespace=ns, inferenceset=name).set(state.gpu_seconds_saved / 3600)
        d.metrics.set_replicas.labels(namespace=ns, inferenceset=name).set(new)
        if new == count:
            return
        state.last_event = ScaleEvent(time.time(), count, new, why)
        direction = "up" if new > count else "down"
        d.metrics.scale_events.labels(namespace=ns, inferenceset=name, direction=direction).inc()
        log.info(
            "scaling",
            inferenceset=f"{ns}/{name}",
            replicas=f"{count} -> {new}",
            reason=why,
            running=load.running,
            queued=load.queued,
            held=load.held,
        )
        d.scale(s.key, new)
