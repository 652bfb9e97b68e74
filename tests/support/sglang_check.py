"""Run in its own process: parse command lines with SGLang's own server argument parser.

stdin: a JSON list of argument lists (what follows `python -m sglang.launch_server`).
stdout: a JSON list of {"ok": bool, "error": str} in the same order. A flag must match one of
SGLang's option strings exactly (argparse would accept an abbreviation such as --lora-path).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys

from triton_stub import install

install()
from sglang.srt.server_args import ServerArgs, prepare_server_args  # noqa: E402


def check(argv: list[str], known: set[str]) -> dict:
    for token in argv:
        if token.startswith("--") and token.split("=")[0] not in known:
            return {"ok": False, "error": f"not an exact SGLang flag: {token}"}
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = prepare_server_args(argv)
    except SystemExit:
        return {
            "ok": False,
            "error": err.getvalue().strip().splitlines()[-1] if err.getvalue() else "SystemExit",
        }
    return {
        "ok": True,
        "tp": args.tp_size,
        "pp": args.pp_size,
        "dp": args.dp_size,
        "nnodes": args.nnodes,
        "lora_paths": args.lora_paths,
        "context_length": args.context_length,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    known = set(parser._option_string_actions)
    print(json.dumps([check(argv, known) for argv in json.load(sys.stdin)]))


if __name__ == "__main__":
    main()
