"""A stand-in for `python -m sglang.launch_server`, for tests of runtime.inference's SGLang launcher.

Started through $KAITO_SGLANG_LAUNCHER, it receives exactly the arguments SGLang would. Standard
library only (it must start in a blink). It:

- appends JSON lines to $FAKE_SGLANG_RECORD: {"argv": [...], "pid": N} at start, {"request": body}
  for every chat completion, {"signal": "SIGTERM"} when asked to stop;
- prints its arguments, api key included, the way SGLang logs `server_args=...`, and, on stdout
  and stderr, the content of the file $FAKE_SGLANG_SHOW_FILE names (the tests name the API key
  file: a secret the child can read, which the launcher must redact from what it passes on);
- on a multi-node rank > 0 (`--node-rank` > 0) opens no HTTP port, like SGLang, and waits;
- otherwise serves on 127.0.0.1:--port, checking `Authorization: Bearer <--api-key>` like SGLang
  (401 `{"error": "Unauthorized"}`; /health and /metrics open):
  GET /health (503 until $FAKE_SGLANG_READY_FILE exists, when that is set), GET /v1/models,
  POST /v1/chat/completions (answers "echo: <last message>", streamed word by word when asked),
  GET /metrics;
- exits with $FAKE_SGLANG_EXIT_CODE (default 0) on SIGTERM or SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGV = sys.argv[1:]
RECORD = os.environ.get("FAKE_SGLANG_RECORD")
READY_FILE = os.environ.get("FAKE_SGLANG_READY_FILE")
SHOW_FILE = os.environ.get("FAKE_SGLANG_SHOW_FILE")


def flag(name: str, default: str | None = None) -> str | None:
    return ARGV[ARGV.index(name) + 1] if name in ARGV else default


def lora_names() -> list[str]:
    if "--lora-paths" not in ARGV:
        return []
    out = []
    for item in ARGV[ARGV.index("--lora-paths") + 1 :]:
        if item.startswith("--"):
            break
        out.append(item.split("=", 1)[0])
    return out


def record(obj: dict) -> None:
    if RECORD:
        with open(RECORD, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(obj) + "\n")


PORT = int(flag("--port", "30000") or 30000)
API_KEY = flag("--api-key")
SERVED = flag("--served-model-name") or flag("--model-path") or "model"
RANK = int(flag("--node-rank", "0") or 0)


def stop(signum: int, frame: object) -> None:
    record({"signal": signal.Signals(signum).name})
    sys.stdout.flush()
    os._exit(int(os.environ.get("FAKE_SGLANG_EXIT_CODE", "0")))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode())

    def _authorized(self) -> bool:
        if self.path.startswith(("/health", "/metrics")) or not API_KEY:
            return True
        if self.headers.get("Authorization") == f"Bearer {API_KEY}":
            return True
        self._json(401, {"error": "Unauthorized"})
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        if self.path == "/health":
            ready = not READY_FILE or os.path.exists(READY_FILE)
            self._send(200 if ready else 503, b"")
        elif self.path == "/v1/models":
            data = [{"id": SERVED, "object": "model", "owned_by": "sglang", "root": SERVED}]
            data += [
                {"id": n, "object": "model", "owned_by": "sglang", "parent": SERVED} for n in lora_names()
            ]
            self._json(200, {"object": "list", "data": data})
        elif self.path == "/metrics":
            self._send(200, b"sglang:num_requests_total 1\n", "text/plain; version=0.0.4")
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)  # read first: an unread body would poison the kept-alive connection
        if not self._authorized():
            return
        body = json.loads(raw or b"{}")
        if self.path != "/v1/chat/completions":
            self._json(404, {"detail": "Not Found"})
            return
        record({"request": body})
        messages = body.get("messages") or []
        if not messages:
            self._json(
                400,
                {
                    "object": "error",
                    "message": "messages is required",
                    "type": "BadRequestError",
                    "code": 400,
                },
            )
            return
        reply = "echo: " + str(messages[-1].get("content", ""))
        created = int(time.time())
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": body.get("model", SERVED),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(obj: object) -> None:
            data = (f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        words = reply.split(" ")
        for i, w in enumerate(words):
            delta = {"role": "assistant", "content": w} if i == 0 else {"content": " " + w}
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model", SERVED),
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            event(chunk)
        event(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model", SERVED),
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        )
        event("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main() -> None:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    record({"argv": ARGV, "pid": os.getpid()})
    # what SGLang's launcher logs at start: every server argument, the api key in clear
    print(
        f"server_args=ServerArgs(model_path={flag('--model-path')!r}, port={PORT}, api_key={API_KEY!r})",
        flush=True,
    )
    if SHOW_FILE:
        with open(SHOW_FILE, encoding="utf-8") as fh:
            secret = fh.read()
        print(f"token from {SHOW_FILE}: {secret}", flush=True)
        print(f"token from {SHOW_FILE}: {secret}", file=sys.stderr, flush=True)
    if RANK > 0:
        print(f"node rank {RANK}: no HTTP server", flush=True)
        while True:
            signal.pause()
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    print(f"fake SGLang serving on 127.0.0.1:{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
