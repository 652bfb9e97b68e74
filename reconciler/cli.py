"""The `kaito-gitops` command line: validate, plan, render, run, status.

Exit codes: 0 no errors, 1 findings with errors (or a failed plan), 2 usage or internal failure.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .findings import format_findings
from .loading import MAX_FILE_BYTES

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--byo-nodes",
        action="store_true",
        help="the GPU nodes are yours (daemon provisioner none): no node pools; instanceType only hints "
        "at sizing",
    )
    p.add_argument(
        "--namespace",
        default=os.environ.get("KAITO_GITOPS_NAMESPACE", "default"),
        help="namespace for workspaces that do not set metadata.namespace (default: %(default)s)",
    )
    p.add_argument(
        "--max-file-bytes", type=int, default=MAX_FILE_BYTES, help="refuse YAML files larger than this"
    )
    p.add_argument(
        "--allow-kind",
        action="append",
        metavar="KIND",
        help="check as the daemon run with --allow-kind KIND would (repeatable)",
    )
    p.add_argument(
        "--managed-namespace",
        action="append",
        metavar="NS",
        help="check as the daemon run with --managed-namespace NS would (repeatable)",
    )


def _load(
    paths: list[str],
    args,
    target: str | None = None,
    base=None,
    relative_to: str | None = None,
):
    """Validate the files under `paths`; `base` (a Revision, from _load_base) adds the rules
    between revisions."""
    from .source.tree import disk_files
    from .validation import validate_sources

    for p in paths:
        if not os.path.exists(p):
            raise UsageError(f"{p}: no such file or directory")
    files = list(disk_files(paths, args.max_file_bytes, relative_to))
    files += _settings_file(paths, files, args.max_file_bytes, relative_to)
    return validate_sources(
        files,
        namespace=args.namespace,
        target=target,
        base=base,
        max_file_bytes=args.max_file_bytes,
        byo_nodes=args.byo_nodes,
        policy=_policy(args),
    )


def _policy(args):
    from .kinds import ObjectPolicy

    return ObjectPolicy.from_flags(
        getattr(args, "allow_kind", None) or [], getattr(args, "managed_namespace", None) or []
    )


def _settings_file(paths: list[str], files, max_bytes: int, relative_to: str | None):
    """The repository's .kaito-gitops.yaml (budgets), read even when `paths` are folders below it."""
    from .source.tree import repo_root
    from .validation import SETTINGS_FILE

    if any(os.path.basename(p) == SETTINGS_FILE for p, _ in files):
        return []
    root = repo_root(paths[0]) if paths else None
    candidate = os.path.join(str(root) if root else os.getcwd(), SETTINGS_FILE)
    if not os.path.isfile(candidate):
        return []
    display = os.path.relpath(candidate, relative_to or os.getcwd())
    with open(candidate, "rb") as fh:
        return [(display, fh.read(max_bytes + 1))]


def _load_base(paths: list[str], rev: str, args):
    """The same paths as they were at git revision `rev`."""
    import git

    from .source.tree import repo_root, revision_files
    from .validation import validate_sources, with_settings

    root = repo_root(paths[0])
    if root is None:
        raise UsageError(f"--base needs a git repository, and {paths[0]} is not inside one")
    repo = git.Repo(root)
    try:
        repo.commit(rev)
    except (git.BadName, ValueError) as e:
        raise UsageError(f"--base {rev}: not a revision of {root} ({e})") from None
    prefixes = []
    for p in paths:
        rel = os.path.relpath(os.path.abspath(p), root)
        prefixes.append("" if rel == "." else rel.replace(os.sep, "/"))
    prefixes = with_settings(prefixes)
    cwd_rel = os.path.relpath(root, os.getcwd())
    files = []
    for path, data in revision_files(repo, rev, prefixes, args.max_file_bytes):  # "": the whole repo
        display = os.path.normpath(os.path.join(cwd_rel, path)) if cwd_rel != "." else path
        files.append((display, data))
    return validate_sources(
        files,
        namespace=args.namespace,
        max_file_bytes=args.max_file_bytes,
        byo_nodes=args.byo_nodes,
        policy=_policy(args),
    )


# --------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------


def cmd_validate(args) -> int:
    base = _load_base(args.paths, args.base, args) if args.base else None
    rev = _load(args.paths, args, target=args.target, base=base)
    if rev.settings is not None:  # budgets need the plan: what each workspace costs
        from . import budgets
        from .planning import plan_revision

        budgets.hold(rev, plan_revision(rev), plan_revision(base) if base else None)
    findings = rev.findings
    if args.quiet:
        findings = [f for f in findings if f.is_error]
    out = format_findings(findings, args.format)
    if out:
        print(out)
    errors = sum(f.is_error for f in rev.findings)
    warnings = len(rev.findings) - errors
    if args.format == "text":
        print(
            f"{len(rev.files)} file(s), {len(rev.workspaces)} workspace(s): {errors} error(s), {warnings} warning(s)",
            file=sys.stderr,
        )
    return EXIT_FINDINGS if errors else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaito-gitops",
        description="GitOps for Kaito Workspaces: validate, plan and render them, or run the daemon.",
    )
    parser.add_argument("--version", action="version", version=f"kaito-gitops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("validate", help="check workspace files: YAML, schema, Kaito's rules, sizing")
    p.add_argument("paths", nargs="*", default=["."], help="files or folders (recursing into *.yaml, *.yml)")
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument(
        "--base", metavar="REV", help="also report changes Kaito would refuse since git revision REV"
    )
    p.add_argument(
        "--target",
        choices=["kubernetes", "local", "render"],
        help="where the workspaces will run (hostPath volumes are for the local target only)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    _add_common(p)
    p.set_defaults(func=cmd_validate)

    _register_later_commands(sub)
    return parser


def _register_later_commands(sub) -> None:
    """plan, render, run and status live in their own modules to keep imports lazy."""
    from . import cli_commands

    cli_commands.register(sub, _add_common)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    from . import logs

    logs.configure(json_lines=False, level=os.environ.get("KAITO_GITOPS_LOG_LEVEL", "warning"))
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"kaito-gitops: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # a bug: say so plainly, never dump a traceback at users
        if os.environ.get("KAITO_GITOPS_DEBUG"):
            raise
        print(
            f"kaito-gitops: internal error: {type(e).__name__}: {e} (set KAITO_GITOPS_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main"]
