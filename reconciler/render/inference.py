"""Inference objects: Kaito's shape (StatefulSet + Service + headless Service) with SGLang inside.

One pod per node. Pod 0 is the leader: the Service sends traffic to it alone, and the other
pods find it through the headless Service for SGLang's multi-node init. The container runs
`python -m runtime.inference`, which turns these arguments into the SGLang command.
"""

from __future__ import annotations

import math

from runtime.inference_args import DEFAULT_PORT, DIST_INIT_PORT

from ..catalog import Model
from ..configs import INFERENCE_KEY, ServerConfig
from ..sizing import InferenceSizing, Overrides
from ..workspace import Workspace
from .common import (
    GPU_RESOURCE,
    GPU_TOLERATIONS,
    RenderSettings,
    dns_name,
    hf_token_env,
    metadata,
    node_affinity,
    ownership_labels,
    selector_labels,
)

WEIGHTS_DIR = "/workspace/weights"
ADAPTERS_DIR = "/mnt/adapter"
CONFIG_DIR = "/mnt/config"


def headless_name(ws: Workspace) -> str:
    return f"{ws.name}-headless"


def leader_address(ws: Workspace) -> str:
    return f"{ws.name}-0.{headless_name(ws)}.{ws.namespace}.svc.cluster.local"


def runtime_args(
    ws: Workspace,
    model: Model | None,
    sizing: InferenceSizing | None,
    server: ServerConfig | None,
    config_in_cluster: bool,
    gpus_per_node: int,
    nodes: int,
) -> list[str]:
    """Arguments of `python -m runtime.inference` for this workspace."""
    preset = ws.inference.preset if ws.inference else None
    name = model.huggingface if model else (preset.name if preset else "")
    args = [
        "--model",
        name,
        "--served-model-name",
        model.served_name if model else name.rsplit("/", 1)[-1].lower(),
        "--port",
        str(DEFAULT_PORT),
        "--download-dir",
        WEIGHTS_DIR,
    ]
    args += _layout_args(ws, sizing, server, gpus_per_node, nodes)
    if model is not None:
        if model.tool_call_parser and not _flag_set(server, "tool-call-parser"):
            args += ["--tool-call-parser", model.tool_call_parser]
        if model.reasoning_parser and not _flag_set(server, "reasoning-parser"):
            args += ["--reasoning-parser", model.reasoning_parser]
    if ws.inference and ws.inference.adapters:
        args += ["--adapters-dir", ADAPTERS_DIR]
    if config_in_cluster:
        args += ["--config-file", f"{CONFIG_DIR}/{INFERENCE_KEY}"]
    extra = server.argv() if server else []
    if extra:
        args += ["--", *extra]
    return args


def _layout_args(
    ws: Workspace, sizing: InferenceSizing | None, server: ServerConfig | None, gpus_per_node: int, nodes: int
) -> list[str]:
    """Parallelism, context and memory: as sized, or, for models the catalog cannot size, what the
    user pinned in inference_config.yaml, else every GPU of a node in tensor parallel and the
    nodes in pipeline parallel."""
    if sizing is not None:
        tp, pp, dp, nodes = sizing.tp, sizing.pp, sizing.dp, sizing.nodes
        context, fraction, dtype = sizing.context_length, sizing.mem_fraction_static, sizing.dtype
    else:
        ov = server.overrides if server else Overrides()
        tp, pp, dp = ov.tp or gpus_per_node, ov.pp or nodes, ov.dp or 1
        context, fraction, dtype = ov.context_length, ov.mem_fraction_static, None
    args = ["--tp-size", str(tp)]
    if pp > 1:
        args += ["--pp-size", str(pp)]
    if dp > 1:
        args += ["--dp-size", str(dp)]
    if nodes > 1:
        args += ["--nnodes", str(nodes), "--dist-init-addr", f"{leader_address(ws)}:{DIST_INIT_PORT}"]
    if context:
        args += ["--context-length", str(context)]
    if fraction:
        args += ["--mem-fraction-static", f"{fraction:g}"]
    if dtype:
        args += ["--dtype", dtype]
    return args


def _flag_set(server: ServerConfig | None, flag: str) -> bool:
    return bool(server) and any(f == flag for f, _ in server.flags)


def _adapter_parts(ws: Workspace, settings: RenderSettings) -> tuple[list[dict], list[dict], list[dict]]:
    """(init containers, volumes, volume mounts for the server) for inference.adapters."""
    inits, volumes, mounts = [], [], []
    image_adapters = [a for a in ws.inference.adapters if a.source and a.source.image]
    if image_adapters:
        volumes.append({"name": "adapters", "emptyDir": {}})
        mounts.append({"name": "adapters", "mountPath": ADAPTERS_DIR})
    for a in ws.inference.adapters:
        src = a.source
        if src is None or not src.name:
            continue
        if src.image:
            cmd = [
                "python",
                "-m",
                "runtime.adapters",
                "pull",
                "--image",
                src.image,
                "--dest",
                f"{ADAPTERS_DIR}/{src.name}",
                "--expect",
                "adapter",
            ]
            init_mounts = [{"name": "adapters", "mountPath": ADAPTERS_DIR}]
            for i, secret in enumerate(src.image_pull_secrets):
                vol = dns_name(f"pull-{src.name}-{i}")
                volumes.append(
                    {
                        "name": vol,
                        "secret": {
                            "secretName": secret,
                            "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                        },
                    }
                )
                path = f"/var/run/kaito/registry/{vol}"
                init_mounts.append({"name": vol, "mountPath": path, "readOnly": True})
                cmd += ["--docker-config", f"{path}/config.json"]
            inits.append(
                {
                    "name": dns_name(f"adapter-{src.name}"),
                    "image": settings.inference_image,
                    "command": cmd,
                    "volumeMounts": init_mounts,
                }
            )
        elif src.volume_source is not None:
            vol = dns_name(f"adapter-{src.name}")
            volumes.append({"name": vol, **src.volume_source})
            mounts.append({"name": vol, "mountPath": f"{ADAPTERS_DIR}/{src.name}", "readOnly": True})
    return inits, volumes, mounts


def render(
    ws: Workspace,
    *,
    model: Model | None,
    sizing: InferenceSizing | None,
    server: ServerConfig | None,
    settings: RenderSettings,
    provisioned: bool,
    gpus_per_node: int,
    nodes: int,
    config_in_cluster: bool,
) -> list[dict]:
    """Service, headless Service and StatefulSet (in apply order) for an inference workspace."""
    assert ws.inference is not None
    sel = selector_labels(ws)
    startup = sizing.startup_seconds if sizing else 30 * 60
    svc_type = (
        "LoadBalancer" if ws.annotations.get("kaito.sh/enablelb", "").lower() == "true" else "ClusterIP"
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ws, ws.name, settings),
        "spec": {
            "type": svc_type,
            "selector": {**sel, "statefulset.kubernetes.io/pod-name": f"{ws.name}-0"},
            "ports": [{"name": "http", "port": 80, "targetPort": DEFAULT_PORT, "protocol": "TCP"}],
            "publishNotReadyAddresses": True,
        },
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(ws, headless_name(ws), settings),
        "spec": {
            "clusterIP": "None",
            "selector": sel,
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": "dist-init", "port": DIST_INIT_PORT, "targetPort": DIST_INIT_PORT, "protocol": "TCP"}
            ],
        },
    }
    if ws.inference.template is not None:
        pod_spec = _template_pod(ws, provisioned)
    else:
        pod_spec = _preset_pod(
            ws, model, sizing, server, settings, provisioned, gpus_per_node, nodes, config_in_cluster, startup
        )
    template_labels = ownership_labels(ws)  # includes the selector labels
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(ws, ws.name, settings),
        "spec": {
            "replicas": nodes,
            "podManagementPolicy": "Parallel",
            "serviceName": headless_name(ws),
            "selector": {"matchLabels": sel},
            # no hashes in the pod template: pods restart only when what they run changes
            "template": {"metadata": {"labels": template_labels}, "spec": pod_spec},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
        },
    }
    if ws.inference.template is None:
        statefulset["metadata"]["annotations"]["kaito-gitops.io/startup-budget-seconds"] = str(startup)
    return [service, headless, statefulset]


def _one_pod_per_node(ws: Workspace) -> dict:
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": selector_labels(ws)},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }


def _preset_pod(
    ws: Workspace,
    model: Model | None,
    sizing: InferenceSizing | None,
    server: ServerConfig | None,
    settings: RenderSettings,
    provisioned: bool,
    gpus_per_node: int,
    nodes: int,
    config_in_cluster: bool,
    startup: int,
) -> dict:
    inits, volumes, mounts = _adapter_parts(ws, settings)
    volumes = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "weights", "emptyDir": {}},
        *volumes,
    ]
    mounts = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "weights", "mountPath": WEIGHTS_DIR},
        *mounts,
    ]
    if config_in_cluster:
        volumes.append({"name": "config", "configMap": {"name": ws.inference.config}})
        mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})

    def probe(failures: int) -> dict:
        return {
            "httpGet": {"path": "/health", "port": DEFAULT_PORT},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        }

    env = [
        {
            "name": "POD_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}},
        },
        {"name": "HF_HOME", "value": WEIGHTS_DIR},
        *hf_token_env(ws),
    ]
    gpus = str(gpus_per_node)
    container = {
        "name": ws.name,
        "image": settings.inference_image,
        "command": [
            "python",
            "-m",
            "runtime.inference",
            *runtime_args(ws, model, sizing, server, config_in_cluster, gpus_per_node, nodes),
        ],
        "ports": [
            {"name": "http", "containerPort": DEFAULT_PORT, "protocol": "TCP"},
            {"name": "dist-init", "containerPort": DIST_INIT_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "resources": {"requests": {GPU_RESOURCE: gpus}, "limits": {GPU_RESOURCE: gpus}},
        "startupProbe": probe(math.ceil(startup / 10)),
        "livenessProbe": probe(3),
        "readinessProbe": probe(1),
        "volumeMounts": mounts,
    }
    spec = {
        "containers": [container],
        "volumes": volumes,
        "tolerations": GPU_TOLERATIONS,
        "affinity": {**node_affinity(ws, provisioned), **_one_pod_per_node(ws)},
        "terminationGracePeriodSeconds": 60,
    }
    if inits:
        spec["initContainers"] = inits
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    return spec


def _template_pod(ws: Workspace, provisioned: bool) -> dict:
    """A user's pod template, as Kaito runs it: their containers, our scheduling."""
    template = ws.inference.template or {}
    spec = dict(template.get("spec") or {})
    spec["tolerations"] = [*(spec.get("tolerations") or []), *GPU_TOLERATIONS]
    spec["affinity"] = {**(spec.get("affinity") or {}), **node_affinity(ws, provisioned)}
    return spec
