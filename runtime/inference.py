"""`python -m runtime.inference ...`: serve a model, with Kaito's `/chat` beside the OpenAI API.

The arguments are runtime.inference_args' (what the planner renders). Two backends:

- `sglang` (the default, in the cluster): SGLang runs as a child process,
  `sglang_command(opts, port=<internal port>)` bound to 127.0.0.1, and this process
  serves the public port (5000, what the probes and the Service use) in front of it as a thin
  async proxy: `POST /chat` (runtime.chat, translated into one `/v1/chat/completions` call),
  `GET /health` (200 only while SGLang's own `/health` answers 200), and every other path
  streamed through to SGLang unchanged (`/v1/*`, `/metrics`, ...: the OpenAI endpoints are
  SGLang's own). Mounting `/chat` into SGLang's FastAPI app inside its process would save the hop,
  but SGLang's HTTP server cannot be imported where no CUDA build of its dependencies is
  installed (triton, sgl-kernel, flashinfer), so it could neither be built nor tested here; the
  proxy is the fallback, and it costs one loopback hop.
  On a multi-node rank > 0 (`POD_INDEX` / `--node-rank`) SGLang runs no HTTP server: this process
  serves only `/health` there, 200 while the SGLang child is alive.
  SIGTERM / SIGINT are forwarded to SGLang (SIGKILL to its process group after
  $KAITO_STOP_GRACE_SECONDS, default 50 s, inside Kubernetes' 60 s); when SGLang exits, for any
  reason, this process exits with its status (128 + N for signal N).
  The API key (`--api-key-file`) is checked by this proxy (constant time) and never reaches
  SGLang's command line, where every process in the pod could read it from /proc; SGLang runs
  without a key on loopback. `/health` and `/metrics` stay open for probes and Prometheus.
  Clients may name a LoRA adapter as Kaito documents (`"model": "<adapter>"`); the proxy rewrites
  it to SGLang's `<served>:<adapter>`. Output is still filtered for the key, as a second guard.
- `cpu` (laptops, CI): runtime.cpu_server on transformers, served by uvicorn on --host/--port;
  weights through runtime.weights (a local folder, the Hugging Face cache, or the SmolLM2 GGUF
  converted once), LoRA adapters from `find_adapters(--adapters-dir)`. Flags only SGLang
  understands (parallelism, `--` pass-through, --config-file) are ignored with a warning.

`--backend sglang` falls back to `cpu` when no GPU is visible (SGLang cannot serve without one,
whether or not it is importable); with a GPU but no `sglang` package it stops with an error.
`--dry-run` prints the command (the key redacted) and exits 0.

Environment: $KAITO_SGLANG_LAUNCHER replaces `python -m sglang.launch_server` (it receives exactly
the remaining arguments; tests start a stand-in SGLang this way), $KAITO_SGLANG_PORT the internal
port (default 5001).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import glob
import importlib.util
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any

from runtime.auth import bearer_ok
from runtime.inference_args import (
    SGLANG_INTERNAL_PORT,
    InferenceOptions,
    find_adapters,
    parse,
    redacted,
    sglang_command,
)

log = logging.getLogger("runtime.inference")

ENV_LAUNCHER = "KAITO_SGLANG_LAUNCHER"
ENV_INTERNAL_PORT = "KAITO_SGLANG_PORT"
ENV_STOP_GRACE = "KAITO_STOP_GRACE_SECONDS"
SGLANG_MODULE = ["-m", "sglang.launch_server"]
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
}


# ---------------------------------------------------------------- choices


def gpu_visible(env: dict[str, str] | None = None) -> bool:
    """Whether an NVIDIA (or AMD ROCm) GPU device is visible, without importing torch."""
    env = os.environ if env is None else env
    if env.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")


def sglang_installed() -> bool:
    try:
        return importlib.util.find_spec("sglang") is not None
    except (ImportError, ValueError):
        return False


def choose_backend(
    opts: InferenceOptions, env: dict[str, str] | None = None, gpu: bool | None = None
) -> tuple[str, str]:
    """("sglang" | "cpu", why)."""
    env = os.environ if env is None else env
    if opts.backend == "cpu":
        return "cpu", "--backend cpu"
    if env.get(ENV_LAUNCHER):
        return "sglang", f"${ENV_LAUNCHER} stands in for SGLang"
    if not (gpu_visible(env) if gpu is None else gpu):
        return "cpu", "no GPU is visible, and SGLang cannot serve without one"
    if not sglang_installed():
        raise SystemExit(
            "a GPU is visible but the sglang package is not installed: use an image with SGLang, "
            "or pass --backend cpu"
        )
    return "sglang", "a GPU and SGLang are present"


def read_api_key(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise SystemExit(f"--api-key-file {path}: {exc.strerror}") from None
    if not key:
        raise SystemExit(f"--api-key-file {path} is empty")
    return key


def internal_port(opts: InferenceOptions, env: dict[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    port = int(env.get(ENV_INTERNAL_PORT) or SGLANG_INTERNAL_PORT)
    return port + 1 if port == opts.port else port


def is_worker(opts: InferenceOptions) -> bool:
    """A multi-node rank > 0: SGLang runs no HTTP server there."""
    return opts.nnodes > 1 and opts.node_rank > 0


def child_command(opts: InferenceOptions, port: int, env: dict[str, str] | None = None) -> list[str]:
    """The SGLang command: sglang_command's, bound to loopback behind the proxy, launcher swapped if asked."""
    env = os.environ if env is None else env
    # SGLang listens on loopback only and the proxy checks the key, so the key stays out of
    # SGLang's command line (/proc/<pid>/cmdline is readable by everything in the pod)
    cmd = sglang_command(dataclasses.replace(opts, host="127.0.0.1"), port=port, api_key=None)
    launcher = env.get(ENV_LAUNCHER)
    if launcher:
        assert cmd[1:3] == SGLANG_MODULE, cmd[:3]
        cmd = shlex.split(launcher) + cmd[3:]
    return cmd


def exit_status(returncode: int | None) -> int:
    if returncode is None:
        return 1
    return 128 - returncode if returncode < 0 else returncode


# ---------------------------------------------------------------- the child's output, redacted


def _pump(stream: IO[bytes], out: IO[bytes], secrets: list[bytes]) -> None:
    """Copy the child's output line by line, replacing every secret."""
    try:
        for line in iter(stream.readline, b""):
            for s in secrets:
                line = line.replace(s, b"<redacted>")
            out.write(line)
            out.flush()
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------- the apps in front of SGLang


def proxy_app(
    internal: int,
    served_model_name: str,
    api_key: str | None,
    child: subprocess.Popen,
    adapters: frozenset[str] = frozenset(),
) -> Any:
    """/chat, /health and a pass-through of every other path to SGLang on 127.0.0.1:<internal>.

    The proxy checks the API key (SGLang itself runs without one, on loopback), and lets
    clients pick a LoRA adapter by its name as Kaito documents (`"model": "<adapter>"`),
    rewriting that to SGLang's `<served>:<adapter>`.
    """
    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    from runtime import chat

    state: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        timeout = httpx.Timeout(connect=5.0, read=None, write=60.0, pool=None)
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{internal}", timeout=timeout, limits=limits, trust_env=False
        ) as client:
            state["client"] = client
            yield

    def unavailable(exc: Exception) -> str:
        if child.poll() is not None:
            return f"SGLang exited with status {child.returncode}"
        return f"SGLang is not answering yet ({type(exc).__name__})"

    def authorized(request: Request) -> bool:
        return not api_key or bearer_ok(request.headers.get("authorization"), api_key)

    def denied() -> Response:
        err = {
            "message": "missing or wrong API key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        return JSONResponse({"error": err, "detail": "Unauthorized"}, status_code=401)

    async def health(request: Request) -> Response:
        if child.poll() is not None:
            return JSONResponse({"status": "sglang exited", "code": child.returncode}, status_code=503)
        try:
            r = await state["client"].get("/health", timeout=4.0)  # probes wait 5 s
        except httpx.HTTPError as exc:
            return JSONResponse({"status": "starting", "detail": unavailable(exc)}, status_code=503)
        if r.status_code == 200:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unhealthy", "sglang_status": r.status_code}, status_code=503)

    async def kaito_chat(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"detail": "Unauthorized"}, status_code=401)
        try:
            req = chat.parse_body(await request.body())
        except chat.ChatRequestError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        try:
            r = await state["client"].post(
                "/v1/chat/completions", json=chat.to_openai(req, served_model_name)
            )
        except httpx.HTTPError as exc:
            return JSONResponse({"detail": unavailable(exc)}, status_code=503)
        try:
            answer = r.json()
        except ValueError:
            answer = None
        if r.status_code != 200 or not isinstance(answer, dict):
            return JSONResponse(chat.error_detail(answer, r.status_code), status_code=r.status_code or 502)
        return JSONResponse(chat.from_openai(req, answer))

    async def passthrough(request: Request) -> Response:
        if request.url.path != "/metrics" and not authorized(request):
            return denied()
        client = state["client"]
        query = request.url.query
        url = httpx.URL(path=request.url.path, query=query.encode("latin-1")) if query else request.url.path
        headers = [
            (k, v)
            for k, v in request.headers.raw
            if k.decode("latin-1").lower() not in HOP_BY_HOP
            and k.lower() not in (b"content-length", b"authorization")
        ]
        # request bodies are small JSON: read whole, so SGLang gets a Content-Length, never a chunked upload
        content = await request.body()
        if (
            adapters
            and request.method == "POST"
            and request.url.path in ("/v1/chat/completions", "/v1/completions")
        ):
            content = _adapter_model(content, served_model_name, adapters)
        upstream = client.build_request(request.method, url, headers=headers, content=content)
        try:
            resp = await client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            err = {
                "message": unavailable(exc),
                "type": "server_error",
                "param": None,
                "code": "backend_unavailable",
            }
            return JSONResponse({"error": err}, status_code=503)
        out = StreamingResponse(
            resp.aiter_raw(), status_code=resp.status_code, background=BackgroundTask(resp.aclose)
        )
        out.raw_headers = [
            (k, v) for k, v in resp.headers.raw if k.decode("latin-1").lower() not in HOP_BY_HOP
        ]
        return out

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/chat", kaito_chat, methods=["POST"]),
            Route("/{path:path}", passthrough, methods=methods),
        ],
        lifespan=lifespan,
    )


def _adapter_model(content: bytes, served: str, adapters: frozenset[str]) -> bytes:
    """`"model": "<adapter>"` -> SGLang's `"<served>:<adapter>"`; anything else is left as sent."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return content
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and model in adapters:  # a list or dict is unhashable: not a name
        body["model"] = f"{served}:{model}"
        return json.dumps(body).encode()
    return content


def worker_app(child: subprocess.Popen, rank: int) -> Any:
    """A multi-node rank > 0: /health only, 200 while SGLang runs."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def health(request: Request) -> Response:
        if child.poll() is None:
            return JSONResponse({"status": "ok", "node_rank": rank})
        return JSONResponse({"status": "sglang exited", "code": child.returncode}, status_code=503)

    async def elsewhere(request: Request) -> Response:
        detail = (
            f"node rank {rank} runs SGLang without an HTTP server; send requests to rank 0 (the Service does)"
        )
        return JSONResponse({"detail": detail}, status_code=404)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
    return Starlette(
        routes=[Route("/health", health, methods=["GET"]), Route("/{path:path}", elsewhere, methods=methods)]
    )


# ---------------------------------------------------------------- serving


def _uvicorn_server(app: Any, host: str, port: int) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn without its own signal handling: this module decides what a signal means."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def install_signal_handlers(self) -> None:  # older uvicorn
            pass

    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False, timeout_graceful_shutdown=5
    )
    return Server(config)


async def _serve(server: Any) -> int:
    """server.serve(), with uvicorn's sys.exit (a port already in use) turned into a status."""
    try:
        await server.serve()
    except SystemExit as exc:
        return int(exc.code or 1)
    return 0 if server.started else 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if this launcher dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def supervise(opts: InferenceOptions, cmd: list[str], api_key: str | None, internal: int) -> int:
    """Run SGLang as a child and serve the public port until it exits; returns the exit status."""
    secrets = [api_key.encode()] if api_key else []
    loop = asyncio.get_running_loop()
    grace = float(os.environ.get(ENV_STOP_GRACE) or 50)
    stopping: dict[str, Any] = {"asked": None}
    holder: dict[str, subprocess.Popen] = {}

    def kill_group() -> None:
        child = holder["child"]
        if child.poll() is None:
            log.warning("SGLang did not stop within %.0f s; killing it", grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)

    def forward(sig: signal.Signals) -> None:
        child = holder["child"]
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s; stopping SGLang", sig.name)
        first = stopping["asked"] is None
        stopping["asked"] = sig
        if "child" in holder:  # else: forwarded as soon as it starts
            forward(sig)
            if first:
                loop.call_later(grace, kill_group)

    # handlers first: a SIGTERM during start-up must not leave SGLang running without us
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    child = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    holder["child"] = child
    log.info("SGLang started, pid %d", child.pid)
    if stopping["asked"] is not None:
        forward(stopping["asked"])
        loop.call_later(grace, kill_group)
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, sys.stdout.buffer, secrets), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, sys.stderr.buffer, secrets), daemon=True),
    ]
    for t in pumps:
        t.start()
    if is_worker(opts):
        app = worker_app(child, opts.node_rank)
        log.info("node rank %d: serving /health on %s:%d", opts.node_rank, opts.host, opts.port)
    else:
        served = opts.served_model_name or opts.model
        names = frozenset(name for name, _ in find_adapters(opts.adapters_dir))
        app = proxy_app(internal, served, api_key, child, names)
        log.info(
            "serving /chat, /health and SGLang's API on %s:%d (SGLang on 127.0.0.1:%d)",
            opts.host,
            opts.port,
            internal,
        )
    server = _uvicorn_server(app, opts.host, opts.port)
    serve_task = asyncio.create_task(_serve(server))
    child_task = asyncio.create_task(asyncio.to_thread(child.wait))
    done, _ = await asyncio.wait({serve_task, child_task}, return_when=asyncio.FIRST_COMPLETED)
    if child_task in done:
        status = exit_status(child.returncode)
        if stopping["asked"] is not None:
            log.info("SGLang stopped (status %d)", status)
        else:
            log.error("SGLang exited unexpectedly (status %d); exiting", status)
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(serve_task, 15)
    else:
        log.error("could not serve on %s:%d; stopping SGLang", opts.host, opts.port)
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            await asyncio.wait_for(child_task, grace)
        except TimeoutError:
            kill_group()
            await child_task
        status = serve_task.result() or 1
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)  # whatever SGLang left behind in its group
    for t in pumps:
        t.join(timeout=2)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    return status


def run_sglang(opts: InferenceOptions, dry_run: bool) -> int:
    api_key = read_api_key(opts.api_key_file)
    port = internal_port(opts)
    cmd = child_command(opts, port)
    shown = shlex.join(redacted(cmd))
    if api_key:
        shown = shown.replace(api_key, "<redacted>")
    if dry_run:
        print(shown)
        return 0
    log.info("starting SGLang: %s", shown)
    return asyncio.run(supervise(opts, cmd, api_key, port))


def run_cpu(opts: InferenceOptions, dry_run: bool, why: str) -> int:
    api_key = read_api_key(opts.api_key_file)
    adapters = dict(find_adapters(opts.adapters_dir))
    served = opts.served_model_name or opts.model
    ignored = []
    if opts.tp_size > 1 or opts.pp_size > 1 or opts.dp_size > 1:
        ignored.append("tensor/pipeline/data parallelism")
    if opts.nnodes > 1:
        ignored.append("--nnodes")
    if opts.extra:
        ignored.append("SGLang flags after --")
    if opts.config_file:
        ignored.append("--config-file")
    if opts.mem_fraction_static:
        ignored.append("--mem-fraction-static")
    summary = {
        "backend": "cpu",
        "why": why,
        "model": opts.model,
        "served_model_name": served,
        "listen": f"{opts.host}:{opts.port}",
        "adapters": adapters,
        "api_key": "<redacted>" if api_key else None,
        "dtype": opts.dtype,
        "ignored": ignored,
    }
    if dry_run:
        print("cpu server (transformers): " + json.dumps(summary))
        return 0
    log.info("CPU server (%s): %s", why, json.dumps(summary))
    if ignored:
        log.warning("the CPU server ignores: %s", ", ".join(ignored))
    if is_worker(opts):
        log.error("node rank %d: the CPU server runs on one node only", opts.node_rank)
        return 2

    from runtime.cpu_server import create_app

    holder: dict[str, Any] = {}

    def on_load_error(exc: BaseException) -> None:
        holder["error"] = exc
        holder["server"].should_exit = True

    app = create_app(
        opts.model,
        served,
        adapters,
        api_key=api_key,
        aliases=[opts.model],
        revision=opts.revision,
        dtype=opts.dtype,
        download_dir=opts.download_dir,
        context_length=opts.context_length,
        trust_remote_code=opts.trust_remote_code,
        on_load_error=on_load_error,
        max_running=opts.max_running_requests or 8,
        max_queued=opts.max_queued_requests or 64,
    )
    server = _uvicorn_server(app, opts.host, opts.port)
    holder["server"] = server

    async def main() -> int:
        loop = asyncio.get_running_loop()

        def stop(sig: signal.Signals) -> None:
            log.info("received %s; shutting down", sig.name)
            server.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        return await _serve(server)

    status = asyncio.run(main())
    if "error" in holder:
        log.error("the model could not be loaded: %s", holder["error"])
        return 1
    return status


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("KAITO_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    opts, dry_run = parse(sys.argv[1:] if argv is None else argv)
    backend, why = choose_backend(opts)
    if backend == "cpu":
        return run_cpu(opts, dry_run, why)
    return run_sglang(opts, dry_run)


if __name__ == "__main__":
    sys.exit(main())
