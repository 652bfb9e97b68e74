"""The release: one version in the package, the images and deploy/, and a workflow that builds,
signs and publishes what README's install section names."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reconciler import __version__
from reconciler.render.common import DEFAULT_INFERENCE_IMAGE, DEFAULT_TUNING_IMAGE

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def set_version(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "set-version.py"), *args], capture_output=True, text=True
    )


def test_the_package_the_images_and_deploy_name_one_version():
    r = set_version(ROOT, "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert DEFAULT_INFERENCE_IMAGE.endswith(":" + __version__) and DEFAULT_TUNING_IMAGE.endswith(
        ":" + __version__
    )


def test_set_version_moves_every_place_and_check_names_each_that_differs(tmp_path):
    for rel in ("scripts/set-version.py", "reconciler/__init__.py", "docs/install.md", "deploy"):
        src, dst = ROOT / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    assert set_version(tmp_path, "0.2.0rc1").returncode == 0
    assert set_version(tmp_path, "--check", "v0.2.0rc1").returncode == 0  # a tag's leading v is fine
    r = set_version(tmp_path, "--check", __version__)
    assert r.returncode == 1
    listed = r.stdout
    for where in ("reconciler/__init__.py", "deploy/base/deployment.yaml:", "deploy/base/config.yaml:"):
        assert where in listed, listed
    assert "newTag: 0.2.0rc1" in listed  # the overlays' kustomize image tags too
    assert set_version(tmp_path, "not-a-version").returncode == 2


def test_the_release_workflow_is_valid_for_github():
    cj = shutil.which("check-jsonschema", path=str(ROOT / ".venv" / "bin"))
    if cj is None:
        pytest.skip("needs the dev extra (check-jsonschema)")
    r = subprocess.run(
        [cj, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_release_builds_signs_and_publishes_every_image_and_the_wheel():
    wf = yaml.safe_load(WORKFLOW.read_text())
    jobs = wf["jobs"]
    on = wf[True] if True in wf else wf["on"]  # PyYAML reads the key `on` as True
    assert on["push"]["tags"] == ["v*.*.*"]
    check = " ".join(s.get("run", "") for s in jobs["check"]["steps"])
    assert 'scripts/set-version.py --check "${GITHUB_REF_NAME#v}"' in check
    images = {m["image"] for m in jobs["images"]["strategy"]["matrix"]["include"]}
    assert images == {p.parent.name for p in (ROOT / "deploy" / "images").glob("*/Dockerfile")}
    steps = jobs["images"]["steps"]
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["sbom"] is True and build["with"]["provenance"] == "mode=max"
    assert build["with"]["file"] == "deploy/images/${{ matrix.image }}/Dockerfile"
    sign = next(s for s in steps if "cosign sign" in s.get("run", ""))
    assert "@${DIGEST}" in sign["run"] and sign["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    assert jobs["images"]["permissions"]["id-token"] == "write"
    daemon = next(m for m in jobs["images"]["strategy"]["matrix"]["include"] if m["image"] == "daemon")
    assert "linux/arm64" in daemon["platforms"]
    pypi = jobs["pypi"]
    assert pypi["permissions"] == {"id-token": "write"}  # trusted publishing, no stored token
    publish = next(s for s in pypi["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish"))
    assert "password" not in (publish.get("with") or {})
    assert set(pypi["needs"]) == {"dist", "images"}  # nothing is published unless every image is
