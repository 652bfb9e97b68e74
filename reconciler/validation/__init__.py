"""Validation in layers: YAML -> schema -> semantics -> repository -> between revisions.

`validate_sources` is a pure function of file contents: the CLI feeds it files from disk,
the daemon feeds it blobs from a git revision, and both get the same findings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .. import inferenceset, kinds
from ..catalog import Catalog, load_catalog
from ..companions import KubeObject, ObjectKey
from ..evals.suite import is_suite_path, read_suite, unknown_workspaces
from ..findings import Finding, Severity
from ..loading import Document, load_text
from ..workspace import ConfigMap, Workspace
from . import objects as object_rules
from .changes import check_changes
from .rules import Context, check_workspace
from .schema import check_schema, schema_findings, settings_validator

WorkspaceKey = tuple[str, str]


@dataclass
class Revision:
    """Everything read from one set of files: workspaces, config maps and what is wrong with them."""

    workspaces: list[Workspace] = field(default_factory=list)
    configmaps: dict[WorkspaceKey, ConfigMap] = field(default_factory=dict)
    file_findings: list[Finding] = field(default_factory=list)  # not tied to one workspace
    workspace_findings: dict[int, list[Finding]] = field(default_factory=dict)  # by id(workspace)
    files: list[str] = field(default_factory=list)
    unreadable_files: set[str] = field(default_factory=set)  # YAML so broken nothing could be read
    settings: Document | None = None  # .kaito-gitops.yaml, when read and valid (budgets.read_budgets)
    # every other Kubernetes object in the files (the first of a duplicated key), valid or not
    objects: dict[ObjectKey, KubeObject] = field(default_factory=dict)
    invalid_objects: set[ObjectKey] = field(default_factory=set)  # not applied: an error names why
    object_findings: dict[ObjectKey, list[Finding]] = field(default_factory=dict)  # the errors, by object
    suites: list = field(default_factory=list)  # evals/*.yaml (evals.suite.EvalSuite), valid or not
    inference_sets: list = field(default_factory=list)  # inferenceset.InferenceSet; members are workspaces
    # (ns, name) of sets with errors of their own -> those errors: members keep their last good
    held_sets: dict = field(default_factory=dict)

    def findings_of(self, ws: Workspace) -> list[Finding]:
        return self.workspace_findings.get(id(ws), [])

    def is_valid(self, ws: Workspace) -> bool:
        return not any(f.is_error for f in self.findings_of(ws))

    @property
    def findings(self) -> list[Finding]:
        out = list(self.file_findings)
        for fs in self.workspace_findings.values():
            out.extend(fs)
        return sorted(set(out), key=lambda f: (f.path, f.line, f.col, f.rule, f.message))

    @property
    def has_errors(self) -> bool:
        return any(f.is_error for f in self.findings)

    def by_key(self) -> dict[WorkspaceKey, Workspace]:
        """Workspaces by (namespace, name); a duplicated key keeps the first (both carry an error)."""
        out: dict[WorkspaceKey, Workspace] = {}
        for ws in self.workspaces:
            out.setdefault(ws.key, ws)
        return out

    def valid_workspaces(self) -> dict[WorkspaceKey, Workspace]:
        return {k: ws for k, ws in self.by_key().items() if self.is_valid(ws)}

    def valid_objects(self) -> dict[ObjectKey, KubeObject]:
        return {k: o for k, o in self.objects.items() if k not in self.invalid_objects}

    @property
    def kubernetes_version(self) -> str:
        v = self.settings.data.get("kubernetesVersion") if self.settings is not None else None
        return str(v).removeprefix("v") if v else object_rules.DEFAULT_KUBERNETES_VERSION


SETTINGS_FILE = ".kaito-gitops.yaml"


def with_settings(prefixes: list[str]) -> list[str]:
    """The paths to read a revision under: the watched folders and the repository's settings file
    (budgets live at the root). No prefix, or "", already means the whole repository."""
    if not prefixes or "" in prefixes:
        return prefixes
    return [*prefixes, SETTINGS_FILE]


def _read_settings(rev: Revision, path: str, raw: bytes, max_file_bytes: int | None) -> None:
    """The repository's settings file: one YAML mapping checked against its schema."""
    loaded = load_text(path, raw) if max_file_bytes is None else load_text(path, raw, max_file_bytes)
    rev.file_findings.extend(loaded.findings)
    docs = [d for d in loaded.documents if d.data is not None]
    if not docs:
        return
    if len(docs) > 1:
        rev.file_findings.append(
            docs[1].finding(
                (), "settings-invalid", f"{SETTINGS_FILE} holds one YAML document, not {len(docs)}"
            )
        )
        return
    doc = docs[0]
    if not isinstance(doc.data, dict):
        rev.file_findings.append(doc.finding((), "settings-invalid", f"{SETTINGS_FILE} must be a mapping"))
        return
    problems = schema_findings(doc, settings_validator())
    rev.file_findings.extend(problems)
    if not any(f.is_error for f in problems):
        rev.settings = doc


def _read_suites(rev: Revision, path: str, raw: bytes, max_file_bytes: int | None, namespace: str) -> None:
    """An eval suite file (evals/*.yaml): one suite per YAML document, checked, never applied."""
    loaded = load_text(path, raw) if max_file_bytes is None else load_text(path, raw, max_file_bytes)
    rev.file_findings.extend(loaded.findings)
    for doc in loaded.documents:
        if doc.data is None:
            continue
        suite = read_suite(doc, namespace)
        rev.suites.append(suite)
        rev.file_findings.extend(suite.errors)


def _read_set(rev, doc, schema_cache, namespace, ws_docs, object_docs, set_members, template_only) -> None:
    """An InferenceSet: its own findings, then its members as workspaces and its Service as an
    object. A set with an error of its own runs no member: its members are held at their last good
    version (`held_sets`, as for an invalid workspace) and its Service is not changed; the template
    is still checked, through a member that is not run (so too with replicas 0)."""
    from runtime.inference_args import DEFAULT_PORT

    key = ("inferenceset", doc.index, namespace)
    hit = schema_cache.get(key)
    if hit is None:
        found = check_schema(doc)
        s, own = inferenceset.read(doc, namespace)
        broken = any(f.is_error and f.rule.startswith("schema") for f in found)
        count = 0 if broken else (1 if any(f.is_error for f in found + own) else max(s.replicas, 1))
        members = [inferenceset.member(s, i) for i in range(count)]
        hit = schema_cache[key] = (s, found + own, members)
    s, found, members = hit
    rev.inference_sets.append(s)
    rev.file_findings.extend(found)
    errors = [f for f in found if f.is_error]
    if s.name:
        if errors:
            rev.held_sets[s.key] = errors
        object_docs.extend((d, {}) for d in inferenceset.service_documents(s, DEFAULT_PORT))
    for ws in members:
        set_members[id(ws)] = s
        rev.workspace_findings[id(ws)] = list(errors)
        ws_docs.append(ws)
    if members and (errors or s.replicas == 0):
        template_only.add(id(members[0]))


def _scaled_names(rev: Revision) -> None:
    """The members an autoscaler may add (`<set>-<index>` up to max-replicas) must not be named like
    a Workspace: both would be the same StatefulSet."""
    workspaces = {ws.key: ws for ws in rev.workspaces if ws.name and not ws.set_name}
    for s in rev.inference_sets:
        for i in range(s.replicas, s.scaling.max_replicas if s.name else 0):
            ws = workspaces.get((s.namespace, s.member_name(i)))
            if ws is None:
                continue
            line, _ = ws.document.positions.value(("metadata", "name"))
            f = s.document.finding(
                ("metadata", "name"),
                "workspace-duplicate",
                f"scaling up to {s.scaling.max_replicas} makes member {s.member_name(i)}, the name of the "
                f"workspace in {ws.path}:{line}",
            )
            rev.file_findings.append(f)
            _hold_set(rev, s, [f])
            rev.workspace_findings[id(ws)].append(
                ws.document.finding(
                    ("metadata", "name"),
                    "workspace-duplicate",
                    f"InferenceSet {s.namespace}/{s.name} in {s.path} makes a member of this name when it "
                    f"scales up to {s.scaling.max_replicas}",
                )
            )


def _hold_set(rev: Revision, s, findings: list[Finding]) -> None:
    """A set whose template has an error runs nothing new: no member started, its Service kept."""
    errors = [f for f in findings if f.is_error]
    if errors and s is not None and s.name:
        held = rev.held_sets.setdefault(s.key, [])
        held.extend(f for f in errors if f not in held)


def _members_share_errors(rev: Revision, set_members: dict) -> None:
    """One member's error is every member's: a set is one template, never applied in part."""
    by_set: dict[int, list[Workspace]] = {}
    for ws in rev.workspaces:
        if id(ws) in set_members:
            by_set.setdefault(id(set_members[id(ws)]), []).append(ws)
    for members in by_set.values():
        errors = list(dict.fromkeys(f for ws in members for f in rev.findings_of(ws) if f.is_error))
        for ws in members:
            have = set(rev.workspace_findings[id(ws)])
            rev.workspace_findings[id(ws)].extend(f for f in errors if f not in have)


def _set_rules(s, member: Workspace, ctx: Context) -> list[Finding]:
    """Rules of the set that need sizing: the nodes its replicas take against nodeCountLimit."""
    from .rules import member_nodes

    if not s.node_count_limit or member.name != s.member_name(0):
        return []
    nodes = member_nodes(member, ctx)
    if nodes is None:
        return []
    at = ("spec", "nodeCountLimit")
    doc = s.document
    if s.replicas * nodes > s.node_count_limit:
        return [
            doc.finding(
                at,
                "inferenceset-node-count-limit",
                f"replicas {s.replicas} need {s.replicas * nodes} node(s) ({nodes} each), more than "
                f"nodeCountLimit {s.node_count_limit}",
            )
        ]
    if s.scaling.max_replicas * nodes > s.node_count_limit:
        most = s.node_count_limit // nodes
        return [
            doc.finding(
                at,
                "inferenceset-node-count-limit",
                f"scaling stops at {most} replica(s): {s.scaling.max_replicas} would need "
                f"{s.scaling.max_replicas * nodes} node(s), more than nodeCountLimit {s.node_count_limit}",
                Severity.WARNING,
            )
        ]
    return []


def _ignored(doc: Document) -> Finding | None:
    """A document that is not an object we apply: said once, as a warning, and left alone."""
    if not doc.kind and not doc.api_version and not ({"metadata", "spec", "data"} & set(doc.data)):
        return doc.finding(
            (), "document-ignored", "not a Kubernetes object (no apiVersion/kind); ignored", Severity.WARNING
        )
    if doc.kind == "Secret" and isinstance(doc.data.get("sops"), dict):
        return doc.finding(
            ("sops",),
            "document-ignored",
            "a SOPS-encrypted Secret: kaito-gitops does not decrypt SOPS, so it is not applied; let a tool that "
            "decrypts it apply it (Flux's kustomize-controller, or `sops -d ... | kubectl apply -f -`)",
            Severity.WARNING,
            at_key=True,
        )
    if kinds.group_of(doc.api_version) == kinds.KAITO_GROUP and doc.kind not in (
        "Workspace",
        inferenceset.KIND,
    ):
        return doc.finding(
            ("kind",),
            "document-ignored",
            f"kaito-gitops plans Workspaces and InferenceSets; this {doc.api_version} {doc.kind} is ignored",
            Severity.WARNING,
        )
    return None


def _check_objects(
    rev: Revision, docs: list[tuple[Document, dict]], policy: kinds.ObjectPolicy, namespace: str
) -> None:
    """Read and check the companion objects; an object with an error is left out of `valid_objects`.
    Each doc comes with its file's cache (validate_sources): schema results are kept there."""
    readable: list[tuple[Document, KubeObject]] = []
    caches = {id(doc): c for doc, c in docs}
    for doc, _ in docs:
        problem = object_rules.identity_problem(doc)
        if problem is not None:
            rev.file_findings.append(problem)
            continue
        readable.append((doc, KubeObject.read(doc, namespace)))
    crds = object_rules.crd_kinds([o for _, o in readable])
    if not object_rules.schemas_available():
        builtin = next((o for _, o in readable if o.info is not None and not o.info.crd), None)
        if builtin is not None:
            rev.file_findings.append(
                builtin.document.finding(
                    (),
                    "object-schema-unchecked",
                    "Kubernetes' schemas are not installed, so objects other than workspaces were not checked "
                    "against them: pip install 'kaito-gitops[schemas]'",
                    Severity.WARNING,
                )
            )
    owners = {k: ws for ws in rev.workspaces if ws.name for k in object_rules.workspace_object_keys(ws)}
    version = rev.kubernetes_version
    for doc, obj in readable:
        if obj.info is None and obj.kind_name in crds:
            obj = KubeObject.read(doc, namespace, namespaced=crds[obj.kind_name])
        findings = object_rules.check_object(obj, policy, crds)
        if not findings:
            ckey = ("kube-schema", doc.index, version)
            cache = caches[id(doc)]
            if ckey not in cache:
                cache[ckey] = object_rules.check_schema(obj, version)
            findings = list(cache[ckey])
        other = object_rules.conflict(obj, owners)
        if other is not None:
            findings.append(other)
        first = rev.objects.setdefault(obj.key, obj)
        if first is not obj:
            findings.append(object_rules.duplicate(obj, first))
            twin = object_rules.duplicate(first, obj)
            rev.file_findings.append(twin)
            rev.object_findings.setdefault(obj.key, []).append(twin)
        rev.file_findings.extend(findings)
        errors = [f for f in findings if f.is_error]
        if errors:
            rev.invalid_objects.add(obj.key)
            rev.object_findings.setdefault(obj.key, []).extend(errors)


def validate_sources(
    files: Iterable[tuple[str, bytes]],
    *,
    namespace: str = "default",
    target: str | None = None,
    catalog: Catalog | None = None,
    base: Revision | None = None,
    max_file_bytes: int | None = None,
    cache: dict | None = None,
    byo_nodes: bool = False,
    policy: kinds.ObjectPolicy | None = None,
) -> Revision:
    """Load and validate files given as (display path, bytes).

    `cache` (any dict the caller keeps between calls) memoises parsing, schema checks and the
    typed workspaces per (path, content): the daemon re-validates a 1,000-file repository in a
    fraction of the time when one file changed. Results are the same with or without it; it
    keeps only the files of this call.
    """
    catalog = catalog or load_catalog()
    rev = Revision()
    ws_docs: list[Workspace] = []
    object_docs: list[tuple[Document, dict]] = []
    set_members: dict[int, inferenceset.InferenceSet] = {}  # id(member workspace) -> its set
    template_only: set[int] = set()  # members made only to check a set of replicas 0
    used: dict = {}
    for path, raw in files:
        rev.files.append(path)
        if path.replace("\\", "/").rsplit("/", 1)[-1] == SETTINGS_FILE:
            _read_settings(rev, path, raw, max_file_bytes)
            continue
        if is_suite_path(path):
            _read_suites(rev, path, raw, max_file_bytes, namespace)
            continue
        ckey = (path, raw, max_file_bytes)
        hit = cache.get(ckey) if cache is not None else None
        if hit is None:
            loaded = load_text(path, raw) if max_file_bytes is None else load_text(path, raw, max_file_bytes)
            hit = (loaded, {})
        if cache is not None:
            used[ckey] = hit
        loaded, schema_cache = hit
        rev.file_findings.extend(loaded.findings)
        if not loaded.documents and any(f.is_error for f in loaded.findings):
            rev.unreadable_files.add(path)
        for doc in loaded.documents:
            if not isinstance(doc.data, dict):
                rev.file_findings.append(
                    doc.finding(
                        (),
                        "document-ignored",
                        "a YAML document that is not a mapping; ignored",
                        Severity.WARNING,
                    )
                )
                continue
            if doc.kind == "Workspace":
                ws = schema_cache.get(("workspace", doc.index, namespace))
                if ws is None:
                    ws = schema_cache[("workspace", doc.index, namespace)] = Workspace.read(doc, namespace)
                ws_docs.append(ws)
                if doc.index not in schema_cache:
                    schema_cache[doc.index] = check_schema(doc)
                rev.workspace_findings[id(ws)] = list(schema_cache[doc.index])
            elif doc.kind == inferenceset.KIND and kinds.group_of(doc.api_version) == kinds.KAITO_GROUP:
                _read_set(rev, doc, schema_cache, namespace, ws_docs, object_docs, set_members, template_only)
            elif doc.kind == "ConfigMap" and doc.api_version == "v1":
                if doc.index not in schema_cache:
                    schema_cache[doc.index] = check_schema(doc)
                rev.file_findings.extend(schema_cache[doc.index])
                cm = ConfigMap.read(doc, namespace)
                if cm.name:
                    rev.configmaps[cm.key] = cm
                object_docs.append((doc, schema_cache))
            else:
                ignored = _ignored(doc)
                if ignored is not None:
                    rev.file_findings.append(ignored)
                else:
                    object_docs.append((doc, schema_cache))
    if cache is not None:  # forget files that are gone or changed
        cache.clear()
        cache.update(used)
    ctx = Context(catalog=catalog, configmaps=rev.configmaps, target=target, byo_nodes=byo_nodes)
    first: dict[WorkspaceKey, Workspace] = {}
    sized: dict[int, list[Finding]] = {}  # id(set) -> its findings that need sizing
    for ws in ws_docs:
        found = check_workspace(ws, ctx)
        s = set_members.get(id(ws))
        if s is not None:  # named by the set's own fields, at the set's own lines
            # the set's name is checked once, for every member it makes (inferenceset._names)
            found = [inferenceset.member_finding(f) for f in found if f.field != "metadata.name"]
            if id(s) not in sized:  # a set with an error of its own runs nothing to size
                sized[id(s)] = [] if s.key in rev.held_sets else _set_rules(s, ws, ctx)
            found += sized[id(s)]
        else:
            found += inferenceset.on_a_workspace(ws.document, ws.annotations)
        if id(ws) in template_only:  # replicas 0: the template is checked, nothing runs
            rev.file_findings.extend(found)
            _hold_set(rev, s, found + rev.workspace_findings.get(id(ws), []))
            rev.workspace_findings.pop(id(ws), None)
            continue
        rev.workspaces.append(ws)
        rev.workspace_findings[id(ws)].extend(found)
        if ws.name:
            other = first.setdefault(ws.key, ws)
            if other is not ws:
                for a, b in ((ws, other), (other, ws)):
                    line, _ = b.document.positions.value(("metadata", "name"))
                    rev.workspace_findings[id(a)].append(
                        a.document.finding(
                            ("metadata", "name"),
                            "workspace-duplicate",
                            f"workspace {ws.namespace}/{ws.name} is also defined in {b.path}:{line}; each workspace must "
                            "live in one file",
                        )
                    )
    _members_share_errors(rev, set_members)
    _scaled_names(rev)
    for ws in rev.workspaces:  # nor may the autoscaler start more members of a set with an error
        if id(ws) in set_members:
            _hold_set(rev, set_members[id(ws)], rev.workspace_findings[id(ws)])
    _check_objects(rev, object_docs, policy or kinds.ObjectPolicy(), namespace)
    for held in rev.held_sets:  # its Service stays as it is while the set has an error
        rev.invalid_objects.add(("Service", *held))
    known = {ws.key: _adapter_names(ws) for ws in rev.workspaces if ws.name}
    for i, suite in enumerate(rev.suites):
        missing = unknown_workspaces(suite, known)
        if missing:
            rev.suites[i] = replace(suite, errors=(*suite.errors, *missing))
            rev.file_findings.extend(missing)
    for ws in rev.workspaces:
        rev.workspace_findings[id(ws)].extend(object_rules.missing_references(ws, rev.objects))
    if base is not None:
        old = base.by_key()
        for ws in rev.workspaces:
            if ws.key in old:
                rev.workspace_findings[id(ws)].extend(check_changes(old[ws.key], ws))
    return rev


__all__ = ["SETTINGS_FILE", "Revision", "WorkspaceKey", "validate_sources", "with_settings"]


def _adapter_names(ws: Workspace) -> set[str]:
    adapters = ws.inference.adapters if ws.inference else ()
    return {a.source.name for a in adapters if a.source is not None and a.source.name}
