"""Workspace files for tests, made from example-repo's SmolLM2 workspace."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOL = (ROOT / "example-repo" / "local" / "smollm2.yaml").read_text()


def smol_ws(name: str, preset: str = "smollm2-135m-instruct", sku: str = "Standard_NV36ads_A10_v5") -> str:
    """example-repo/local/smollm2.yaml as workspace `name`: its `apps:` node label follows the name,
    so each workspace selects its own nodes; `preset` and `sku` replace the model and the VM size."""
    out = (
        SMOL.replace("  name: smollm2\n", f"  name: {name}\n")
        .replace("apps: smollm2\n", f"apps: {name}\n")
        .replace("name: smollm2-135m-instruct\n", f"name: {preset}\n")
        .replace("instanceType: Standard_NV36ads_A10_v5\n", f"instanceType: {sku}\n")
    )
    assert out.count(f"name: {name}\n") == 1 and f"apps: {name}\n" in out, "smollm2.yaml changed shape"
    return out
