#!/usr/bin/env python3
"""One version for the package and its images: reconciler/__init__.py, and every image tag and
`newTag` in deploy/ and docs that name our own images.

  scripts/set-version.py 0.2.0            write 0.2.0 everywhere
  scripts/set-version.py --check [0.2.0]  exit 1 and list each place that differs (the release
                                          workflow runs it with the tag, tests without)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INIT = ROOT / "reconciler" / "__init__.py"
VERSION_LINE = re.compile(r'^(__version__ = ")([^"]+)(")', re.M)
# ghcr.io/kaito-gitops/<image>:<tag>, and kustomize's `newTag:` under our daemon image
IMAGE_TAG = re.compile(r"(ghcr\.io/kaito-gitops/(?:daemon|inference|tuning):)([0-9][\w.+-]*)")
NEW_TAG = re.compile(r"(- name: ghcr\.io/kaito-gitops/daemon\n\s+newTag: )(\S+)")
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?$")
FILES = [
    *sorted((ROOT / "deploy").rglob("*.yaml")),
    ROOT / "deploy" / "images" / "README.md",
    ROOT / "docs" / "install.md",
]
VERSION_VAR = re.compile(r"^(VERSION=)(\S+)$", re.M)  # deploy/images/README.md's build commands


def current() -> str:
    m = VERSION_LINE.search(INIT.read_text())
    if not m:
        sys.exit(f"{INIT}: no __version__ line")
    return m.group(2)


def places(text: str):
    for pattern in (IMAGE_TAG, NEW_TAG, VERSION_VAR):
        yield from pattern.finditer(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; report what differs")
    ap.add_argument("version", nargs="?", help="X.Y.Z (with --check: default the package's version)")
    args = ap.parse_args()
    version = (args.version or (current() if args.check else "")).removeprefix("v")
    if not SEMVER.match(version):
        ap.error(f"version {version!r} is not X.Y.Z (optionally aN, bN or rcN)")
    wrong = []
    if current() != version:
        wrong.append(f"{INIT.relative_to(ROOT)}: __version__ is {current()}")
    for f in [p for p in FILES if p.exists()]:
        text = f.read_text()
        for m in places(text):
            if m.group(2) != version:
                line = text.count("\n", 0, m.start(2)) + 1
                wrong.append(f"{f.relative_to(ROOT)}:{line}: {m.group(0).strip()}")
        if not args.check:
            for pattern in (IMAGE_TAG, NEW_TAG, VERSION_VAR):
                text = pattern.sub(lambda m: m.group(1) + version, text)
            f.write_text(text)
    if args.check:
        for w in wrong:
            print(f"{w} (want {version})")
        return 1 if wrong else 0
    INIT.write_text(VERSION_LINE.sub(lambda m: m.group(1) + version + m.group(3), INIT.read_text()))
    print(f"version {version}: {len(wrong)} place(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
