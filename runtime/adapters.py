"""`python -m runtime.adapters pull|push`: adapter (and data) images to and from a registry.

    pull --image REF --dest DIR [--docker-config PATH ...] [--insecure] [--expect auto|adapter|any]
         [--max-bytes N]
    push --image REF --src DIR --model-name NAME [--docker-config PATH] [--insecure]

Logs are one JSON object per line on stdout, never a credential. Exit codes: 0 done,
1 the pull or push failed (the last log line says why), 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from . import oci
from .progress import log_line as log


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.adapters", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("pull", help="pull an image's data/ (or ORAS files) into a folder")
    pl.add_argument("--image", required=True)
    pl.add_argument("--dest", required=True)
    pl.add_argument(
        "--docker-config",
        action="append",
        default=[],
        metavar="PATH",
        help="a docker config.json (dockerconfigjson); repeatable, first match wins",
    )
    pl.add_argument("--insecure", action="store_true", help="plain http (automatic for 127.0.0.1/localhost)")
    pl.add_argument(
        "--expect",
        choices=("auto", "adapter", "any"),
        default="auto",
        help="adapter: fail unless the image holds adapter_config.json and weights; "
        "auto (default): only when the image is annotated as a Kaito adapter",
    )
    pl.add_argument("--max-bytes", type=int, default=oci.DEFAULT_MAX_BYTES)
    ps = sub.add_parser("push", help="push an adapter folder as Kaito's adapter image")
    ps.add_argument("--image", required=True)
    ps.add_argument("--src", required=True)
    ps.add_argument("--model-name", required=True, help="the preset, written as sh.kaito.model.name")
    ps.add_argument("--docker-config", action="append", default=[], metavar="PATH")
    ps.add_argument("--insecure", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.getLogger("oras").setLevel(logging.CRITICAL)
    insecure = True if args.insecure else None
    t0 = time.monotonic()
    try:
        if args.command == "pull":
            log("pull_start", image=args.image, dest=args.dest)
            res = oci.pull(
                args.image,
                args.dest,
                args.docker_config,
                insecure,
                expect=args.expect,
                max_bytes=args.max_bytes,
                log=log,
            )
            log(
                "pulled",
                image=res.image,
                digest=res.digest,
                files=res.files,
                bytes=res.bytes,
                adapter=res.is_adapter,
                seconds=round(time.monotonic() - t0, 3),
            )
        else:
            log("push_start", image=args.image, src=args.src, model_name=args.model_name)
            res = oci.push_adapter(args.image, args.src, args.model_name, args.docker_config, insecure)
            log(
                "pushed",
                image=res.image,
                digest=res.digest,
                size=res.size,
                files=res.files,
                seconds=round(time.monotonic() - t0, 3),
            )
    except oci.OCIError as e:
        log(f"{args.command}_failed", level="error", error=str(e), kind=type(e).__name__)
        return 1
    except OSError as e:
        log(f"{args.command}_failed", level="error", error=f"{type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
