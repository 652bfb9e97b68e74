"""Subcommands beyond validate: plan and render (run and status register from their modules)."""

from __future__ import annotations

import os
import sys


def _settings(args, revision: str = ""):
    from .render.common import RenderSettings

    return RenderSettings(
        inference_image=args.inference_image,
        tuning_image=args.tuning_image,
        image_pull_secrets=tuple(args.image_pull_secret or ()),
        revision=revision,
        byo_nodes=args.byo_nodes,
    )


def _head_revision(paths: list[str]) -> str:
    import git

    from .source.tree import repo_root

    root = repo_root(paths[0]) if paths else None
    if root is None:
        return ""
    try:
        repo = git.Repo(root)
        return repo.head.commit.hexsha[:12] + ("-dirty" if repo.is_dirty(untracked_files=True) else "")
    except (ValueError, git.GitError):
        return ""


def _print_findings(rev, stream=sys.stderr) -> None:
    from .findings import format_findings

    errors = [f for f in rev.findings if f.is_error]
    if errors:
        print(format_findings(errors, "text"), file=stream)
        print(f"{len(errors)} error(s): the workspaces they belong to are left out of the plan", file=stream)


def cmd_plan(args) -> int:
    from . import budgets, planview
    from .cli import EXIT_FINDINGS, EXIT_OK, _load, _load_base
    from .plandiff import diff_states
    from .planning import plan_revision

    if args.list_presets:
        return _list_presets()
    rev = _load(args.paths, args, target="kubernetes")
    head = plan_revision(rev, _settings(args, _head_revision(args.paths)))
    base = None
    if args.base:
        base_rev = _load_base(args.paths, args.base, args)
        base = plan_revision(base_rev, _settings(args, args.base))
    budgets.hold(rev, head, base)
    _print_findings(rev)
    diff = diff_states(base, head)
    checks = planview.Checks(budgets.usage_lines(budgets.from_revision(rev), head), _capacity(args, diff))
    if args.format == "json":
        print(planview.as_json(diff, checks))
    elif args.format == "markdown":
        print(planview.markdown(diff, checks))
    else:
        print(planview.text(diff, show_unchanged=True, checks=checks), end="")
    problems = any(p.problems for p in head.plans.values())
    return EXIT_FINDINGS if rev.has_errors or problems else EXIT_OK


def _capacity(args, diff):
    """Quota and region capacity for the plan's node pools, when an AKS cluster is named."""
    if not (args.aks_subscription and args.aks_resource_group and args.aks_cluster):
        return None
    from . import capacity
    from .provisioners.azure_facts import AzureFactsReader
    from .runconfig import RunConfig

    cfg = RunConfig(
        aks_subscription=args.aks_subscription,
        aks_resource_group=args.aks_resource_group,
        aks_cluster=args.aks_cluster,
        arm_endpoint=args.arm_endpoint or RunConfig.arm_endpoint,
        authority_host=os.environ.get("AZURE_AUTHORITY_HOST", ""),
    )
    reader = AzureFactsReader.from_config(cfg)
    return capacity.check(diff, reader.facts(capacity.sizes(diff)))


def _list_presets() -> int:
    from .catalog import load_catalog

    c = load_catalog()
    print(f"{'preset':34} {'Hugging Face':45} {'weights':>8} {'context':>8}  notes")
    for m in sorted(c.models.values(), key=lambda m: (m.family, m.name)):
        notes = ", ".join(
            x
            for x in (
                "gated" if m.gated else "",
                "tuning" if m.tuning.supported else "",
                "deprecated" if m.deprecated or m.rejected else "",
                m.quantization or "",
            )
            if x
        )
        print(
            f"{m.name:34} {m.huggingface:45} {m.weights_gib:7.1f}G {m.architecture.max_context:8d}  {notes}"
        )
    return 0


def cmd_render(args) -> int:
    from .cli import EXIT_FINDINGS, EXIT_OK, _load
    from .planning import plan_revision
    from .targets.render import RenderTarget

    rev = _load(args.paths, args, target="kubernetes")
    _print_findings(rev)
    state = plan_revision(rev, _settings(args, _head_revision(args.paths)))
    target = RenderTarget(args.out)
    target.refresh()
    written = sum(target.apply(plan).writes for _, plan in sorted(state.plans.items()))
    # folders of workspaces no longer in the files go; an invalid one keeps its last output
    present = {ws.key for ws in rev.workspaces if ws.name}
    gone = sorted(set(target.live_workspaces()) - set(state.plans) - present)
    for key in gone:
        written += target.remove(key)[1].writes
    # the other objects: invalid ones keep their last output, as workspaces do
    written += target.apply_objects(state.objects, rev.invalid_objects, prune=True).writes
    print(
        f"{written} file(s) written or removed for {len(state.plans)} workspace(s) and "
        f"{len(state.objects)} other object(s) under {args.out}"
        + (f"; removed {', '.join('/'.join(k) for k in gone)}" if gone else ""),
        file=sys.stderr,
    )
    return EXIT_FINDINGS if rev.has_errors else EXIT_OK


def _status_docs(args, source, branch: str) -> tuple[list[dict], str]:
    from ruamel.yaml import YAML

    from .cli import UsageError
    from .source.git import SourceError

    root = (args.status_dir.strip("/") + "/") if args.status == "tree" else ""
    try:
        rev = source.sync()
        files = source.files(rev, [f"{root}status"], 1 << 20)
    except SourceError as e:
        if f"has no branch {branch}" in str(e) and args.status == "branch":
            raise UsageError(
                f"{args.repo} has no branch {branch} yet: the daemon (`kaito-gitops run`) writes it on its "
                "first pass; start the daemon, or wait for its first pass to finish"
            ) from None
        raise UsageError(str(e)) from None
    docs = []
    for _path, data in sorted(files):
        doc = YAML(typ="safe").load(data)
        if isinstance(doc, dict) and doc.get("kind") == "WorkspaceStatus":
            docs.append(doc)
    return docs, rev


def _status_text(args, docs: list[dict], branch: str, rev: str) -> str:
    import json

    from .report.statusview import TABLE_HEADER, status_row, text_table

    if args.format == "json":
        return json.dumps(docs, indent=2, default=str) + "\n"
    rows = [TABLE_HEADER, *(status_row(d) for d in docs)]
    out = text_table(rows)
    if len(rows) == 1:
        out += f"(no workspace status on {branch} at {rev[:12]})\n"
    return out


def cmd_status(args) -> int:
    import time

    from .cli import EXIT_OK
    from .source.git import GitAuth, GitSource

    branch = args.branch or ("main" if args.status == "tree" else "kaito-status")
    source = GitSource(args.repo, branch, args.cache_dir, GitAuth(token_file=args.git_token_file))
    if not args.watch:
        docs, rev = _status_docs(args, source, branch)
        print(_status_text(args, docs, branch, rev), end="")
        return EXIT_OK
    # --watch: the table again every SECONDS, in place on a terminal, until Ctrl-C
    shown = None
    try:
        while True:
            docs, rev = _status_docs(args, source, branch)
            text = _status_text(args, docs, branch, rev)
            if text != shown:
                if sys.stdout.isatty():
                    sys.stdout.write("\x1b[H\x1b[2J")  # home and clear, as `watch` does
                stamp = time.strftime("%H:%M:%S")
                sys.stdout.write(
                    f"{branch} at {rev[:12]}, {stamp} (every {args.watch:g}s; Ctrl-C stops)\n{text}"
                )
                sys.stdout.flush()
                shown = text
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return EXIT_OK


def _add_render_options(p) -> None:
    from .render.common import DEFAULT_INFERENCE_IMAGE, DEFAULT_TUNING_IMAGE

    p.add_argument(
        "--inference-image",
        default=os.environ.get("KAITO_GITOPS_INFERENCE_IMAGE", DEFAULT_INFERENCE_IMAGE),
    )
    p.add_argument(
        "--tuning-image",
        default=os.environ.get("KAITO_GITOPS_TUNING_IMAGE", DEFAULT_TUNING_IMAGE),
    )
    p.add_argument(
        "--image-pull-secret",
        action="append",
        metavar="NAME",
        help="pull secret for the kaito-gitops images (repeatable)",
    )


def register(sub, add_common) -> None:
    p = sub.add_parser(
        "plan", help="show nodes, GPUs, SGLang/tuning commands, objects and $/hour per workspace"
    )
    p.add_argument("paths", nargs="*", default=["."])
    p.add_argument("--base", metavar="REV", help="compare with the workspaces at git revision REV")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p.add_argument("--list-presets", action="store_true", help="list the model presets and exit")
    g = p.add_argument_group(
        "quota and capacity (read-only ARM calls; the Reader role on the subscription is enough)"
    )
    for flag, env, what in (
        ("--aks-subscription", "AKS_SUBSCRIPTION", "Azure subscription of the AKS cluster"),
        ("--aks-resource-group", "AKS_RESOURCE_GROUP", "resource group of the AKS cluster"),
        ("--aks-cluster", "AKS_CLUSTER", "AKS cluster name"),
        ("--arm-endpoint", "ARM_ENDPOINT", "Azure Resource Manager URL (default: public cloud)"),
    ):
        g.add_argument(
            flag, default=os.environ.get("KAITO_GITOPS_" + env, ""), help=f"{what} [KAITO_GITOPS_{env}]"
        )
    add_common(p)
    _add_render_options(p)
    p.set_defaults(func=cmd_plan)

    from . import evalcmd, runcmd

    runcmd.register(sub)
    evalcmd.register(sub, add_common)

    p = sub.add_parser(
        "status", help="print workspace status from the status branch, like kubectl get workspace"
    )
    p.add_argument("--repo", default=".", help="git URL or local path (default: the current repository)")
    p.add_argument(
        "--branch", help="status branch (default kaito-status; the watched branch with --status tree)"
    )
    p.add_argument("--status", choices=["branch", "tree"], default="branch")
    p.add_argument("--status-dir", default=".kaito/status")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--cache-dir", default=".kaito-gitops/cache")
    p.add_argument("--git-token-file")
    p.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=5.0,
        default=0.0,
        metavar="SECONDS",
        help="refresh until Ctrl-C, printing again when something changed (default every 5 s)",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("render", help="write every object as YAML under --out DIR/<namespace>/<workspace>/")
    p.add_argument("paths", nargs="*", default=["."])
    p.add_argument("--out", required=True, metavar="DIR")
    add_common(p)
    _add_render_options(p)
    p.set_defaults(func=cmd_render)

    from . import diffcmd

    diffcmd.register(sub, add_common, _add_render_options)
