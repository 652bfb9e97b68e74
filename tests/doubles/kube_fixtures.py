"""pytest fixtures for the Kubernetes API double; import them into a test module or a conftest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from doubles.kube_api import KubeAPIServer


@pytest.fixture
def kube_api() -> Iterator[KubeAPIServer]:
    """A started, empty API server double; stopped after the test."""
    with KubeAPIServer() as server:
        yield server


@pytest.fixture
def kube_client(kube_api: KubeAPIServer) -> Iterator[Any]:
    """A kubernetes.client.ApiClient pointed at `kube_api`."""
    from kubernetes import client

    with client.ApiClient(kube_api.client_config()) as api:
        yield api
