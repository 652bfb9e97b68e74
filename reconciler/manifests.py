"""Kubernetes objects as YAML text, in a stable, readable key order."""

from __future__ import annotations

import io

from ruamel.yaml import YAML
from ruamel.yaml.representer import SafeRepresenter


class _NoAliasRepresenter(SafeRepresenter):
    """Manifests never use anchors, even when a sub-object repeats."""

    def ignore_aliases(self, data) -> bool:
        return True


def _yaml() -> YAML:
    y = YAML(typ="safe", pure=True)
    y.Representer = _NoAliasRepresenter
    y.default_flow_style = False
    y.sort_base_mapping_type_on_output = False  # keep apiVersion, kind, metadata, spec first
    y.width = 4096
    return y


def dump(obj: dict) -> str:
    buf = io.StringIO()
    _yaml().dump(obj, buf)
    return buf.getvalue()


def file_name(obj: dict) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
