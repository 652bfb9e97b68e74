"""Validation in layers: YAML -> schema -> semantics -> repository -> between revisions.

`validate_sources` is a pure function of file contents: the CLI feeds it files from disk,
the daemon feeds it blobs from a git revision, and both get the same findings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..catalog import Catalog, load_catalog
from ..findings import Finding, Severity
from ..loading import Document, load_text
from ..workspace import ConfigMap, Workspace
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


def _other_document(doc: Document) -> Finding | None:
    what = f"{doc.api_version or '?'} {doc.kind or '?'}"
    if doc.kind == "Secret":
        return doc.finding(
            ("kind",),
            "document-ignored",
            "Secrets do not belong in git and kaito-gitops never applies them; create this Secret in "
            "the cluster (kubectl, or an external secret store) and remove it from the repository",
            Severity.WARNING,
        )
    if not doc.kind or not doc.api_version:
        return doc.finding(
            (), "document-ignored", "not a Kubernetes object (no apiVersion/kind); ignored", Severity.WARNING
        )
    return doc.finding(
        ("kind",),
        "document-ignored",
        f"kaito-gitops manages Workspaces (and the ConfigMaps they name); this {what} is ignored",
        Severity.WARNING,
    )


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
    used: dict = {}
    for path, raw in files:
        rev.files.append(path)
        if path.replace("\\", "/").rsplit("/", 1)[-1] == SETTINGS_FILE:
            _read_settings(rev, path, raw, max_file_bytes)
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
            elif doc.kind == "ConfigMap" and doc.api_version == "v1":
                if doc.index not in schema_cache:
                    schema_cache[doc.index] = check_schema(doc)
                rev.file_findings.extend(schema_cache[doc.index])
                cm = ConfigMap.read(doc, namespace)
                if cm.name:
                    rev.configmaps[cm.key] = cm
            else:
                rev.file_findings.append(_other_document(doc))
    if cache is not None:  # forget files that are gone or changed
        cache.clear()
        cache.update(used)
    ctx = Context(catalog=catalog, configmaps=rev.configmaps, target=target, byo_nodes=byo_nodes)
    first: dict[WorkspaceKey, Workspace] = {}
    for ws in ws_docs:
        rev.workspaces.append(ws)
        rev.workspace_findings[id(ws)].extend(check_workspace(ws, ctx))
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
    if base is not None:
        old = base.by_key()
        for ws in rev.workspaces:
            if ws.key in old:
                rev.workspace_findings[id(ws)].extend(check_changes(old[ws.key], ws))
    return rev


__all__ = ["SETTINGS_FILE", "Revision", "WorkspaceKey", "validate_sources", "with_settings"]
