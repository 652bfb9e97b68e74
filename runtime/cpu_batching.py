"""Continuous batching for the CPU server: transformers' manager, fed and drained per request.

New requests join the running batch between decode steps; each request waits on its own queue
while one background thread (the manager's) runs the model for all of them. What this module
adds around the engine is only what a server needs: a bounded admission (at most `max_running`
requests in the batch, `max_queued` more waiting, a clear "busy" beyond that), stop strings
and cancellation (a stopped or abandoned request leaves the batch at once), and the figures
autoscaling reads (`sglang:num_running_reqs`, `sglang:num_queue_reqs`).

Per-request sampling (temperature, top-p, top-k) uses the manager's per-request logits
processors. Greedy requests go to a manager of their own (`greedy=True`), without processors. Requests the manager cannot serve as asked (a seed,
min_tokens, a repetition penalty) are not sent here: the server decodes them on its own path.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("runtime.cpu_batching")

POLL = 0.05  # how often a waiting request looks at its cancel flag
KV_CACHE_TOKENS = 8192  # tokens of KV cache shared by a batch, at least one full context (see Batcher)


class Busy(Exception):
    """The batch and its queue are full: retry after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"server busy: retry after {retry_after}s")
        self.retry_after = retry_after


@dataclass
class Result:
    token_ids: list[int]
    finish_reason: str  # stop | length | abort


class Batcher:
    def __init__(
        self,
        model: Any,
        eos_ids: set[int],
        defaults: dict[str, float],
        *,
        max_running: int = 8,
        max_queued: int = 64,
        max_batch_tokens: int = 256,
        page_size: int = 32,
        max_context: int = 2048,
        greedy: bool = False,
    ):
        """`greedy`: a batch of greedy requests only (argmax, no logits processors): the sampling
        processors cost about a sixth of the decode step on CPU even at top-k 1."""
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        self.max_running, self.max_queued, self.greedy = max_running, max_queued, greedy
        self.eos_ids = sorted(eos_ids)
        # Every warper must exist for per-request values to apply (the manager builds a warper
        # only for a default that changes something), so the defaults here are never neutral.
        gen = GenerationConfig(
            do_sample=not greedy,
            temperature=float(defaults.get("temperature", 0.7)) or 0.7,
            top_p=float(defaults.get("top_p", 0.95)) if defaults.get("top_p", 1.0) < 1.0 else 0.95,
            top_k=int(defaults.get("top_k", 50)) or 50,
            max_new_tokens=256,
            eos_token_id=self.eos_ids or -1,
        )
        # The paged KV cache is allocated whole when the manager starts: room for every request
        # at full context would be 3 GiB for SmolLM2 (8k context x 8). Room for one full-context
        # request (or 8k tokens shared) is what a laptop can give; requests wait for pages beyond.
        cache_tokens = min(max_context * max_running, max(max_context, KV_CACHE_TOKENS))
        cfg = ContinuousBatchingConfig(
            page_size=page_size,
            num_blocks=max(16, -(-cache_tokens // page_size)),
            max_batch_tokens=max_batch_tokens,
            max_requests_per_batch=max_running,
            use_async_batching=False,
            use_cuda_graph=False,
            per_request_processors=not greedy,
        )
        self.manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cfg)
        self._slots = threading.BoundedSemaphore(max_running)
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self._sinks: dict[str, queue.SimpleQueue] = {}
        self._count = 0
        self._stopped = threading.Event()
        self.manager.start()
        self._router = threading.Thread(target=self._route, name="cb-router", daemon=True)
        self._router.start()

    # -- figures --------------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def full(self) -> bool:
        return self._waiting + self._running >= self.max_running + self.max_queued

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: a batch's worth of waiting requests per second."""
        return 1 + self._waiting // max(1, self.max_running)

    # -- one request ------------------------------------------------------------------------------
    def generate(
        self,
        ids: list[int],
        max_new: int,
        sampling: dict[str, float | int],
        *,
        ignore_eos: bool = False,
        on_tokens: Callable[[list[int]], bool] | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """Decode `ids` in the shared batch, blocking this thread until done.

        `sampling`: temperature (0: greedy), top_p, top_k. `on_tokens` gets each new piece and
        returns True to stop (a stop string); `cancel` set from elsewhere abandons the request.
        """
        cancel = cancel or threading.Event()
        with self._lock:
            if self.full():
                raise Busy(self.retry_after())
            self._waiting += 1
        try:
            while not self._slots.acquire(timeout=POLL):
                if cancel.is_set():
                    return Result([], "abort")
        finally:
            with self._lock:
                self._waiting -= 1
        with self._lock:
            self._running += 1
        try:
            return self._decode(ids, max_new, sampling, ignore_eos, on_tokens, cancel)
        finally:
            with self._lock:
                self._running -= 1
            self._slots.release()

    def _decode(self, ids, max_new, sampling, ignore_eos, on_tokens, cancel) -> Result:
        temperature = float(sampling.get("temperature", 1.0))
        kwargs: dict[str, Any] = (
            {}
            if self.greedy
            else {"temperature": 1.0, "top_k": 1, "top_p": 1.0}
            if temperature <= 0
            else {
                "temperature": temperature,
                "top_k": int(sampling.get("top_k", 0)) or 0,
                "top_p": float(sampling.get("top_p", 1.0)),
            }
        )
        sink: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            self._count += 1
            rid = f"r{self._count}"
            self._sinks[rid] = sink
        try:
            self.manager.add_request(
                list(ids),
                request_id=rid,
                max_new_tokens=max_new,
                streaming=True,
                eos_token_id=-1 if ignore_eos else (self.eos_ids or -1),
                **kwargs,
            )
            seen = 0
            tokens: list[int] = []
            while True:
                if cancel.is_set():
                    self.manager.cancel_request(rid)
                    return Result(tokens, "abort")
                try:
                    out = sink.get(timeout=POLL)
                except queue.Empty:
                    if self._stopped.is_set():
                        raise RuntimeError("the continuous batching engine stopped") from None
                    continue
                if out.error:
                    raise RuntimeError(f"continuous batching failed: {out.error}")
                tokens = [int(t) for t in out.generated_tokens]
                new, seen = tokens[seen:], len(tokens)
                if new and on_tokens is not None and on_tokens(new):
                    self.manager.cancel_request(rid)
                    return Result(tokens, "stop")
                if out.is_finished():
                    if tokens and tokens[-1] in self.eos_ids and not ignore_eos:
                        return Result(tokens, "stop")
                    return Result(tokens, "length" if len(tokens) >= max_new else "stop")
        finally:
            with self._lock:
                self._sinks.pop(rid, None)

    # -- the router ---------------------------------------------------------------------------------
    def _route(self) -> None:
        """One reader of the manager's output queue, handing each result to its request."""
        while not self._stopped.is_set():
            try:
                out = self.manager.get_result(timeout=0.1)
            except Exception as exc:  # the manager died: every waiter ends
                log.error("continuous batching stopped: %s", exc)
                self._stopped.set()
                return
            if out is None:
                if not self.manager.is_running():  # its thread died: nothing more will come
                    log.error("the continuous batching thread stopped; requests fall back to generate")
                    self._stopped.set()
                    return
                continue
            with self._lock:
                sink = self._sinks.get(out.request_id)
            if sink is not None:
                sink.put(out)

    def close(self) -> None:
        self._stopped.set()
        try:
            self.manager.stop(block=True)
        except TypeError:
            self.manager.stop()
