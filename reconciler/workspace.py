"""The typed Workspace model, read defensively from a loaded YAML document.

Construction never fails: a field of the wrong type reads as absent here, and the
schema layer reports the type error with its position. That lets every semantic rule
run on every document, so a user sees all problems in one pass.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .loading import Document

V1ALPHA1_DEFAULT_INSTANCE_TYPE = "Standard_NC24ads_A100_v4"


def _str(d: Any, key: str) -> str | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, str) else None


def _dict(d: Any, key: str) -> dict | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if isinstance(v, dict) else None


def _strs(d: Any, key: str) -> tuple[str, ...]:
    v = d.get(key) if isinstance(d, dict) else None
    return tuple(x for x in v if isinstance(x, str)) if isinstance(v, list) else ()


@dataclass(frozen=True, slots=True)
class DataSource:
    name: str | None = None
    urls: tuple[str, ...] = ()
    volume_source: dict | None = None
    image: str | None = None
    image_pull_secrets: tuple[str, ...] = ()

    @classmethod
    def read(cls, d: Any) -> DataSource | None:
        if not isinstance(d, dict):
            return None
        return cls(
            _str(d, "name"),
            _strs(d, "urls"),
            _dict(d, "volumeSource"),
            _str(d, "image"),
            _strs(d, "imagePullSecrets"),
        )

    def kinds(self) -> list[str]:
        """Which of urls / image / volumeSource are set."""
        out = []
        if self.urls:
            out.append("urls")
        if self.image:
            out.append("image")
        if self.volume_source is not None:
            out.append("volumeSource")
        return out


@dataclass(frozen=True, slots=True)
class DataDestination:
    volume_source: dict | None = None
    image: str | None = None
    image_push_secret: str | None = None

    @classmethod
    def read(cls, d: Any) -> DataDestination | None:
        if not isinstance(d, dict):
            return None
        return cls(_dict(d, "volumeSource"), _str(d, "image"), _str(d, "imagePushSecret"))


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    access_mode: str = "public"
    image: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    model_access_secret: str | None = None

    @classmethod
    def read(cls, d: Any) -> Preset | None:
        if not isinstance(d, dict):
            return None
        opts = _dict(d, "presetOptions") or {}
        return cls(
            _str(d, "name") or "",
            _str(d, "accessMode") or "public",
            _str(opts, "image"),
            _strs(opts, "imagePullSecrets"),
            _str(opts, "modelAccessSecret"),
        )


@dataclass(frozen=True, slots=True)
class Adapter:
    source: DataSource | None
    strength: Any = None  # a string per the API; anything else is a schema error

    @property
    def name(self) -> str | None:
        return self.source.name if self.source else None


@dataclass(frozen=True, slots=True)
class Inference:
    preset: Preset | None = None
    template: dict | None = None
    config: str | None = None
    adapters: tuple[Adapter, ...] = ()

    @classmethod
    def read(cls, d: Any) -> Inference | None:
        if not isinstance(d, dict):
            return None
        adapters = []
        raw = d.get("adapters")
        if isinstance(raw, list):
            for a in raw:
                if isinstance(a, dict):
                    adapters.append(Adapter(DataSource.read(a.get("source")), a.get("strength")))
                else:
                    adapters.append(Adapter(None))
        return cls(Preset.read(d.get("preset")), _dict(d, "template"), _str(d, "config"), tuple(adapters))


@dataclass(frozen=True, slots=True)
class Tuning:
    preset: Preset | None = None
    method: str | None = None
    config: str | None = None
    input: DataSource | None = None
    output: DataDestination | None = None

    @classmethod
    def read(cls, d: Any) -> Tuning | None:
        if not isinstance(d, dict):
            return None
        method = _str(d, "method")
        return cls(
            Preset.read(d.get("preset")),
            method.lower() if method else None,
            _str(d, "config"),
            DataSource.read(d.get("input")),
            DataDestination.read(d.get("output")),
        )


@dataclass(frozen=True, slots=True)
class Resource:
    instance_type: str | None = None
    count: int | None = None  # None when not written (Kaito defaults it to 1)
    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: tuple[dict, ...] = ()
    has_label_selector: bool = False
    preferred_nodes: tuple[str, ...] = ()
    partition: dict | None = None

    @classmethod
    def read(cls, d: Any, api_version: str = "") -> Resource:
        if not isinstance(d, dict):
            return cls()
        instance_type = _str(d, "instanceType")
        if instance_type is None and "instanceType" not in d and api_version == "kaito.sh/v1alpha1":
            instance_type = V1ALPHA1_DEFAULT_INSTANCE_TYPE  # the v1alpha1 CRD default
        sel = _dict(d, "labelSelector")
        labels = {}
        exprs: tuple[dict, ...] = ()
        if sel is not None:
            ml = _dict(sel, "matchLabels") or {}
            labels = {k: v for k, v in ml.items() if isinstance(v, str)}
            me = sel.get("matchExpressions")
            exprs = tuple(e for e in me if isinstance(e, dict)) if isinstance(me, list) else ()
        count = d.get("count")
        return cls(
            instance_type=instance_type or None,
            count=count if isinstance(count, int) and not isinstance(count, bool) else None,
            match_labels=labels,
            match_expressions=exprs,
            has_label_selector=sel is not None,
            preferred_nodes=_strs(d, "preferredNodes"),
            partition=_dict(d, "partition"),
        )


# Kaito's label on an InferenceSet's workspaces (value: the set), and ours naming the member
SET_LABELS = ("inferenceset.kaito.sh/created-by", "inferencesetmember.kaito.sh")


@dataclass(frozen=True)  # no slots: spec_hash is cached on the instance
class Workspace:
    """One Workspace document, typed, with a pointer back to where it came from."""

    api_version: str
    name: str
    namespace: str
    annotations: dict[str, str]
    resource: Resource
    inference: Inference | None
    tuning: Tuning | None
    document: Document = field(compare=False, repr=False)
    # the InferenceSet a member belongs to, set by validation from the set itself (never read
    # from a file: a Workspace cannot join a set by a label)
    set_name: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def path(self) -> str:
        return self.document.path

    @property
    def set_key(self) -> tuple[str, str] | None:
        return (self.namespace, self.set_name) if self.set_name else None

    @property
    def set_labels(self) -> dict[str, str]:
        """What a member and its pods carry: the set's Service selects them by the first."""
        return dict(zip(SET_LABELS, (self.set_name, self.name), strict=True)) if self.set_name else {}

    @property
    def kind(self) -> str:
        return "tuning" if self.tuning is not None and self.inference is None else "inference"

    @property
    def preset(self) -> Preset | None:
        if self.inference is not None:
            return self.inference.preset
        if self.tuning is not None:
            return self.tuning.preset
        return None

    @functools.cached_property
    def spec_hash(self) -> str:
        """A stable digest of the spec and the kaito.sh/ annotations that change rendering
        (computed when first asked: validation alone never needs it)."""
        d = self.document.data
        spec = {k: d.get(k) for k in ("resource", "inference", "tuning") if d.get(k) is not None}
        payload = {
            "spec": spec,
            "annotations": {k: v for k, v in self.annotations.items() if k.startswith("kaito.sh/")},
        }
        data = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(data.encode()).hexdigest()

    @classmethod
    def read(cls, doc: Document, default_namespace: str) -> Workspace:
        d = doc.data
        md = _dict(d, "metadata") or {}
        annotations = {k: str(v) for k, v in (_dict(md, "annotations") or {}).items()}
        api_version = _str(d, "apiVersion") or ""
        return cls(
            api_version=api_version,
            name=_str(md, "name") or "",
            namespace=_str(md, "namespace") or default_namespace,
            annotations=annotations,
            resource=Resource.read(d.get("resource"), api_version),
            inference=Inference.read(d.get("inference")),
            tuning=Tuning.read(d.get("tuning")),
            document=doc,
        )


@dataclass(frozen=True, slots=True)
class ConfigMap:
    name: str
    namespace: str
    data: dict[str, str]
    document: Document = field(compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @classmethod
    def read(cls, doc: Document, default_namespace: str) -> ConfigMap:
        md = _dict(doc.data, "metadata") or {}
        data = {k: v for k, v in (_dict(doc.data, "data") or {}).items() if isinstance(v, str)}
        return cls(_str(md, "name") or "", _str(md, "namespace") or default_namespace, data, doc)
