"""The daemon's one HTTP port: /healthz, /readyz, /metrics and /webhook (GitHub).

Runs uvicorn in a background thread so the reconcile loop stays plain synchronous code.
/healthz says the process and its loop are alive (even while git or the cluster are down);
/readyz says this replica is the leader and has completed a pass, so a Service sends
webhooks only to the replica that acts on them.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .source.webhook import Answer, PullRequestEvent, PushEvent, WebhookReceiver
from .threaded_server import ThreadedServer

log = structlog.get_logger("kaito_gitops.server")


# How far past the body cap a delivery is still read (and dropped) so its sender gets a clean 413.
_DRAIN_FACTOR = 4


class OpsServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        metrics_text: Callable[[], bytes],
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        receiver: WebhookReceiver | None = None,
        on_push: Callable[[PushEvent], None] | None = None,
        on_pull_request: Callable[[PullRequestEvent], None] | None = None,
        count_webhook: Callable[[int], None] = lambda status: None,
    ):
        self.receiver = receiver
        self.on_push = on_push
        self.on_pull_request = on_pull_request
        self._count_webhook = count_webhook
        self._metrics_text = metrics_text
        self._healthy = healthy
        self._ready = ready
        app = Starlette(
            routes=[
                Route("/healthz", self.healthz),
                Route("/readyz", self.readyz),
                Route("/metrics", self.metrics),
                Route("/webhook", self.webhook, methods=["POST"]),
            ]
        )
        self.http = ThreadedServer(app, host=host, port=port, name="ops server", limit_concurrency=256)

    def start(self, timeout: float = 10.0) -> OpsServer:
        self.http.start(timeout)
        return self

    @property
    def port(self) -> int:
        return self.http.port

    def stop(self) -> None:
        self.http.stop()

    async def healthz(self, request: Request) -> Response:
        ok = self._healthy()
        return JSONResponse({"status": "ok" if ok else "stalled"}, status_code=200 if ok else 503)

    async def readyz(self, request: Request) -> Response:
        ok = self._ready()
        return JSONResponse({"status": "ready" if ok else "not ready"}, status_code=200 if ok else 503)

    async def metrics(self, request: Request) -> Response:
        return PlainTextResponse(self._metrics_text(), media_type="text/plain; version=0.0.4")

    async def webhook(self, request: Request) -> Response:
        response = await self._webhook(request)
        self._count_webhook(response.status_code)
        return response

    async def _webhook(self, request: Request) -> Response:
        if self.receiver is None:
            return JSONResponse({"message": "webhooks are not configured"}, status_code=404)
        cap = self.receiver.max_body
        too_big = JSONResponse({"message": f"body over {cap} bytes"}, status_code=413)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > _DRAIN_FACTOR * cap:
            return too_big  # not worth reading: the sender may see a reset instead of the 413
        body = bytearray()
        seen = 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen <= cap:
                body += chunk
            elif seen > _DRAIN_FACTOR * cap:
                return too_big
        # Past the cap the rest is read and dropped, not buffered: answering before the sender has
        # finished makes the socket close with unread data, and the sender sees a reset, not a 413.
        if seen > cap:
            return too_big
        answer: Answer = self.receiver.handle(dict(request.headers), bytes(body))
        if answer.status in (401, 413, 400):
            log.warning(
                "webhook refused",
                status=answer.status,
                reason=answer.message,
                delivery=request.headers.get("x-github-delivery", ""),
            )
        if isinstance(answer.event, PushEvent) and self.on_push:
            self.on_push(answer.event)
        elif isinstance(answer.event, PullRequestEvent) and self.on_pull_request:
            self.on_pull_request(answer.event)
        return JSONResponse({"message": answer.message}, status_code=answer.status)
