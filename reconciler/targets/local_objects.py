"""The local target's stand-ins for the other objects of the repository (docs/objects.md).

A PersistentVolumeClaim is a folder (STATE/_volumes/<ns>/<name>): what a workspace mounting the
claim reads and writes. A ConfigMap is a folder of one file per key (STATE/_configmaps/<ns>/<name>/).
Other kinds are reported as not applicable locally. Secrets stay out of git, so their stand-in is
made by hand, like `kubectl create secret`: STATE/_secrets/<ns>/<name>/<key>, one file per key; a
workspace's modelAccessSecret becomes HF_TOKEN, its imagePushSecret's .dockerconfigjson the
credentials its adapter is pushed with. `_` cannot start a namespace, so these folders never
meet a workspace's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..companions import ObjectKey, Reference
from ..planning import ObjectPlan
from .base import ObjectsResult

VOLUMES = "_volumes"
CONFIGMAPS = "_configmaps"
SECRETS = "_secrets"  # written by the user, never by us: nothing prunes it
LOCAL_KINDS = {"PersistentVolumeClaim": VOLUMES, "ConfigMap": CONFIGMAPS}


class LocalObjects:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.secrets = state_dir / SECRETS

    def _object_folder(self, key: ObjectKey) -> Path:
        return self.state_dir / LOCAL_KINDS[key[0]] / key[1] / key[2]

    def volume_path(self, volume_source: dict | None, namespace: str) -> Path | None:
        """Where a volume a workspace mounts lives here: a hostPath as is, a claim as its folder."""
        if not volume_source:
            return None
        if "hostPath" in volume_source:
            return Path(volume_source["hostPath"]["path"]).resolve()
        claim = (volume_source.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            return self._object_folder(("PersistentVolumeClaim", namespace, claim))
        return None

    def apply(self, desired: dict[ObjectKey, ObjectPlan], keep: set[ObjectKey], prune: bool) -> ObjectsResult:
        result = ObjectsResult()
        for key, plan in desired.items():
            if key[0] not in LOCAL_KINDS:
                result.health[key] = "not applicable locally"
                continue
            folder = self._object_folder(key)
            if key[0] == "PersistentVolumeClaim":
                if not folder.is_dir():
                    folder.mkdir(parents=True)
                    result.writes += 1
                    result.applied.append(f"{key[0]} {key[1]}/{key[2]} -> {folder}")
                result.health[key] = "Bound"
                continue
            data = {k: str(v) for k, v in (plan.body.get("data") or {}).items()}
            have = {f.name: f.read_text() for f in folder.glob("*") if f.is_file()} if folder.is_dir() else {}
            if have != data:
                folder.mkdir(parents=True, exist_ok=True)
                for name in set(have) - set(data):
                    (folder / name).unlink()
                for name, text in data.items():
                    (folder / name).write_text(text)
                result.writes += 1
                result.applied.append(f"{key[0]} {key[1]}/{key[2]} -> {folder}")
            result.health[key] = "Applied"
        live = {
            (kind, f.parent.name, f.name)
            for kind, sub in LOCAL_KINDS.items()
            for f in (self.state_dir / sub).glob("*/*")
            if f.is_dir()
        }
        gone = sorted(live - set(desired) - keep)
        if gone and not prune:
            result.held = gone
            return result
        for key in gone:  # a claim's data goes with it, as a PVC's does with the Delete reclaim policy
            shutil.rmtree(self._object_folder(key), ignore_errors=True)
            result.writes += 1
            result.deleted.append(f"{key[0]} {key[1]}/{key[2]}")
        return result

    def secret_file(self, namespace: str, name: str | None, key: str) -> Path | None:
        """A key of a Secret's local stand-in, when the user made one."""
        if not name:
            return None
        path = self.secrets / namespace / name / key
        return path if path.is_file() else None

    def missing(self, refs: list[Reference]) -> list[Reference]:
        """Claims and ConfigMaps without their folder. Secrets are optional here: without a stand-in
        the workload runs without them (no push, no gated download) and status says so."""
        return [r for r in refs if r.kind in LOCAL_KINDS and not self._object_folder(r.key).is_dir()]
