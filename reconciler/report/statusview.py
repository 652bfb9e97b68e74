"""What status looks like in git: one YAML per workspace and a STATUS.md table. Pure.

Nothing in these files ticks: times are absolute and change only when a condition does,
so an unchanged cluster produces byte-identical files and no commit.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..budgets import HOURS_PER_MONTH
from ..daemon import WorkspaceReport, spend
from ..manifests import dump
from ..status import WorkspaceStatus

CONDITION_COLUMNS = ("ResourceReady", "InferenceReady", "JobStarted", "WorkspaceSucceeded")
TABLE_HEADER = ["NAME", "INSTANCE", *(c.upper() for c in CONDITION_COLUMNS), "STATE", "ENDPOINT", "SINCE"]


def status_path(key: tuple[str, str]) -> str:
    return f"status/{key[0]}/{key[1]}.yaml"


def status_key(path: str) -> tuple[str, str] | None:
    """status_path's inverse: the workspace a status file is about, or None for other files."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "status" or not parts[2].endswith(".yaml"):
        return None
    return (parts[1], parts[2].removesuffix(".yaml"))


def status_document(r: WorkspaceReport) -> dict:
    s: WorkspaceStatus = r.status
    doc: dict = {
        "apiVersion": "kaito-gitops.io/v1alpha1",
        "kind": "WorkspaceStatus",
        "metadata": {"name": r.key[1], "namespace": r.key[0]},
        "source": {
            "file": r.path,
            "observedRevision": r.revision,
            "appliedRevision": r.applied_revision or None,
        },
        "instanceType": r.instance_type or None,
        "state": s.state,
        "conditions": [c.as_dict() for c in s.conditions],
        "endpoint": s.endpoint or None,
        "workerNodes": list(s.worker_nodes),
        "nodes": r.nodes,
        "gpus": r.gpus,
    }
    if s.progress is not None:
        p = s.progress
        doc["tuning"] = {
            "step": p.step,
            "totalSteps": p.total_steps,
            "loss": round(p.loss, 4) if p.loss is not None else None,
            "epoch": round(p.epoch, 3) if p.epoch is not None else None,
            "etaSeconds": int(p.eta_seconds) if p.eta_seconds is not None else None,
        }
    errors = [f.text() for f in r.errors]
    if errors:
        doc["errors"] = errors
    doc["lastError"] = s.last_error or None
    if r.evals:
        doc["evals"] = [{k: v for k, v in e.items() if not k.startswith("_")} for e in r.evals]
    return doc


def status_row(doc: dict) -> list[str]:
    """One table row from a status document (as written to git, or as read back by `status`)."""
    conds = {c["type"]: c for c in doc.get("conditions") or []}
    times = [c["lastTransitionTime"] for c in conds.values() if c.get("lastTransitionTime")]
    meta = doc["metadata"]
    return [
        f"{meta['namespace']}/{meta['name']}",
        doc.get("instanceType") or "(own nodes)",
        *[conds.get(c, {}).get("status", "") for c in CONDITION_COLUMNS],
        doc.get("state") or "",
        doc.get("endpoint") or "",
        min(times) if times else "",
    ]


def objects_lines(objects: list) -> list[str]:
    """STATUS.md's table of the other objects (daemon.ObjectReport): health, or why not applied."""
    if not objects:
        return []
    out = ["", "## Other objects", "", "| OBJECT | FILE | HEALTH | ERROR |", "| --- | --- | --- | --- |"]
    for o in objects:
        kind, ns, name = o.key
        cells = [f"{kind} {ns}/{name}" if ns else f"{kind} {name}", o.path, o.health or "-", o.error]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return out


def status_markdown(
    reports: list[WorkspaceReport], docs: list[dict], revision: str, objects=(), set_docs=()
) -> str:
    rows = [status_row(d) for d in docs]
    out = [
        "# Workspace status",
        "",
        f"Written by kaito-gitops for revision `{revision[:12]}`. One file per workspace under `status/`.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + " --- |" * len(TABLE_HEADER),
    ]
    for row in rows:
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    out += set_lines(list(set_docs))
    out += spend_lines(reports)
    out += eval_lines(reports)
    out += objects_lines(list(objects))
    errors = [(r.key, r.errors[0].text()) for r in reports if r.errors]
    if errors:
        out += ["", "## Errors", ""]
        out += [f"- `{k[0]}/{k[1]}`: {msg}" for k, msg in errors]
    return "\n".join(out) + "\n"


def eval_lines(reports: list[WorkspaceReport]) -> list[str]:
    """STATUS.md's eval table: each suite's figures against the deployed endpoint, regressions flagged."""
    rows = [(r.key, e) for r in reports for e in r.evals]
    if not rows:
        return []
    out = [
        "",
        "## Evals",
        "",
        "The eval suites (`evals/`) against each deployed endpoint, once per revision it serves.",
        "",
        "| WORKSPACE | SUITE | REVISION | PASS RATE | P95 | TOKENS/S | RESULT |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, e in rows:
        prev = e.get("previous") or {}
        if e.get("regression"):
            verdict = f":warning: regression: {prev.get('passRate', 0):.0%} at `{prev.get('revision')}`"
        elif e.get("thresholdsMet"):
            verdict = "thresholds met"
        else:
            verdict = "; ".join(e.get("failures") or ["thresholds not met"])
        p95 = e.get("p95LatencyMs")
        tps = e.get("tokensPerSecond")
        cells = [
            f"{key[0]}/{key[1]}",
            e["suite"],
            f"`{e['revision']}`",
            f"{e['passed']}/{e['cases']} ({e['passRate']:.0%})",
            "-" if p95 is None else f"{p95:,.0f} ms",
            "-" if tps is None else f"{tps:,.1f}",
            verdict,
        ]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return out


def spend_lines(reports: list[WorkspaceReport]) -> list[str]:
    """STATUS.md's spend table: what runs now, per namespace and in total, and a month at this rate."""
    per_ns = spend(reports)
    if not per_ns:
        return []
    rows = sorted(per_ns.items())
    total = (sum(g for g, _ in per_ns.values()), round(sum(p for _, p in per_ns.values()), 3))
    out = [
        "",
        "## Spend",
        "",
        "Node pools kaito-gitops provisioned that exist now, at list price (presets/gpus.yaml); a month is 730 hours.",
        "",
        "| NAMESPACE | GPUS | $/HOUR | $/MONTH AT THIS RATE |",
        "| --- | --- | --- | --- |",
    ]
    for ns, (gpus, price) in [*rows, ("total", total)]:
        name = f"**{ns}**" if ns == "total" else ns
        out.append(f"| {name} | {gpus} | ${price:,.2f} | ${price * HOURS_PER_MONTH:,.0f} |")
    return out


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return (
        "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
        + "\n"
    )


def set_document(
    s, by_key: dict, scaling: dict | None = None, endpoints: dict | None = None, rollouts: dict | None = None
) -> dict:
    """An InferenceSet's status: its members as the reports see them, its bounds, its endpoint, and
    (autoscaled) the last scale event, the last cold start and the GPU-hours saved."""
    count = max(s.replicas, s.scaling.max_replicas)
    members = [by_key[k] for i in range(count) if (k := (s.namespace, s.member_name(i))) in by_key]
    ready = sum(1 for r in members if r.status.state == "Ready")
    doc = {
        "apiVersion": "kaito-gitops.io/v1alpha1",
        "kind": "InferenceSetStatus",
        "metadata": {"name": s.name, "namespace": s.namespace},
        "source": {"file": s.path},
        "state": "Ready" if members and ready == len(members) else ("Idle" if not members else "Progressing"),
        "replicas": len(members),
        "readyReplicas": ready,
        "bounds": {"minReplicas": s.scaling.min_replicas, "maxReplicas": s.scaling.max_replicas},
        "members": [{"name": r.key[1], "state": r.status.state} for r in members],
    }
    if (endpoints or {}).get(s.key):
        doc["endpoint"] = endpoints[s.key]
    r = (rollouts or {}).get(s.key)
    if r is not None:  # a template change on its way across the members (rollout.py)
        doc["rollout"] = {"updated": r.updated, "of": r.total, "waiting": r.waiting}
    st = (scaling or {}).get(s.key)
    if not s.scaling.fixed and st is not None:
        ev = st.last_event
        doc["autoscaling"] = {
            "lastScaleEvent": None
            if ev is None
            else {
                "time": datetime.fromtimestamp(ev.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "from": ev.old,
                "to": ev.new,
                "reason": ev.reason,
            },
            "coldStartSeconds": st.cold_start_seconds,
            # to a tenth: a figure that moves every few seconds would be a commit a minute
            "gpuHoursSaved": round(st.gpu_seconds_saved / 3600, 1),
        }
    return doc


def scaling_paths(sets) -> set[str]:
    """The status files an autoscaled set's scale events change: its own and its members'."""
    out = set()
    for s in sets:
        out.add(status_path(s.key))
        out.update(status_path((s.namespace, s.member_name(i))) for i in range(s.scaling.max_replicas))
    return out


def set_lines(docs: list[dict]) -> list[str]:
    """STATUS.md's table of InferenceSets."""
    if not docs:
        return []
    out = [
        "",
        "## InferenceSets",
        "",
        "| SET | STATE | READY | BOUNDS | MEMBERS | LAST SCALE | GPU-HOURS SAVED |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in docs:
        md, b = d["metadata"], d["bounds"]
        bounds = (
            f"{b['minReplicas']}"
            if b["minReplicas"] == b["maxReplicas"]
            else f"{b['minReplicas']}-{b['maxReplicas']}"
        )
        members = ", ".join(f"{m['name']} ({m['state']})" for m in d["members"]) or "-"
        auto = d.get("autoscaling") or {}
        ev = auto.get("lastScaleEvent")
        last = f"{ev['from']} -> {ev['to']} at {ev['time']}: {ev['reason']}" if ev else "-"
        saved = f"{auto['gpuHoursSaved']:g}" if auto else "-"
        cells = [
            f"{md['namespace']}/{md['name']}",
            d["state"],
            f"{d['readyReplicas']}/{d['replicas']}",
            bounds,
            members,
            last,
            saved,
        ]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return out


def status_files(
    reports: list[WorkspaceReport],
    revision: str,
    objects=(),
    sets=(),
    scaling=None,
    endpoints=None,
    rollouts=None,
) -> dict[str, str]:
    """Every file the status tree should hold, by path relative to the status root."""
    reports = sorted(reports, key=lambda r: r.key)
    docs = [status_document(r) for r in reports]
    files = {status_path(r.key): dump(d) for r, d in zip(reports, docs, strict=True)}
    by_key = {r.key: r for r in reports}
    set_docs = []
    for s in sorted((s for s in sets if s.name), key=lambda s: s.key):
        path = status_path(s.key)
        if path in files:
            continue  # a workspace of that name (an error in both files): its status stays its own
        d = set_document(s, by_key, scaling, endpoints, rollouts)
        set_docs.append(d)
        files[path] = dump(d)
    files["STATUS.md"] = status_markdown(reports, docs, revision, objects, set_docs)
    return files
