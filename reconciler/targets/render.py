"""The render target: desired objects as YAML files, for Flux or Argo CD to apply.

Writes one file per object under OUT/<namespace>/<workspace>/ and deletes the folders of
workspaces that are gone, so kaito-gitops can hydrate manifests into another repository or
a folder a second tool watches. The other objects of the watched folders (PVCs, ConfigMaps, ...)
go to OUT/<namespace>/_objects/ (cluster-scoped ones to OUT/_cluster/_objects/); `_` cannot
start a Kubernetes name, so these folders never meet a workspace's. Files are replaced
atomically (temp file + rename).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..companions import ObjectKey, Reference
from ..loading import load_text
from ..manifests import dump, file_name
from ..planning import ObjectPlan, WorkspacePlan
from ..render.common import ANNOTATION_SOURCE
from ..status import NodeState, Observation
from .base import ApplyResult, ObjectsResult, WorkspaceKey

OBJECTS = "_objects"
CLUSTER = "_cluster"


class RenderTarget:
    name = "render"

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._live: dict[WorkspaceKey, dict[str, str]] = {}
        # the files of each key's plan, kept while the plan is the same object (plans are reused
        # across passes and revisions, so a pass does not serialise every object again)
        self._rendered: dict[WorkspaceKey, tuple[WorkspacePlan, dict[str, str]]] = {}

    def _files(self, plan: WorkspacePlan) -> dict[str, str]:
        known = self._rendered.get(plan.key)
        if known is None or known[0] is not plan:
            known = self._rendered[plan.key] = (plan, {file_name(o): dump(o) for o in plan.objects})
        return known[1]

    def refresh(self) -> None:
        live: dict[WorkspaceKey, dict[str, str]] = {}
        for folder in sorted(p for p in self.out.glob("*/*") if p.is_dir()):
            if folder.name == OBJECTS:
                continue
            key = (folder.parent.name, folder.name)
            live[key] = {f.name: f.read_text() for f in sorted(folder.glob("*.yaml"))}
        self._live = live

    def live_workspaces(self) -> dict[WorkspaceKey, str]:
        out = {}
        for key, files in self._live.items():
            known = self._rendered.get(key)
            out[key] = known[0].workspace.path if known and known[1] == files else _source_file(files)
        return out

    def apply(self, plan: WorkspacePlan) -> ApplyResult:
        result = ApplyResult()
        folder = self.out / plan.key[0] / plan.key[1]
        folder.mkdir(parents=True, exist_ok=True)
        have = self._live.get(plan.key, {})
        want = self._files(plan)
        for name, text in want.items():
            if have.get(name) == text:
                continue
            tmp = folder / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, folder / name)
            result.writes += 1
            result.applied.append(name)
        for name in set(have) - set(want):
            (folder / name).unlink(missing_ok=True)
            result.writes += 1
            result.deleted.append(name)
        self._live[plan.key] = want
        return result

    def remove(self, key: WorkspaceKey) -> tuple[bool, ApplyResult]:
        result = ApplyResult()
        folder = self.out / key[0] / key[1]
        if folder.exists():
            result.deleted = sorted(p.name for p in folder.glob("*.yaml"))
            result.writes = len(result.deleted)
            shutil.rmtree(folder)
            # workers remove workspaces of one namespace at once: another may take the folder first
            with contextlib.suppress(OSError):
                if not any(folder.parent.iterdir()):
                    folder.parent.rmdir()
        self._live.pop(key, None)
        self._rendered.pop(key, None)
        return True, result

    def observe(self, key: WorkspaceKey, plan: WorkspacePlan | None) -> Observation:
        have = self._live.get(key, {})
        applied = plan is not None and have == self._files(plan)
        kind = plan.kind if plan else "inference"
        return Observation(kind, applied, rendered=True)

    def nodes(self, plan: WorkspacePlan) -> list[NodeState] | None:
        return None

    def _object_file(self, key: ObjectKey) -> Path:
        """OUT/<namespace>/_objects/<kind>[.<group>]-<name>.yaml: the group keeps two kinds apart."""
        return self.out / (key[1] or CLUSTER) / OBJECTS / f"{key[0].lower()}-{key[2]}.yaml"

    def apply_objects(
        self, desired: dict[ObjectKey, ObjectPlan], keep: set[ObjectKey], prune: bool
    ) -> ObjectsResult:
        result = ObjectsResult()
        want = {self._object_file(k): (k, dump(p.body)) for k, p in desired.items()}
        for path, (key, text) in want.items():
            result.health[key] = "Rendered"
            if path.exists() and path.read_text() == text:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, path)
            result.writes += 1
            result.applied.append(str(path.relative_to(self.out)))
        kept = {self._object_file(k) for k in keep}
        gone = [p for p in sorted(self.out.glob(f"*/{OBJECTS}/*.yaml")) if p not in want and p not in kept]
        if gone and not prune:
            return result
        for path in gone:
            path.unlink(missing_ok=True)
            result.writes += 1
            result.deleted.append(str(path.relative_to(self.out)))
            with contextlib.suppress(OSError):  # the folder goes with its last file
                path.parent.rmdir()
                path.parent.parent.rmdir()
        return result

    def missing(self, refs: list[Reference]) -> list[Reference]:
        return []  # nothing runs here: the cluster that applies these files has the last word

    def serve_sets(self, sets: list) -> dict[tuple[str, str], str]:
        return {}  # the rendered Services are the endpoints, wherever the files are applied

    def set_load(self, s, members):
        return None  # nothing runs here: no load, no scaling

    def close(self) -> None:
        return None


def _source_file(files: dict[str, str]) -> str:
    """The workspace file a folder we did not write this run came from (its source annotation)."""
    for text in files.values():
        docs = load_text("x.yaml", text.encode()).documents
        if docs and isinstance(docs[0].data, dict):
            return ((docs[0].data.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SOURCE, "")
    return ""
