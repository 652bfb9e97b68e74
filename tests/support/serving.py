"""The daemon as `kaito-gitops run` serves it, inside a test: its ops server and its loop."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

from reconciler.runcmd import ops_server
from reconciler.source.webhook import WebhookReceiver


@contextlib.contextmanager
def serving(
    daemon,
    *,
    secret: bytes | None = None,
    is_leader: Callable[[], bool] = lambda: True,
    reviewers: Sequence = (),
) -> Iterator[str]:
    """Start `runcmd.ops_server` for `daemon` on 127.0.0.1 (webhooks when `secret` is given) and
    `daemon.run_forever(is_leader)` in a thread; yield the server's base URL.

    On exit: stop the loop, wait for it, stop the server and close the daemon.
    """
    receiver = WebhookReceiver(secret) if secret else None
    server = ops_server(
        daemon, ("127.0.0.1", 0), is_leader=is_leader, receiver=receiver, reviewers=reviewers
    ).start()
    loop = threading.Thread(target=daemon.run_forever, args=(is_leader,), daemon=True)
    loop.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        daemon.stop()
        loop.join(10)
        server.stop()
        daemon.close()
