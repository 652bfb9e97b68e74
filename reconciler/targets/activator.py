"""An InferenceSet's one endpoint: forwards each request to a ready member, and holds it while none is.

Locally the daemon runs one per set, in-process, on the set's port (LocalTarget.serve_sets), with
the ready members' endpoints as its upstreams. In a cluster it is a small CPU Deployment made from
the daemon's image (`python -m reconciler.targets.activator --upstream http://<set>-members`)
behind the set's Service, so the Service keeps answering while the GPU members are at zero.

A request that finds no member is held, not refused: the daemon is told at once (locally) or sees
`kaito_gitops_activator_held_requests` on the activator's /metrics (in a cluster), starts one, and
every held request goes to it as soon as it answers. Only after `hold_timeout` is a request given
503. A member being removed is drained first: no new request goes to it, and it is stopped only
once those it has are answered. A connection that fails before anything was sent is tried on
another member (or held again), so a member that dies or is stopped loses no request that had not
reached it.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable

import httpx
import structlog
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..threaded_server import ThreadedServer

log = structlog.get_logger("kaito_gitops.activator")

HOLD_TIMEOUT = 600.0  # a GPU node and a model download can take minutes; a client that gives up first closes
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
DRAIN_MAX = 60.0  # a member being stopped finishes its requests for at most this long
MAX_BODY = 4 * 1024 * 1024  # as the model servers' own cap
MAX_HELD = 1000  # beyond it a request is refused at once: held requests are memory, and users waiting
HELD = "kaito_gitops_activator_held_requests"
REQUESTS = "kaito_gitops_activator_requests_total"  # every request that came in (the autoscaler's "busy")


class Activator:
    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        upstreams: Callable[[], list[str]],
        on_hold: Callable[[], None] = lambda: None,
        hold_timeout: float = HOLD_TIMEOUT,
    ):
        self.name = name
        self.upstreams = upstreams
        self.on_hold = on_hold
        self.hold_timeout = hold_timeout
        self.held = 0  # requests waiting for a member
        self.in_flight: dict[str, int] = {}  # upstream -> requests it is answering through us
        self.draining: set[str] = set()
        self.answered = 0
        self.requests = 0  # every request that came in
        self.refused = 0  # given 503 after hold_timeout
        self._lock = threading.Lock()
        self._registry = CollectorRegistry()
        Gauge(HELD, "requests waiting for a ready member", registry=self._registry).set_function(
            lambda: self.held
        )
        Gauge(
            "kaito_gitops_activator_in_flight_requests",
            "requests being answered by a member",
            registry=self._registry,
        ).set_function(lambda: sum(self.in_flight.values()))
        self._registry.register(_Requests(self))
        app = Starlette(
            routes=[
                Route("/metrics", self.metrics),
                Route("/health", self.health),
                Route("/{path:path}", self.forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
            ]
        )
        self.http = ThreadedServer(app, host=host, port=port, name=f"activator of {name}")
        self._client: httpx.AsyncClient | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Activator:
        self.http.start(timeout)
        return self

    @property
    def endpoint(self) -> str:
        return f"http://{self.http.config.host}:{self.http.port}"

    @property
    def port(self) -> int:
        return self.http.port

    def stop(self) -> None:
        self.http.stop()

    def drain(self, upstream: str) -> bool:
        """Send nothing more to `upstream`; True once it has no request of ours left."""
        with self._lock:
            self.draining.add(upstream)
            return not self.in_flight.get(upstream, 0)

    def drained(self, upstream: str, timeout: float = DRAIN_MAX) -> bool:
        """Wait (up to `timeout`) until `upstream` has answered every request we sent it."""
        deadline = time.monotonic() + timeout
        while self.in_flight.get(upstream, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.in_flight.get(upstream, 0)

    def forget(self, upstream: str) -> None:
        """`upstream` is gone (stopped): a new member may get its address."""
        with self._lock:
            self.draining.discard(upstream)

    # -- requests ----------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        """The activator's own health: probes must not wake a set at zero, nor keep it awake."""
        return JSONResponse({"status": "ok", "ready_members": len(self.upstreams())})

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self._registry), media_type="text/plain; version=0.0.4")

    def _pick(self, tried: set[str]) -> str:
        with self._lock:
            ready = [u for u in self.upstreams() if u not in self.draining and u not in tried]
            if not ready:
                return ""
            best = min(ready, key=lambda u: self.in_flight.get(u, 0))
            self.in_flight[best] = self.in_flight.get(best, 0) + 1
            return best

    def _done(self, upstream: str) -> None:
        with self._lock:
            self.in_flight[upstream] -= 1
            if not self.in_flight[upstream]:
                del self.in_flight[upstream]

    async def forward(self, request: Request) -> Response:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return _error(413, f"request body over {MAX_BODY} bytes", "body_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, f"request body over {MAX_BODY} bytes", "body_too_large")
        self.requests += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        deadline = time.monotonic() + self.hold_timeout
        holding, tried = False, set()
        try:
            while True:
                upstream = self._pick(tried)
                if upstream:
                    try:
                        req = self._client.build_request(
                            request.method, upstream + path, headers=headers, content=bytes(body)
                        )
                        resp = await self._client.send(req, stream=True)
                    except (httpx.ConnectError, httpx.ConnectTimeout):
                        self._done(upstream)  # nothing reached it: another member, or wait for one
                        tried.add(upstream)
                        continue
                    except BaseException:
                        self._done(upstream)
                        raise
                    self.answered += 1
                    close = self._closer(resp, upstream)
                    return _Relayed(
                        self._relay(resp, close),
                        status_code=resp.status_code,
                        headers={k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP},
                        close=close,
                    )
                if time.monotonic() > deadline:
                    self.refused += 1
                    msg = f"no replica of {self.name} became ready within {self.hold_timeout:g}s"
                    return _error(503, msg, "cold_start_timeout")
                if not holding and self.held >= MAX_HELD:
                    self.refused += 1
                    return _error(503, f"{self.held} requests already wait for {self.name}", "server_busy")
                if holding and await request.is_disconnected():
                    return Response(status_code=499)  # nobody to answer: stop holding it
                if not holding:
                    holding = True
                    self.held += 1
                    self.on_hold()
                tried.clear()  # a member that refused a connection may be up by the next look
                await asyncio.sleep(0.2)
        finally:
            if holding:
                self.held -= 1

    def _closer(self, resp: httpx.Response, upstream: str):
        """Closes the member's response and counts it answered, once: at the end of the body, or when
        the client went away mid-stream (the background task does not run then)."""
        closed = False

        async def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            try:
                await resp.aclose()
            finally:
                self._done(upstream)

        return close

    @staticmethod
    async def _relay(resp: httpx.Response, close):
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        finally:
            await close()


def _error(status: int, message: str, code: str) -> Response:
    headers = {"Retry-After": "30"} if status == 503 else {}
    return JSONResponse({"error": {"message": message, "code": code}}, status_code=status, headers=headers)


class _Relayed(StreamingResponse):
    """The member's answer, closed whatever happens: a client that leaves before the body starts
    cancels the response before its body iterator or background task ever run."""

    def __init__(self, content, *, close, **kw):
        super().__init__(content, **kw)
        self._close = close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._close()


class _Requests:
    """The request counter, read from the activator when scraped."""

    def __init__(self, activator: Activator):
        self.activator = activator

    def collect(self):
        family = CounterMetricFamily(REQUESTS.removesuffix("_total"), "requests that came in")
        family.add_metric([], self.activator.requests)
        yield family


def main(argv: list[str] | None = None) -> int:
    """The activator as a cluster Deployment runs it: one upstream, the Service of the set's members."""
    p = argparse.ArgumentParser(prog="python -m reconciler.targets.activator")
    p.add_argument("--name", required=True, help="the InferenceSet")
    p.add_argument("--upstream", required=True, help="the members' Service, e.g. http://phi-members")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--hold-timeout", type=float, default=HOLD_TIMEOUT)
    a = p.parse_args(argv)
    act = Activator(
        a.name, host=a.host, port=a.port, upstreams=lambda: [a.upstream], hold_timeout=a.hold_timeout
    )
    act.http.server.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
