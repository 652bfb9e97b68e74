"""`kaito-gitops diff`: what the daemon would change in the cluster, object by object.

Desired objects come from the files (as `plan` and `render` make them); each is compared with
the live object and with the server's own dry-run of our server-side apply, so the diff is what a
pass would really write, defaults and admission included. Like `kubectl diff`: exit 0 when
nothing would change, 1 when something would, 2 for errors. Node pools are not objects in the
cluster: `plan` shows them.
"""

from __future__ import annotations

import sys


def cmd_diff(args) -> int:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from .cli import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, _load
    from .cli_commands import _head_revision, _print_findings, _settings
    from .companions import key_text
    from .objectdiff import object_name, unified
    from .planning import plan_revision
    from .runcmd import kube_client
    from .source.tree import repo_root
    from .targets.kubernetes import ORDER, KubernetesTarget

    # file names as the daemon writes them into objects: relative to the repository's root
    root = repo_root(args.paths[0]) if args.paths else None
    rev = _load(args.paths, args, target="kubernetes", relative_to=str(root) if root else None)
    _print_findings(rev)
    state = plan_revision(rev, _settings(args, _head_revision(args.paths)))
    try:
        target = KubernetesTarget(kube_client(args.kubeconfig or "", args.context or ""))
        target.refresh()
        changed, out = 0, []
        for key, plan in sorted(state.plans.items()):
            for obj in sorted(plan.objects, key=lambda o: ORDER.index(o["kind"])):
                live, would, note = target.preview(obj)
                text = unified(live, would, object_name(obj))
                if text:
                    changed += 1
                    out.append((f"# {note}\n" if note else "") + text)
            wanted = {(o["kind"], o["metadata"]["name"]) for o in plan.objects}
            for ident, live in sorted(target.objects.get(key, {}).items()):
                if ident not in wanted:  # an object the workspace no longer has
                    changed += 1
                    out.append(unified(live, None, object_name(live)))
        present = {ws.key for ws in rev.workspaces if ws.name}  # an invalid workspace is left as it is
        for key in sorted(set(target.objects) - set(state.plans) - present):
            for _, live in sorted(target.objects[key].items()):
                changed += 1
                out.append(
                    f"# pruned: workspace {key[0]}/{key[1]} is not in the files\n"
                    + unified(live, None, object_name(live))
                )
        # the other objects of the folders, as a pass would apply and prune them
        unlisted = target.companions.read(state.objects)
        for key, oplan in state.objects.items():
            if key[0] in unlisted:
                changed += 1
                out.append(f"# {key_text(key)}: {unlisted[key[0]]}\n")
                continue
            live, would = target.companions.preview(oplan)
            text = unified(live, would, object_name(oplan.body))
            if text:
                changed += 1
                out.append(text)
        for key in sorted(set(target.companions.live) - set(state.objects) - set(rev.objects)):
            if key[0] in unlisted:
                continue
            changed += 1
            live = target.companions.live[key]
            out.append(
                f"# pruned: {key_text(key)} is not in the files\n" + unified(live, None, object_name(live))
            )
    except ApiException as e:
        print(f"kaito-gitops diff: the cluster refused a request: {e.status} {e.reason}", file=sys.stderr)
        return EXIT_USAGE
    except (HTTPError, OSError) as e:
        print(f"kaito-gitops diff: cannot reach the cluster: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write("".join(out))
    print(
        f"{changed} object(s) would change in {len(state.plans)} workspace(s) and {len(state.objects)} other "
        "object(s)",
        file=sys.stderr,
    )
    if rev.has_errors:
        return EXIT_USAGE
    return EXIT_FINDINGS if changed else EXIT_OK


def register(sub, add_common, add_render_options) -> None:
    p = sub.add_parser(
        "diff", help="show, object by object, what applying the files would change in the cluster (dry run)"
    )
    p.add_argument("paths", nargs="*", default=["."])
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context")
    add_common(p)
    add_render_options(p)
    p.set_defaults(func=cmd_diff)
