"""An ASGI app served by uvicorn on a thread of its own, so the code around it stays synchronous.

The ops server (server.py) and each InferenceSet's activator (targets/activator.py) run this way.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def port_is_free(host: str, port: int) -> bool:
    """Whether `port` can be bound now, as uvicorn binds it (SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class ThreadedServer:
    def __init__(self, app, *, host: str, port: int, name: str, **options):
        self.name = name
        self.config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=5, **options
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    def start(self, timeout: float = 10.0):
        """Serve; an OSError at once when the port is taken (uvicorn would say so only in its log)."""
        if self.config.port and not port_is_free(self.config.host, self.config.port):
            raise OSError(f"port {self.config.port} on {self.config.host} is in use")
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError(f"the {self.name} did not start on port {self.config.port}")
        return self

    @property
    def port(self) -> int:
        for s in self.server.servers:
            for sock in s.sockets:
                return sock.getsockname()[1]
        return self.config.port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
