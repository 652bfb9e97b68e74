from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


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
