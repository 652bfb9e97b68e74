"""Read workspace files out of a git revision (no checkout needed) or from disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import git

YAML_SUFFIXES = (".yaml", ".yml")


def _wanted(rel: str, prefixes: list[str]) -> bool:
    """A YAML file under one of `prefixes` (all files without any), skipping hidden folders below
    the prefix, as disk_files does: a prefix may itself be hidden (`.kaito/workspaces`)."""
    if not rel.endswith(YAML_SUFFIXES):
        return False
    for prefix in prefixes or [""]:
        prefix = prefix.rstrip("/")
        if rel == prefix:
            return True
        if prefix and not rel.startswith(prefix + "/"):
            continue
        below = rel[len(prefix) + 1 :] if prefix else rel
        if not any(part.startswith(".") for part in below.split("/")[:-1]):
            return True
    return False


def revision_files(
    repo: git.Repo, rev: str, prefixes: list[str], max_bytes: int, blobs: dict[str, bytes] | None = None
) -> Iterator[tuple[str, bytes]]:
    """(path relative to the repo root, content) for YAML files under `prefixes` at `rev`.

    Blobs larger than `max_bytes` are yielded as their first max_bytes+1 bytes, so the
    loader reports them as too large without this reading gigabytes into memory. `blobs`
    (sha -> content) lets a caller skip reading blobs it already has from an earlier revision.
    """
    tree = repo.commit(rev).tree
    for item in tree.traverse():
        if item.type != "blob" or not _wanted(item.path, prefixes):
            continue
        if blobs is not None and item.hexsha in blobs:
            yield item.path, blobs[item.hexsha]
            continue
        data = item.data_stream.read(max_bytes + 1) if item.size > max_bytes else item.data_stream.read()
        if blobs is not None:
            blobs[item.hexsha] = data
        yield item.path, data


def disk_files(
    paths: list[str], max_bytes: int, relative_to: str | None = None
) -> Iterator[tuple[str, bytes]]:
    """(display path, content) for YAML files named by `paths` (files or folders, recursively)."""
    base = Path(relative_to or os.getcwd()).resolve()
    seen: set[Path] = set()
    for raw in paths:
        root = Path(raw)
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in candidates:
            rel_parts = p.relative_to(root).parts if p != root else ()
            if any(part.startswith(".") for part in rel_parts[:-1]):
                continue
            if p != root and p.suffix not in YAML_SUFFIXES:
                continue
            resolved = p.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            try:
                display = str(resolved.relative_to(base))
            except ValueError:
                display = str(p)
            with open(p, "rb") as fh:
                yield display, fh.read(max_bytes + 1)


def repo_root(path: str) -> Path | None:
    try:
        r = git.Repo(
            path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)) or ".",
            search_parent_directories=True,
        )
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    return Path(r.working_tree_dir) if r.working_tree_dir else None
