"""pytest fixtures for the Kubernetes API double (tests/conftest.py loads them for every test
module), and builders for the objects tests seed it with."""

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


def gpu_node(name: str, labels: dict, gpus: int = 1, ready: bool = True, pressure: str | None = None) -> dict:
    """A Node with `gpus` NVIDIA GPUs allocatable (as the device plugin reports them)."""
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    if pressure:
        conds.append({"type": pressure, "status": "True"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "conditions": conds,
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "capacity": {"nvidia.com/gpu": str(gpus)},
        },
    }


def workspace_node(
    workspace: str, namespace: str = "default", *, name: str | None = None, gpus: int = 1
) -> dict:
    """The GPU node Kaito would bring up for a workspace: its `apps:` label (smol_ws's selector) and
    the kaito.sh labels naming the workspace."""
    labels = {"apps": workspace, "kaito.sh/workspace": workspace, "kaito.sh/workspacenamespace": namespace}
    return gpu_node(name or f"node-{workspace}", labels, gpus=gpus)
