"""The command line of `python -m runtime.inference`, and the SGLang command it becomes.

Pure (argparse and the environment in, a list of strings out), so the planner's rendered
command lines can be checked against SGLang's own parser without a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 5000
SGLANG_INTERNAL_PORT = 5001  # SGLang's own HTTP server when the /chat proxy fronts it
DIST_INIT_PORT = 20000


@dataclass
class InferenceOptions:
    model: str
    revision: str | None = None
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    tp_size: int = 1
    pp_size: int = 1
    dp_size: int = 1
    nnodes: int = 1
    node_rank: int = 0
    dist_init_addr: str | None = None
    context_length: int | None = None
    mem_fraction_static: float | None = None
    dtype: str | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    adapters_dir: str | None = None
    config_file: str | None = None
    api_key_file: str | None = None
    backend: str = "sglang"
    trust_remote_code: bool = False
    download_dir: str | None = None
    max_running_requests: int | None = None  # SGLang's flag; the CPU server's batch size (default 8)
    max_queued_requests: int | None = None  # SGLang's flag; requests waiting beyond it get a 503
    extra: list[str] = field(default_factory=list)  # SGLang flags passed through after `--`


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runtime.inference",
        description="Serve a model with SGLang (or the CPU server) plus Kaito's /chat.",
    )
    p.add_argument("--model", required=True, help="Hugging Face repo id or a local folder")
    p.add_argument("--revision")
    p.add_argument("--served-model-name")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--tp-size", type=int, default=1)
    p.add_argument("--pp-size", type=int, default=1)
    p.add_argument("--dp-size", type=int, default=1)
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument(
        "--node-rank", type=int, default=None, help="default: $POD_INDEX (the StatefulSet pod index), else 0"
    )
    p.add_argument("--dist-init-addr", help="host:port of rank 0 for multi-node")
    p.add_argument("--context-length", type=int)
    p.add_argument("--mem-fraction-static", type=float)
    p.add_argument("--dtype")
    p.add_argument("--tool-call-parser")
    p.add_argument("--reasoning-parser")
    p.add_argument("--adapters-dir", help="each sub-folder with adapter_config.json is a LoRA adapter")
    p.add_argument("--config-file", help="inference_config.yaml from a ConfigMap not kept in git")
    p.add_argument("--api-key-file", help="file holding the API key clients must send")
    p.add_argument(
        "--backend", choices=["sglang", "cpu"], default=os.environ.get("KAITO_INFERENCE_BACKEND", "sglang")
    )
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--download-dir")
    p.add_argument("--max-running-requests", type=int, help="requests decoding together (CPU default 8)")
    p.add_argument("--max-queued-requests", type=int, help="requests waiting for a slot (CPU default 64)")
    p.add_argument(
        "--dry-run", action="store_true", help="print the server command (secrets redacted) and exit"
    )
    return p


def parse(argv: list[str], env: dict[str, str] | None = None) -> tuple[InferenceOptions, bool]:
    """Split our options from SGLang pass-through flags (after `--`)."""
    env = os.environ if env is None else env
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ns = parser().parse_args(argv)
    rank = ns.node_rank if ns.node_rank is not None else int(env.get("POD_INDEX", "0") or 0)
    # every option from its flag, so a new field cannot be left out (a field without a flag fails here)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(InferenceOptions) if f.name != "extra"}
    values["node_rank"] = rank
    opts = InferenceOptions(**values, extra=extra)
    return opts, ns.dry_run


def find_adapters(adapters_dir: str | None) -> list[tuple[str, str]]:
    """(name, path) of every LoRA adapter folder: Kaito's layout is /mnt/adapter/<name>/adapter_config.json."""
    if not adapters_dir or not os.path.isdir(adapters_dir):
        return []
    out = []
    for d in sorted(Path(adapters_dir).iterdir()):
        if (d / "adapter_config.json").is_file():
            out.append((d.name, str(d)))
        elif (d / "data" / "adapter_config.json").is_file():  # an image unpacked without moving /data up
            out.append((d.name, str(d / "data")))
    return out


def config_flags(config_file: str | None) -> list[str]:
    """Flags from an inference_config.yaml mounted at run time (translated like the planner does)."""
    if not config_file:
        return []
    from reconciler.configs import parse_inference_config  # the same translation the planner uses

    with open(config_file, encoding="utf-8") as fh:
        parsed = parse_inference_config(fh.read(), config_file)
    errors = [i for i in parsed.issues if i.severity.value == "error"]
    if errors:
        raise SystemExit(
            "inference config: " + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
        )
    # after the planner's flags: SGLang's parser keeps the last value, so what the user pinned wins
    return parsed.override_argv() + parsed.argv()


def sglang_command(opts: InferenceOptions, port: int | None = None, api_key: str | None = None) -> list[str]:
    """The `python -m sglang.launch_server ...` command for these options."""
    cmd = [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        opts.model,
        "--host",
        opts.host,
        "--port",
        str(port or opts.port),
    ]
    if opts.revision:
        cmd += ["--revision", opts.revision]
    if opts.served_model_name:
        cmd += ["--served-model-name", opts.served_model_name]
    cmd += ["--tp-size", str(opts.tp_size)]
    if opts.pp_size > 1:
        cmd += ["--pp-size", str(opts.pp_size)]
    if opts.dp_size > 1:
        cmd += ["--dp-size", str(opts.dp_size)]
    if opts.nnodes > 1:
        if not opts.dist_init_addr:
            raise SystemExit("--nnodes > 1 needs --dist-init-addr (rank 0's host:port)")
        cmd += [
            "--nnodes",
            str(opts.nnodes),
            "--node-rank",
            str(opts.node_rank),
            "--dist-init-addr",
            opts.dist_init_addr,
        ]
    if opts.context_length:
        cmd += ["--context-length", str(opts.context_length)]
    if opts.mem_fraction_static:
        cmd += ["--mem-fraction-static", f"{opts.mem_fraction_static:g}"]
    if opts.dtype:
        cmd += ["--dtype", opts.dtype]
    if opts.tool_call_parser:
        cmd += ["--tool-call-parser", opts.tool_call_parser]
    if opts.reasoning_parser:
        cmd += ["--reasoning-parser", opts.reasoning_parser]
    if opts.trust_remote_code:
        cmd.append("--trust-remote-code")
    if opts.download_dir:
        cmd += ["--download-dir", opts.download_dir]
    if opts.max_running_requests:
        cmd += ["--max-running-requests", str(opts.max_running_requests)]
    if opts.max_queued_requests:
        cmd += ["--max-queued-requests", str(opts.max_queued_requests)]
    adapters = find_adapters(opts.adapters_dir)
    if adapters:
        cmd += [
            "--enable-lora",
            "--lora-paths",
            *[f"{name}={path}" for name, path in adapters],
            "--max-loras-per-batch",
            str(len(adapters)),
        ]
    if api_key:
        cmd += ["--api-key", api_key]
    cmd += ["--enable-metrics"]
    cmd += config_flags(opts.config_file)
    cmd += opts.extra
    return cmd


def redacted(cmd: list[str]) -> list[str]:
    """The command with secret values replaced, for logs."""
    out, hide = [], False
    for part in cmd:
        out.append("<redacted>" if hide else part)
        hide = part in ("--api-key", "--admin-api-key")
    return out
