"""Kaito's InferenceSet (kaito.sh/v1alpha1 and v1beta1): a set of identical inference workspaces.

As Kaito's controller does (pkg/utils/inferenceset: NewWorkspaceForInferenceSet), each replica is
a Workspace made from the template: `resource.instanceType` and `resource.partition` from the
template, `resource.labelSelector` from the set's `labelSelector`, the template's inference spec,
labels and annotations. kaito-gitops names the members `<set>-<index>` (Kaito generates names),
labels them `inferencesetmember.kaito.sh: <set>-<index>` and `inferenceset.kaito.sh/created-by:
<set>`, and gives the set one Service, `<set>`, that selects every ready member's pods.

Members are ordinary workspaces from here on: validated by the Workspace rules (their findings are
placed at the set's own lines: `inference.X` is the set's `spec.template.inference.X`), planned,
applied and reported like any other. Everything here is pure.

Autoscaling bounds are annotations on the set (docs/inferenceset.md); they default to the fixed
`spec.replicas`. A count chosen by the autoscaler never changes git.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from . import __version__
from .findings import Finding, Severity
from .loading import Document, Positions
from .rollout import Strategy, strategy
from .workspace import SET_LABELS, Workspace

KIND = "InferenceSet"
API_VERSIONS = ("kaito.sh/v1alpha1", "kaito.sh/v1beta1")
# Kaito's own label on a set's workspaces, and ours naming the member
LABEL_CREATED_BY, LABEL_MEMBER = SET_LABELS

SCALING = "scaling.kaito-gitops.io/"
MIN_REPLICAS = SCALING + "min-replicas"
MAX_REPLICAS = SCALING + "max-replicas"
TARGET_QUEUE = SCALING + "target-queue-per-replica"
SCALE_DOWN_AFTER = SCALING + "scale-down-after"
BOUNDS = (MIN_REPLICAS, MAX_REPLICAS, TARGET_QUEUE, SCALE_DOWN_AFTER)

MOST_REPLICAS = 1000  # members are planned each pass; Kaito's int32 would let one file stall the daemon
MAX_MEMBER_NAME = 52  # as for any inference workspace: the StatefulSet's pod revision label

DEFAULT_TARGET_QUEUE = 4.0  # waiting requests per replica before another one is worth starting
DEFAULT_SCALE_DOWN_AFTER = 300.0  # seconds without a reason to keep a replica


@dataclass(frozen=True)
class Scaling:
    """The bounds the daemon scales within (all equal to spec.replicas when none are set)."""

    min_replicas: int
    max_replicas: int
    target_queue: float = DEFAULT_TARGET_QUEUE
    scale_down_after: float = DEFAULT_SCALE_DOWN_AFTER

    @property
    def fixed(self) -> bool:
        return self.min_replicas == self.max_replicas


@dataclass(frozen=True)
class InferenceSet:
    name: str
    namespace: str
    api_version: str
    replicas: int  # spec.replicas (Kaito's default 1)
    node_count_limit: int  # 0: no limit
    scaling: Scaling
    document: Document
    update: Strategy = field(
        default_factory=Strategy
    )  # spec.updateStrategy: how a template change rolls across members

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def path(self) -> str:
        return self.document.path

    def member_name(self, index: int) -> str:
        return f"{self.name}-{index}"


def _int(value, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def read(doc: Document, default_namespace: str) -> tuple[InferenceSet, list[Finding]]:
    """The set, and the findings of its own rules (schema findings come from the schema layer)."""
    d = doc.data
    md = d.get("metadata") if isinstance(d.get("metadata"), dict) else {}
    spec = d.get("spec") if isinstance(d.get("spec"), dict) else {}
    annotations = md.get("annotations") if isinstance(md.get("annotations"), dict) else {}
    replicas = max(_int(spec.get("replicas"), 1), 0)
    scaling, findings = _scaling(doc, annotations, replicas)
    s = InferenceSet(
        name=str(md.get("name") or ""),
        namespace=str(md.get("namespace") or default_namespace),
        api_version=str(d.get("apiVersion") or ""),
        replicas=replicas,
        node_count_limit=_int(spec.get("nodeCountLimit"), 0),
        scaling=scaling,
        document=doc,
        update=strategy(spec),
    )
    return s, findings + _kaito_rules(doc, spec) + _names(s, md)


def _names(s: InferenceSet, md: dict) -> list[Finding]:
    """The set's name, once, for every member it makes (`<set>-<index>`)."""
    from .refs import dns1123_label_problem

    if not isinstance(md.get("name"), str) or not md["name"]:
        return []  # the schema says it is required
    problem = dns1123_label_problem(s.name, "metadata.name")
    if problem:
        return [s.document.finding(("metadata", "name"), "name-invalid", problem)]
    longest = s.member_name(max(s.replicas, s.scaling.max_replicas, 1) - 1)
    if len(longest) > MAX_MEMBER_NAME:
        return [
            s.document.finding(
                ("metadata", "name"),
                "name-too-long",
                f"member {longest} would have {len(longest)} characters; inference workspace names may have at "
                f"most {MAX_MEMBER_NAME} (the StatefulSet's pod revision label would overflow): shorten the set's name",
            )
        ]
    return []


# -- Kaito's webhook rules (api/v1beta1/inferenceset_validation.go) ---------------------------


def _kaito_rules(doc: Document, spec: dict) -> list[Finding]:
    """Only where the types are right: a wrong type is the schema's finding, said once."""
    out = []
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and not isinstance(replicas, bool):
        if replicas < 0:
            out.append(
                doc.finding(("spec", "replicas"), "inferenceset-replicas", "replicas must be non-negative")
            )
        elif replicas > MOST_REPLICAS:
            out.append(
                doc.finding(
                    ("spec", "replicas"),
                    "inferenceset-replicas",
                    f"replicas {replicas:,} is more than kaito-gitops runs in one set ({MOST_REPLICAS:,})",
                )
            )
    upgrade = spec.get("autoUpgrade")
    window = upgrade.get("maintenanceWindow") if isinstance(upgrade, dict) else None
    if isinstance(window, dict):
        out += _maintenance_window(doc, window)
    return out


def _maintenance_window(doc: Document, window: dict) -> list[Finding]:
    from croniter import croniter

    at = ("spec", "autoUpgrade", "maintenanceWindow")
    schedule = window.get("schedule")
    if not schedule:
        return [
            doc.finding(
                at, "inferenceset-maintenance-window", "schedule is required (a 5-field cron expression, UTC)"
            )
        ]
    out = []
    if isinstance(schedule, str) and not _cron_ok(croniter, schedule):
        out.append(
            doc.finding(
                (*at, "schedule"),
                "inferenceset-maintenance-window",
                f"invalid cron expression {schedule!r}: five fields (minute hour day month weekday), "
                "e.g. '0 2 * * 6' for Saturdays at 02:00 UTC",
            )
        )
    duration = window.get("duration")
    if isinstance(duration, str):
        seconds = _go_duration(duration)
        if seconds is None or seconds <= 0:
            out.append(
                doc.finding(
                    (*at, "duration"),
                    "inferenceset-maintenance-window",
                    f"duration {duration!r} must be a positive duration, e.g. 4h or 90m",
                )
            )
    return out


def _cron_ok(croniter, text: str) -> bool:
    """As robfig/cron's ParseStandard: five fields or a descriptor (@daily, @every 1h), after an
    optional TZ=/CRON_TZ= zone."""
    text = text.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        zone, _, text = text.partition(" ")
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(zone.split("=", 1)[1])
        except (ZoneInfoNotFoundError, ValueError):
            return False
    if text.startswith("@every "):
        seconds = _go_duration(text.removeprefix("@every ").strip())
        return seconds is not None and seconds > 0
    if text.startswith("@"):
        return text in ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
    return len(text.split()) == 5 and croniter.is_valid(text)


_GO_DURATION = re.compile(r"[-+]?((?:\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _go_duration(value) -> float | None:
    """Seconds of a Go duration string (time.ParseDuration: '4h', '1h30m', '-5m'), or None."""
    if not isinstance(value, str) or not _GO_DURATION.fullmatch(value):
        return None
    sign = -1 if value.startswith("-") else 1
    total = sum(
        float(n) * _UNIT[u] for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", value)
    )
    return sign * total


# -- autoscaling bounds (ours) -------------------------------------------------------------


def _scaling(doc: Document, annotations: dict, replicas: int) -> tuple[Scaling, list[Finding]]:
    out: list[Finding] = []

    def at(key: str) -> tuple:
        return ("metadata", "annotations", key)

    def count(key: str) -> int | None:
        if key not in annotations:
            return None
        text = str(annotations[key]).strip()
        if not re.fullmatch(r"\d+", text):
            out.append(
                doc.finding(
                    at(key),
                    "scaling-bounds",
                    f"{key} must be a whole number of replicas, 0 or more, not {annotations[key]!r}",
                )
            )
            return None
        return int(text)

    lo_set, hi_set = count(MIN_REPLICAS), count(MAX_REPLICAS)
    # unset bounds follow spec.replicas, so a set without annotations is a fixed count
    lo = lo_set if lo_set is not None else min(replicas, hi_set if hi_set is not None else replicas)
    hi = hi_set if hi_set is not None else max(replicas, lo)
    if lo > hi:
        out.append(
            doc.finding(
                at(MIN_REPLICAS),
                "scaling-bounds",
                f"{MIN_REPLICAS} ({lo}) is more than {MAX_REPLICAS} ({hi})",
            )
        )
        hi = lo
    if hi_set is not None and hi_set > MOST_REPLICAS:
        out.append(
            doc.finding(
                at(MAX_REPLICAS), "scaling-bounds", f"{MAX_REPLICAS} may be at most {MOST_REPLICAS:,}"
            )
        )
        hi = MOST_REPLICAS
        lo = min(lo, hi)
    if hi_set == 0:
        out.append(
            doc.finding(
                at(MAX_REPLICAS), "scaling-bounds", f"{MAX_REPLICAS} must be at least 1: 0 would never serve"
            )
        )
    if not out and (lo_set is not None or hi_set is not None) and not lo <= replicas <= hi:
        out.append(
            doc.finding(
                ("spec", "replicas"),
                "scaling-bounds",
                f"replicas {replicas} is outside the scaling bounds {lo}-{hi}; the daemon runs spec.replicas until "
                "it scales, so keep it between them",
            )
        )

    def positive(key: str, parse, default: float, what: str) -> float:
        if key not in annotations:
            return default
        try:
            value = parse(str(annotations[key]))
        except ValueError:
            value = -1.0
        if value > 0:
            return value
        out.append(doc.finding(at(key), "scaling-bounds", f"{key} must be {what}, not {annotations[key]!r}"))
        return default

    from .runconfig import duration

    target = positive(
        TARGET_QUEUE, float, DEFAULT_TARGET_QUEUE, "a number above 0 (waiting requests per replica)"
    )
    after = positive(
        SCALE_DOWN_AFTER, duration, DEFAULT_SCALE_DOWN_AFTER, "a duration above 0 such as 90s, 5m or 1h"
    )
    return Scaling(lo, hi, target, after), out


def on_a_workspace(doc: Document, annotations: dict) -> list[Finding]:
    """A set's annotations and labels written on a plain Workspace: say what they do there."""
    md = doc.data.get("metadata") if isinstance(doc.data.get("metadata"), dict) else {}
    labels = md.get("labels") if isinstance(md.get("labels"), dict) else {}
    joined = [
        doc.finding(
            ("metadata", "labels", key),
            "inferenceset-label-on-workspace",
            f"{key} marks a member of an InferenceSet, which kaito-gitops makes itself; on this Workspace it does "
            "not join the set (its pods are not behind the set's Service)",
            Severity.WARNING,
        )
        for key in labels
        if key in SET_LABELS
    ]
    return joined + [
        doc.finding(
            ("metadata", "annotations", key),
            "scaling-bounds-on-workspace",
            f"{key} scales an InferenceSet; a Workspace always runs one replica (make it an InferenceSet "
            "with this workspace's resource and inference as its spec.template)",
        )
        for key in annotations
        if str(key).startswith(SCALING)
    ]


# -- members ------------------------------------------------------------------------------------

# where a member workspace's fields are written in the set's file
_TO_SET = (
    (("metadata", "annotations"), ("spec", "template", "metadata", "annotations")),
    (("metadata", "labels"), ("spec", "template", "metadata", "labels")),
    (("resource", "labelSelector"), ("spec", "labelSelector")),
    (("resource",), ("spec", "template", "resource")),
    (("inference",), ("spec", "template", "inference")),
    (("metadata",), ("metadata",)),
)


def set_path(path: tuple) -> tuple:
    """A member workspace's field -> the same field in the InferenceSet document."""
    for member, in_set in _TO_SET:
        if tuple(path[: len(member)]) == member:
            return (*in_set, *path[len(member) :])
    return tuple(path)


def member(s: InferenceSet, index: int) -> Workspace:
    """Member `index`: the Workspace Kaito's controller would make for it, at the set's lines."""
    return replace(Workspace.read(member_document(s, index), s.namespace), set_name=s.name)


def member_index(ws: Workspace) -> int:
    """A member's index in its set (-1 for a workspace of no set)."""
    tail = ws.name[len(ws.set_name) + 1 :]
    return int(tail) if ws.set_name and tail.isdigit() else -1


def member_document(s: InferenceSet, index: int) -> Document:
    """The Workspace document of member `index`, positioned at the set's lines."""
    d = s.document.data
    spec = d.get("spec") or {}
    template = spec.get("template") or {}
    tmeta = template.get("metadata") if isinstance(template.get("metadata"), dict) else {}
    tres = template.get("resource") if isinstance(template.get("resource"), dict) else {}
    resource = {k: v for k, v in tres.items() if k in ("instanceType", "partition")}
    if spec.get("labelSelector") is not None:
        resource["labelSelector"] = spec["labelSelector"]
    name = s.member_name(index)
    labels = {**(tmeta.get("labels") or {}), LABEL_CREATED_BY: s.name, LABEL_MEMBER: name}
    metadata = {"name": name, "namespace": s.namespace, "labels": labels}
    if tmeta.get("annotations"):
        metadata["annotations"] = dict(tmeta["annotations"])
    data = {
        "apiVersion": "kaito.sh/v1beta1",  # Kaito makes v1beta1 workspaces for either version of the set
        "kind": "Workspace",
        "metadata": metadata,
        "resource": resource,
        "inference": template.get("inference"),
    }
    src = s.document.positions
    positions = Positions(
        {p: src.key(set_path(p)) for p in _paths(data)},
        {p: src.value(set_path(p)) for p in _paths(data)},
    )
    positions.values[()] = src.value(())
    return Document(s.document.path, s.document.index, data, positions)


def _paths(node, prefix: tuple = ()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def member_finding(f: Finding) -> Finding:
    """A finding about the member, named by the set's own field (`spec.template.inference...`)."""
    from dataclasses import replace

    from .loading import path_text

    for member, in_set in _TO_SET:
        prefix = path_text(member)
        if f.field == prefix or f.field.startswith(prefix + ".") or f.field.startswith(prefix + "["):
            return replace(f, field=path_text(in_set) + f.field[len(prefix) :])
    return f


ACTIVATOR_PORT = 8080
LABEL_ACTIVATOR = "kaito-gitops.io/activator"
# the daemon's own image runs the activator (reconciler/targets/activator.py): nothing else to build
ACTIVATOR_IMAGE = f"ghcr.io/kaito-gitops/daemon:{__version__}"


def scales_to_zero(s: InferenceSet) -> bool:
    return s.scaling.min_replicas == 0 and not s.scaling.fixed


def service_documents(s: InferenceSet, port: int) -> list[Document]:
    """The set's Service `<set>`: every ready member's pods behind one name.

    A set that may scale to zero puts its activator behind `<set>` instead (a small CPU
    Deployment, `<set>-activator`, that holds requests while no member is ready), and the members
    behind `<set>-members`, where the activator sends them. Every document is placed at the set's
    `metadata.name`, where a finding about it points."""
    created_by = {LABEL_CREATED_BY: s.name}
    if not scales_to_zero(s):
        return [_at_name(s, _service(s, s.name, created_by, port))]
    activator = {LABEL_ACTIVATOR: s.name}
    upstream = f"http://{s.name}-members.{s.namespace}.svc"
    container = {
        "name": "activator",
        "image": ACTIVATOR_IMAGE,
        "command": ["python", "-m", "reconciler.targets.activator", "--name", s.name, "--upstream", upstream],
        "ports": [{"name": "http", "containerPort": ACTIVATOR_PORT}],
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": ACTIVATOR_PORT}},
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{s.name}-activator", "namespace": s.namespace, "labels": dict(created_by)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": activator},
            "template": {"metadata": {"labels": activator}, "spec": {"containers": [container]}},
        },
    }
    return [
        _at_name(s, d)
        for d in (
            _service(s, s.name, activator, ACTIVATOR_PORT),
            _service(s, f"{s.name}-members", created_by, port),
            deployment,
        )
    ]


def _service(s: InferenceSet, name: str, selector: dict, port: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": s.namespace, "labels": {LABEL_CREATED_BY: s.name}},
        "spec": {
            "selector": dict(selector),
            "ports": [{"name": "http", "port": 80, "targetPort": port, "protocol": "TCP"}],
        },
    }


def _at_name(s: InferenceSet, data: dict) -> Document:
    at = s.document.positions.value(("metadata", "name"))
    positions = Positions({}, {p: at for p in _paths(data)})
    return Document(s.document.path, s.document.index, data, positions)
