"""Workspaces the plan/render tests share: the example repo, the fixtures, and synthetic ones."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from reconciler.planning import DesiredState, plan_revision
from reconciler.render.common import RenderSettings
from reconciler.source.tree import disk_files
from reconciler.validation import validate_sources

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = RenderSettings(revision="0123456789ab")


@cache
def example_and_fixture_state() -> DesiredState:
    files = list(
        disk_files(
            [str(ROOT / "example-repo"), str(ROOT / "tests" / "fixtures" / "workspaces")],
            1 << 20,
            relative_to=str(ROOT),
        )
    )
    rev = validate_sources(files)
    assert not rev.has_errors, [f.text() for f in rev.findings if f.is_error]
    return plan_revision(rev, SETTINGS)


def inference_yaml(name: str, preset: str, sku: str) -> str:
    secret = "    presetOptions: {modelAccessSecret: hf-token}\n"
    return (
        f"apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: {name}\nresource:\n"
        f"  instanceType: {sku}\n  labelSelector:\n    matchLabels: {{apps: {name}}}\n"
        f"inference:\n  preset:\n    name: {preset}\n{secret}"
    )


@cache
def every_preset_on_every_sku() -> DesiredState:
    """One inference workspace per (preset, SKU) pair that fits."""
    from reconciler.catalog import load_catalog
    from reconciler.sizing import DoesNotFit, size_inference

    c = load_catalog()
    files = []
    for m in sorted(c.models.values(), key=lambda m: m.name):
        if m.rejected:
            continue
        for s in sorted(c.skus.values(), key=lambda s: s.name):
            if isinstance(size_inference(m, s), DoesNotFit):
                continue
            name = f"w{len(files):04d}"
            files.append((f"{name}.yaml", inference_yaml(name, m.name, s.name).encode()))
    rev = validate_sources(files)
    assert not rev.has_errors, [f.text() for f in rev.findings if f.is_error][:5]
    return plan_revision(rev, SETTINGS)
