"""Tuning objects: a training ConfigMap and a Job on one node.

Input URLs are fetched by an init container (`python -m runtime.data fetch`), image input is
pulled (`python -m runtime.adapters pull`, files under /data), a volume is mounted. The
trainer pushes an image output itself with the imagePushSecret, so there is no sidecar.
"""

from __future__ import annotations

import copy

from ruamel.yaml import YAML

from ..catalog import Model, Sku
from ..configs import TRAINING_KEY, TUNING_CONFIG_DIR, TUNING_DATA_DIR, TrainingConfig, output_dir_of
from ..sizing import TuningSizing
from ..workspace import Workspace
from .common import GPU_RESOURCE, GPU_TOLERATIONS, RenderSettings, hf_token_env, metadata, node_affinity

DATA_DIR = TUNING_DATA_DIR
CONFIG_DIR = TUNING_CONFIG_DIR
WEIGHTS_DIR = "/workspace/weights"
PUSH_SECRET_DIR = "/var/run/kaito/push"
BACKOFF_LIMIT = 2
TUNING_GROUP = 10001  # the tuning image's group (deploy/images/tuning)


def config_name(ws: Workspace) -> str:
    return f"{ws.name}-training-config"


def effective_config(training: TrainingConfig, sku: Sku | None) -> dict:
    """The merged training config, with the compute dtype the GPU supports (V100/T4: fp16)."""
    cfg = copy.deepcopy(training.config)
    if sku is not None and not sku.bf16:
        tc = cfg["training_config"]
        if tc.get("ModelConfig", {}).get("torch_dtype") == "bfloat16":
            tc["ModelConfig"]["torch_dtype"] = "float16"
        q = tc.get("QuantizationConfig", {})
        if q.get("bnb_4bit_compute_dtype") == "bfloat16":
            q["bnb_4bit_compute_dtype"] = "float16"
        ta = tc.setdefault("TrainingArguments", {})
        if not ta.get("bf16"):
            ta.setdefault("fp16", True)
    return cfg


def _yaml_text(data: dict) -> str:
    import io

    y = YAML(typ="safe")
    y.default_flow_style = False
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


def runtime_args(ws: Workspace, model: Model | None, output_dir: str) -> list[str]:
    t = ws.tuning
    assert t is not None
    name = model.huggingface if model else (t.preset.name if t.preset else "")
    args = [
        "--model",
        name,
        "--method",
        t.method or "qlora",
        "--config",
        f"{CONFIG_DIR}/{TRAINING_KEY}",
        "--data-dir",
        DATA_DIR,
        "--output-dir",
        output_dir,
        "--download-dir",
        WEIGHTS_DIR,
    ]
    if t.output and t.output.image:
        args += [
            "--push-image",
            t.output.image,
            "--docker-config",
            f"{PUSH_SECRET_DIR}/config.json",
            "--model-name",
            model.name if model else name,
        ]
    return args


def _input_parts(ws: Workspace, settings: RenderSettings) -> tuple[list[dict], list[dict]]:
    """(init containers, volumes) that put the training data at /mnt/data."""
    src = ws.tuning.input
    data_mount = {"name": "data", "mountPath": DATA_DIR}
    if src is None:
        return [], [{"name": "data", "emptyDir": {}}]
    if src.volume_source is not None:
        return [], [{"name": "data", **src.volume_source}]
    volumes = [{"name": "data", "emptyDir": {}}]
    if src.urls:
        cmd = ["python", "-m", "runtime.data", "fetch", "--dest", DATA_DIR, *src.urls]
        return [
            {
                "name": "data-fetch",
                "image": settings.tuning_image,
                "command": cmd,
                "volumeMounts": [data_mount],
            }
        ], volumes
    cmd = ["python", "-m", "runtime.adapters", "pull", "--image", src.image, "--dest", DATA_DIR]
    mounts = [data_mount]
    for i, secret in enumerate(src.image_pull_secrets):
        vol = f"data-pull-{i}"
        volumes.append(
            {
                "name": vol,
                "secret": {
                    "secretName": secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
        mounts.append({"name": vol, "mountPath": f"/var/run/kaito/registry/{vol}", "readOnly": True})
        cmd += ["--docker-config", f"/var/run/kaito/registry/{vol}/config.json"]
    return [
        {"name": "data-pull", "image": settings.tuning_image, "command": cmd, "volumeMounts": mounts}
    ], volumes


def render(
    ws: Workspace,
    model: Model | None,
    sku: Sku | None,
    sizing: TuningSizing | None,
    training: TrainingConfig,
    settings: RenderSettings,
    provisioned: bool,
) -> list[dict]:
    """ConfigMap then Job, in apply order."""
    t = ws.tuning
    assert t is not None
    cfg = effective_config(training, sku)
    output_dir = output_dir_of(cfg["training_config"].get("TrainingArguments", {}))
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ws, config_name(ws), settings),
        "data": {TRAINING_KEY: _yaml_text(cfg)},
    }
    inits, volumes = _input_parts(ws, settings)
    volumes += [
        {"name": "config", "configMap": {"name": config_name(ws)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "weights", "emptyDir": {}},
    ]
    if t.output and t.output.volume_source is not None:
        volumes.append({"name": "results", **t.output.volume_source})
    else:
        volumes.append({"name": "results", "emptyDir": {}})
    mounts = [
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "weights", "mountPath": WEIGHTS_DIR},
        {"name": "results", "mountPath": output_dir},
    ]
    if t.output and t.output.image and t.output.image_push_secret:
        volumes.append(
            {
                "name": "push-secret",
                "secret": {
                    "secretName": t.output.image_push_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
        mounts.append({"name": "push-secret", "mountPath": PUSH_SECRET_DIR, "readOnly": True})
    gpus = str(sizing.gpus if sizing else (sku.gpu_count if sku else 1))
    container = {
        "name": ws.name,
        "image": settings.tuning_image,
        "command": ["python", "-m", "runtime.tuning", *runtime_args(ws, model, output_dir)],
        "env": [
            {"name": "HF_HOME", "value": WEIGHTS_DIR},
            {"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"},
            {"name": "KAITO_PROGRESS_FILE", "value": f"{output_dir}/progress.json"},
            *hf_token_env(ws),
        ],
        "ports": [{"name": "progress", "containerPort": 5000, "protocol": "TCP"}],
        "resources": {"requests": {GPU_RESOURCE: gpus}, "limits": {GPU_RESOURCE: gpus}},
        "volumeMounts": mounts,
    }
    pod_spec = {
        "restartPolicy": "Never",
        # a non-root trainer can write its results to the user's volume (a PVC, ...)
        "securityContext": {"fsGroup": TUNING_GROUP},
        "containers": [container],
        "volumes": volumes,
        "tolerations": GPU_TOLERATIONS,
        "affinity": node_affinity(ws, provisioned),
    }
    if inits:
        pod_spec["initContainers"] = inits
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    md = metadata(ws, ws.name, settings)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": md,
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "completions": 1,
            "parallelism": 1,
            "template": {"metadata": {"labels": dict(md["labels"])}, "spec": pod_spec},
        },
    }
    return [configmap, job]
