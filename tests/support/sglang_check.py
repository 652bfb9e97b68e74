"""Run in its own process: parse command lines with SGLang's own server argument parser.

Importing SGLang takes seconds, so one process answers many requests: each line on stdin is a
JSON request, each answer one JSON line on stdout (anything SGLang prints goes to stderr).
  {"parse": [argv, ...]}  argvs are what follows `python -m sglang.launch_server`; the answer is
                          a list of {"ok": bool, "error": str, ...} in the same order. A flag
                          must match one of SGLang's option strings exactly (argparse would
                          accept an abbreviation such as --lora-path).
  {"flags": true}         every --flag the parser knows, without the dashes, sorted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys

from triton_stub import install

# The answers keep the real stdout to themselves; stray prints go to stderr.
answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

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
    flags = sorted(o[2:] for o in known if o.startswith("--"))
    for line in sys.stdin:
        request = json.loads(line)
        if "parse" in request:
            answer = [check(argv, known) for argv in request["parse"]]
        else:
            answer = flags
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
