"""Semantic rules: Kaito's create-time webhook rules, and what SGLang on Azure GPUs adds.

Each check is a small function of (workspace, context) that yields Findings. They run on
every Workspace document, even one with schema errors (the typed model reads wrong types
as absent), so one pass shows a user everything.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from runtime.urlpolicy import URLRefused, check_url

from ..catalog import Catalog, Model, Sku
from ..companions import at_path, reference_paths
from ..configs import (
    INFERENCE_KEY,
    TRAINING_KEY,
    ConfigIssue,
    merge_training_config,
    parse_inference_config,
    server_config_for,
)
from ..findings import Finding, Severity
from ..loading import Path
from ..refs import (
    dns1123_label_problem,
    dns1123_subdomain_problem,
    image_ref_problem,
    label_key_problem,
    label_value_problem,
    looks_like_placeholder,
)
from ..sizing import DoesNotFit, Overrides, size_inference, size_tuning
from ..workspace import ConfigMap, DataSource, Workspace

W = Severity.WARNING
E = Severity.ERROR

RESERVED_LABELS = ("kaito.sh/workspace", "kaito.sh/workspacenamespace")
MAX_ADAPTERS = 10
MAX_STATEFULSET_NAME = 52  # longer names overflow the controller-revision-hash pod label

ANNOTATION_VALUES = {
    "kaito.sh/node-image-family": ("ubuntu", "azurelinux"),
    "kaito.sh/performance-mode": ("balanced", "interactivity", "throughput"),
    "kaito.sh/use-local-weights": ("true", "false"),
}


@dataclass(frozen=True)
class Context:
    catalog: Catalog
    configmaps: dict[tuple[str, str], ConfigMap] = field(default_factory=dict)
    target: str | None = None  # kubernetes | local | render; None: unknown (plain `validate`)
    byo_nodes: bool = False  # nodes are the user's: instanceType only hints at sizing


def _f(ws: Workspace, path: Path, rule: str, msg: str, sev: Severity = E, at_key: bool = False) -> Finding:
    return ws.document.finding(path, rule, msg, sev, at_key)


def _has(ws: Workspace, *path) -> bool:
    d = ws.document.data
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return False
        d = d[p]
    return True


# --------------------------------------------------------------------------------------
# metadata and annotations
# --------------------------------------------------------------------------------------


def check_metadata(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    if _has(ws, "metadata", "name"):
        problem = dns1123_label_problem(ws.name, "metadata.name")
        if problem:
            yield _f(ws, ("metadata", "name"), "name-invalid", problem)
        elif ws.inference is not None and len(ws.name) > MAX_STATEFULSET_NAME:
            yield _f(
                ws,
                ("metadata", "name"),
                "name-too-long",
                f"inference workspace names may have at most {MAX_STATEFULSET_NAME} characters "
                f"(this one has {len(ws.name)}): the StatefulSet's pod revision label would overflow",
            )
    if _has(ws, "metadata", "namespace"):
        problem = dns1123_label_problem(ws.namespace, "metadata.namespace")
        if problem:
            yield _f(ws, ("metadata", "namespace"), "namespace-invalid", problem)
    for key, allowed in ANNOTATION_VALUES.items():
        value = ws.annotations.get(key)
        if value is not None and value not in allowed:
            yield _f(
                ws,
                ("metadata", "annotations", key),
                "annotation-value",
                f"{key} must be one of {', '.join(allowed)}, not {value!r}",
            )
    runtime = ws.annotations.get("kaito.sh/runtime")
    if runtime is not None:
        yield _f(
            ws,
            ("metadata", "annotations", "kaito.sh/runtime"),
            "annotation-runtime-ignored",
            f"kaito-gitops serves every preset with SGLang; kaito.sh/runtime={runtime!r} is ignored",
            W,
        )


def check_kind(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    if ws.inference is None and ws.tuning is None:
        at = ("metadata", "name") if _has(ws, "metadata", "name") else ()
        yield _f(ws, at, "inference-xor-tuning", "a workspace needs either inference or tuning, not neither")
    elif ws.inference is not None and ws.tuning is not None:
        yield _f(
            ws,
            ("tuning",),
            "inference-xor-tuning",
            "a workspace has either inference or tuning, but not both",
            at_key=True,
        )


# --------------------------------------------------------------------------------------
# resource
# --------------------------------------------------------------------------------------


def check_label_selector(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    r = ws.resource
    if not r.has_label_selector:
        return  # the schema reports the missing field
    sel = ("resource", "labelSelector")
    for key, value in r.match_labels.items():
        problem = label_key_problem(key) or label_value_problem(value)
        if problem:
            yield _f(ws, (*sel, "matchLabels", key), "label-invalid", problem, at_key=True)
    for i, expr in enumerate(r.match_expressions):
        op, values = expr.get("operator"), expr.get("values") or []
        if op != "In" or len(values) != 1:
            yield _f(
                ws,
                (*sel, "matchExpressions", i),
                "label-selector-expression",
                "only 'In' expressions with exactly one value can select nodes (Kaito turns the selector into node "
                "labels); write it under matchLabels",
            )
    keys = set(r.match_labels) | {e.get("key") for e in r.match_expressions}
    if not keys:
        yield _f(
            ws,
            sel,
            "label-selector-empty",
            "labelSelector must match at least one node label (matchLabels)",
            at_key=True,
        )
    elif keys <= set(RESERVED_LABELS):
        yield _f(
            ws,
            sel,
            "label-selector-reserved",
            f"labelSelector only uses labels kaito-gitops sets itself ({', '.join(RESERVED_LABELS)}); add one of your own",
            at_key=True,
        )


def _sku(ws: Workspace, ctx: Context) -> Sku | None:
    return ctx.catalog.sku(ws.resource.instance_type) if ws.resource.instance_type else None


def check_instance_type(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    r = ws.resource
    at = ("resource", "instanceType")
    if r.partition is not None:
        yield _f(
            ws,
            ("resource", "partition"),
            "partition-unsupported",
            "GPU partitions (MIG / accelerator) are not supported by kaito-gitops; remove resource.partition",
            at_key=True,
        )
    if r.preferred_nodes:
        yield _f(
            ws,
            ("resource", "preferredNodes"),
            "preferred-nodes-deprecated",
            "preferredNodes is deprecated and ignored; nodes are chosen by labelSelector",
            W,
            at_key=True,
        )
    if not r.instance_type:
        return  # bring your own nodes: checked against the cluster when it is reachable
    sku = ctx.catalog.sku(r.instance_type)
    if sku is None and ctx.byo_nodes:
        yield _f(
            ws,
            at,
            "instance-type-ignored",
            f"{r.instance_type} is not a GPU VM size kaito-gitops knows; with bring-your-own nodes it is not "
            "used: the workspace is sized from the GPU labels of the nodes matching labelSelector",
            W,
        )
        return
    if sku is None:
        near = ctx.catalog.suggest_sku(r.instance_type)
        hint = f"; did you mean {' or '.join(near)}?" if near else ""
        if r.instance_type.lower().startswith(("standard_n", "standard_d")):
            yield _f(
                ws,
                at,
                "instance-type-unknown",
                f"{r.instance_type} is not in the GPU catalog, so it cannot be sized or priced{hint}",
                W,
            )
        else:
            known = ", ".join(s.name for s in ctx.catalog.skus.values() if not s.retired)
            yield _f(
                ws,
                at,
                "instance-type-unknown",
                f"unsupported instance type {r.instance_type}{hint} Supported: {known}",
            )
        return
    if sku.retired:
        yield _f(
            ws,
            at,
            "instance-type-retired",
            f"{sku.name} ({sku.gpu}) is retired by Azure and no longer supported by Kaito; it may not be "
            "available in your region. Consider Standard_NV36ads_A10_v5 or Standard_NC24ads_A100_v4",
            W,
        )


# --------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------


def _preset_path(ws: Workspace) -> Path:
    return ("inference" if ws.inference is not None else "tuning", "preset")


def _model(ws: Workspace, ctx: Context) -> Model | None:
    return ctx.catalog.model(ws.preset.name) if ws.preset and ws.preset.name else None


def check_preset(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    if ws.inference is not None:
        inf = ws.inference
        if inf.preset is None and inf.template is None:
            yield _f(
                ws,
                ("inference",),
                "inference-preset-required",
                "inference needs a preset (or a pod template)",
                at_key=True,
            )
        elif inf.preset is not None and inf.template is not None:
            yield _f(
                ws,
                ("inference", "template"),
                "inference-preset-xor-template",
                "inference has a preset or a template, not both",
                at_key=True,
            )
    elif ws.tuning is not None and ws.tuning.preset is None:
        yield _f(
            ws,
            ("tuning",),
            "tuning-preset-required",
            "tuning needs a preset naming the base model",
            at_key=True,
        )
    preset = ws.preset
    if preset is None or not preset.name:
        return
    pp = _preset_path(ws)
    model = ctx.catalog.model(preset.name)
    if model is None:
        if "/" in preset.name:
            yield _f(
                ws,
                (*pp, "name"),
                "preset-not-in-catalog",
                f"{preset.name} is not in the preset catalog: it will be served best effort, without sizing. "
                "Add it to presets/models/ to get a sized plan",
                W,
            )
        else:
            near = ctx.catalog.suggest_model(preset.name)
            hint = (
                f"; did you mean {' or '.join(near)}?" if near else "; see `kaito-gitops plan --list-presets`"
            )
            yield _f(ws, (*pp, "name"), "preset-unknown", f"unknown preset '{preset.name}'{hint}")
        return
    if model.rejected:
        yield _f(
            ws,
            (*pp, "name"),
            "preset-rejected",
            f"model {model.name} is deprecated and no longer served. {model.deprecation_note}",
        )
    elif model.deprecated:
        yield _f(
            ws, (*pp, "name"), "preset-deprecated", f"{model.name} is deprecated. {model.deprecation_note}", W
        )
    if model.gated and not preset.model_access_secret:
        if ws.api_version == "kaito.sh/v1alpha1":
            msg = (
                f"{model.huggingface} is gated on Hugging Face; it needs presetOptions.modelAccessSecret "
                "(a Secret with key HF_TOKEN), which only kaito.sh/v1beta1 has"
            )
        else:
            msg = (
                f"{model.huggingface} is gated on Hugging Face: set presetOptions.modelAccessSecret to a Secret "
                "with key HF_TOKEN"
            )
        yield _f(ws, pp, "preset-gated-secret", msg, at_key=True)
    if preset.image or preset.access_mode == "private":
        yield _f(
            ws,
            (*pp, "presetOptions") if preset.image else (*pp, "accessMode"),
            "preset-private-image",
            "private preset images are deprecated: kaito-gitops downloads weights from Hugging Face when the pod "
            "starts, so presetOptions.image and accessMode are ignored",
            W,
            at_key=True,
        )


# --------------------------------------------------------------------------------------
# config maps
# --------------------------------------------------------------------------------------


def _map_issue(ws: Workspace, cm: ConfigMap, key: str, issue: ConfigIssue, inner_positions) -> Finding:
    """Place an issue found inside an embedded YAML string at its line in the ConfigMap's file."""
    data_path = ("data", key)
    line, col = cm.document.positions.value(data_path)
    text = cm.data.get(key, "")
    if inner_positions is not None and issue.path and "\n" in text:
        il, ic = inner_positions.key(issue.path)
        _kline, kcol = cm.document.positions.key(data_path)
        line, col = line + il, kcol + 1 + ic  # a block scalar starts on the line after `key: |`
    from ..loading import path_text

    fld = f"data.{key}" + (f" {path_text(issue.path)}" if issue.path else "")
    return Finding(cm.document.path, line, col, issue.severity, issue.rule, issue.message, fld)


def _configmap(
    ws: Workspace, ctx: Context, name: str, key: str, at: Path
) -> tuple[ConfigMap | None, list[Finding]]:
    if not _usable_name(name):
        return None, []  # check_references says what is wrong with the name
    cm = ctx.configmaps.get((ws.namespace, name))
    if cm is None:
        return None, [
            _f(
                ws,
                at,
                "config-map-not-in-repo",
                f"ConfigMap {name} is not in this repository; it must exist in namespace {ws.namespace} in the "
                f"cluster with key {key}",
                W,
            )
        ]
    if key not in cm.data:
        return cm, [_f(ws, at, "config-map-key", f"ConfigMap {name} ({cm.document.path}) has no key {key}")]
    return cm, []


def inference_overrides(ws: Workspace, ctx: Context) -> Overrides:
    server, _ = server_config_for(ws, ctx.configmaps)
    return server.overrides if server else Overrides()


def check_inference_config(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    if ws.inference is None or not ws.inference.config:
        return
    at = ("inference", "config")
    cm, problems = _configmap(ws, ctx, ws.inference.config, INFERENCE_KEY, at)
    yield from problems
    if cm is None or problems:
        return
    parsed = parse_inference_config(cm.data[INFERENCE_KEY])
    inner = parsed.document.positions if parsed.document else None
    for issue in parsed.issues:
        yield _map_issue(ws, cm, INFERENCE_KEY, issue, inner)
    model = _model(ws, ctx)
    ctx_len = parsed.overrides.context_length
    if model and ctx_len and ctx_len > model.architecture.max_context:
        issue = ConfigIssue(
            parsed.override_paths.get("context_length", ()),
            E,
            "context-length-too-long",
            f"context length {ctx_len:,} is above {model.name}'s limit of {model.architecture.max_context:,}",
        )
        yield _map_issue(ws, cm, INFERENCE_KEY, issue, inner)


def check_tuning_config(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    if ws.tuning is None or not ws.tuning.config:
        return
    at = ("tuning", "config")
    cm, problems = _configmap(ws, ctx, ws.tuning.config, TRAINING_KEY, at)
    yield from problems
    if cm is None or problems:
        return
    merged = merge_training_config(ws.tuning.method or "qlora", cm.data[TRAINING_KEY])
    inner = merged.document.positions if merged.document else None
    for issue in merged.issues:
        yield _map_issue(ws, cm, TRAINING_KEY, issue, inner)


# --------------------------------------------------------------------------------------
# names of the Secrets, ConfigMaps and PVCs a workspace refers to
# --------------------------------------------------------------------------------------


def _usable_name(value: str) -> bool:
    return dns1123_subdomain_problem(value) is None and not looks_like_placeholder(value)


def check_references(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    for path, kind in reference_paths(ws.document.data):
        value = at_path(ws.document.data, path)
        if not isinstance(value, str) or _usable_name(value):
            continue  # absent or the wrong type (the schema says so), or fine
        shown = value if len(value) <= 80 else value[:77] + "..."
        invalid = dns1123_subdomain_problem(value) is not None
        if looks_like_placeholder(value):
            # an error when Kubernetes would refuse the name, a warning when it would not
            yield _f(
                ws,
                path,
                "reference-placeholder",
                f"'{shown}' looks like a placeholder: replace this placeholder with the name of a {kind} "
                f"in namespace {ws.namespace}",
                E if invalid else W,
            )
        else:
            yield _f(
                ws,
                path,
                "reference-name-invalid",
                f"{kind} name '{shown}' is not a name Kubernetes accepts: a DNS-1123 subdomain of lower-case "
                "letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters",
            )


# --------------------------------------------------------------------------------------
# sizing
# --------------------------------------------------------------------------------------


def _override_problem(ws: Workspace, ctx: Context, result: DoesNotFit) -> Iterator[Finding]:
    """A sizing failure caused by a value in inference_config.yaml: point at that value."""
    assert ws.inference is not None and ws.inference.config
    if result.kind == "context":
        return  # check_inference_config reports it at the key
    cm = ctx.configmaps[(ws.namespace, ws.inference.config)]
    parsed = parse_inference_config(cm.data[INFERENCE_KEY])
    inner = parsed.document.positions if parsed.document else None
    issue = ConfigIssue(
        parsed.override_paths.get(result.override, ()), E, "parallelism-invalid", result.reason
    )
    yield _map_issue(ws, cm, INFERENCE_KEY, issue, inner)


def member_nodes(ws: Workspace, ctx: Context) -> int | None:
    """Nodes one replica of an inference workspace takes; None when it cannot be sized."""
    sku, model = _sku(ws, ctx), _model(ws, ctx)
    if sku is None or model is None or ws.inference is None or ws.inference.preset is None:
        return None
    result = size_inference(model, sku, inference_overrides(ws, ctx))
    return None if isinstance(result, DoesNotFit) else result.nodes


def check_fits(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    sku, model = _sku(ws, ctx), _model(ws, ctx)
    if sku is None or model is None:
        return
    if ws.inference is not None and ws.inference.preset is not None:
        result = size_inference(model, sku, inference_overrides(ws, ctx))
        if isinstance(result, DoesNotFit) and result.override:
            yield from _override_problem(ws, ctx, result)
        elif isinstance(result, DoesNotFit):
            yield _does_not_fit(ws, ctx, result)
        elif ws.resource.count is not None and ws.resource.count != result.nodes:
            deprecated = "resource.count is deprecated: " if ws.api_version == "kaito.sh/v1beta1" else ""
            yield _f(
                ws,
                ("resource", "count"),
                "count-ignored",
                f"{deprecated}sizing needs {result.nodes} node(s) of {sku.name} for {model.name} "
                f"({result.describe()}), so count {ws.resource.count} is ignored",
                W,
            )
    elif ws.tuning is not None and ws.tuning.method in ("lora", "qlora") and model.tuning.supported:
        result = size_tuning(model, sku, ws.tuning.method)
        if isinstance(result, DoesNotFit):
            yield _does_not_fit(ws, ctx, result)


def _does_not_fit(ws: Workspace, ctx: Context, result: DoesNotFit) -> Finding:
    """An error, unless the user said the size is not the last word: Kaito's bypass annotation
    (memory only), or bring-your-own nodes, where instanceType is a hint and the nodes decide."""
    rule = "gpu-unsupported" if result.kind == "hardware" else "gpu-memory-insufficient"
    if ctx.byo_nodes:
        note = " (bring-your-own nodes: only a warning; the matching nodes' GPU labels decide)"
    elif "kaito.sh/bypass-resource-checks" in ws.annotations and rule == "gpu-memory-insufficient":
        note = " (kaito.sh/bypass-resource-checks is set, so this is only a warning)"
    else:
        return _f(ws, ("resource", "instanceType"), rule, result.reason, E)
    return _f(ws, ("resource", "instanceType"), rule, result.reason + note, W)


# --------------------------------------------------------------------------------------
# adapters
# --------------------------------------------------------------------------------------


def _hostpath(ws: Workspace, ctx: Context, source: dict | None, at: Path) -> Iterator[Finding]:
    if not isinstance(source, dict) or "hostPath" not in source:
        return
    if ctx.target == "local":
        return
    sev = W if ctx.target is None else E
    yield _f(
        ws,
        (*at, "hostPath"),
        "hostpath-local-only",
        "hostPath volumes only work with the local target (`run --target local`); in a cluster use a "
        "persistentVolumeClaim or an image",
        sev,
        at_key=True,
    )


def check_adapters(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    if ws.inference is None or not ws.inference.adapters:
        return
    adapters = ws.inference.adapters
    if len(adapters) > MAX_ADAPTERS:
        yield _f(
            ws,
            ("inference", "adapters"),
            "adapters-too-many",
            f"at most {MAX_ADAPTERS} adapters are allowed; this workspace has {len(adapters)}",
            at_key=True,
        )
    if ws.inference.preset is None:
        yield _f(
            ws, ("inference", "adapters"), "adapters-need-preset", "adapters need a preset model", at_key=True
        )
    seen: dict[str, int] = {}
    for i, a in enumerate(adapters):
        base = ("inference", "adapters", i)
        src = a.source
        if src is None:
            continue  # schema: source is required
        if not src.name:
            yield _f(
                ws, (*base, "source"), "adapter-name-required", "adapter source needs a name", at_key=True
            )
        else:
            problem = dns1123_label_problem(src.name, "adapter name")
            if problem:
                yield _f(
                    ws,
                    (*base, "source", "name"),
                    "adapter-name-invalid",
                    problem + " (it becomes a container name and a folder under /mnt/adapter)",
                )
            if src.name in seen:
                yield _f(
                    ws,
                    (*base, "source", "name"),
                    "adapter-name-duplicate",
                    f"adapter name '{src.name}' is used twice (first as adapter {seen[src.name]})",
                )
            seen.setdefault(src.name, i)
        kinds = src.kinds()
        if "urls" in kinds:
            yield _f(
                ws,
                (*base, "source", "urls"),
                "adapter-source",
                "adapters come from an image or a volume, not URLs",
                at_key=True,
            )
        elif len(kinds) != 1:
            yield _f(
                ws,
                (*base, "source"),
                "adapter-source",
                "an adapter source needs exactly one of image or volumeSource",
                at_key=True,
            )
        if src.image:
            problem = image_ref_problem(src.image)
            if problem:
                yield _f(ws, (*base, "source", "image"), "image-ref-invalid", problem)
        yield from _hostpath(ws, ctx, src.volume_source, (*base, "source", "volumeSource"))
        if a.strength is not None and isinstance(a.strength, str):
            try:
                value = float(a.strength)
            except ValueError:
                yield _f(
                    ws,
                    (*base, "strength"),
                    "adapter-strength-range",
                    f'strength {a.strength!r} is not a number; write a value from 0 to 1 such as "0.5"',
                )
                continue
            if not 0.0 <= value <= 1.0:
                yield _f(
                    ws,
                    (*base, "strength"),
                    "adapter-strength-range",
                    f"strength {value:g} must be between 0 and 1",
                )
            elif value != 1.0:
                yield _f(
                    ws,
                    (*base, "strength"),
                    "adapter-strength-unsupported",
                    f"SGLang applies LoRA adapters at full strength; strength {value:g} is ignored "
                    '(clients pick an adapter per request with "model": "<adapter name>")',
                    W,
                )


# --------------------------------------------------------------------------------------
# tuning
# --------------------------------------------------------------------------------------


def _check_urls(ws: Workspace, src: DataSource, at: Path) -> Iterator[Finding]:
    for i, url in enumerate(src.urls):
        try:
            check_url(url)
        except URLRefused as e:
            yield _f(ws, (*at, "urls", i), "url-forbidden", f"{url!r}: {e}")


def check_tuning(ws: Workspace, ctx: Context) -> Iterator[Finding]:
    t = ws.tuning
    if t is None:
        return
    if ws.resource.count is not None and ws.resource.count > 1:
        yield _f(
            ws,
            ("resource", "count"),
            "tuning-multinode",
            "tuning runs on one node; set resource.count to 1 (several GPUs on that node are used)",
        )
    if t.method is None and not _has(ws, "tuning", "method"):
        yield _f(ws, ("tuning",), "tuning-method-required", "tuning needs method: lora or qlora", at_key=True)
    model = _model(ws, ctx)
    if model is not None and not model.tuning.supported:
        able = sorted(m.name for m in ctx.catalog.models.values() if m.tuning.supported and not m.deprecated)
        yield _f(
            ws,
            ("tuning", "preset", "name"),
            "tuning-preset-unsupported",
            f"{model.name} has no tuning support; presets that do: {', '.join(able)}",
        )
    # input
    if t.input is None:
        if not _has(ws, "tuning", "input"):
            yield _f(
                ws,
                ("tuning",),
                "tuning-input-required",
                "tuning needs an input: urls, image or volumeSource",
                at_key=True,
            )
    else:
        kinds = t.input.kinds()
        if len(kinds) != 1:
            what = "none" if not kinds else " and ".join(kinds)
            yield _f(
                ws,
                ("tuning", "input"),
                "tuning-input-exactly-one",
                f"tuning.input needs exactly one of urls, image or volumeSource (found {what})",
                at_key=True,
            )
        yield from _check_urls(ws, t.input, ("tuning", "input"))
        if t.input.image:
            problem = image_ref_problem(t.input.image)
            if problem:
                yield _f(ws, ("tuning", "input", "image"), "image-ref-invalid", problem)
        yield from _hostpath(ws, ctx, t.input.volume_source, ("tuning", "input", "volumeSource"))
    # output
    if t.output is None:
        if not _has(ws, "tuning", "output"):
            yield _f(
                ws,
                ("tuning",),
                "tuning-output-required",
                "tuning needs an output: image or volumeSource",
                at_key=True,
            )
        return
    kinds = [
        k
        for k, v in (("image", t.output.image), ("volumeSource", t.output.volume_source))
        if v is not None and v != ""
    ]
    if len(kinds) != 1:
        yield _f(
            ws,
            ("tuning", "output"),
            "tuning-output-exactly-one",
            f"tuning.output needs exactly one of image or volumeSource (found {' and '.join(kinds) or 'none'})",
            at_key=True,
        )
    if t.output.image:
        problem = image_ref_problem(t.output.image)
        if problem:
            yield _f(ws, ("tuning", "output", "image"), "image-ref-invalid", problem)
        if not t.output.image_push_secret:
            yield _f(
                ws,
                ("tuning", "output"),
                "output-push-secret-required",
                "an image output needs imagePushSecret: a dockerconfigjson Secret that can push to the registry",
                at_key=True,
            )
    yield from _hostpath(ws, ctx, t.output.volume_source, ("tuning", "output", "volumeSource"))


WORKSPACE_RULES = (
    check_metadata,
    check_kind,
    check_label_selector,
    check_instance_type,
    check_preset,
    check_inference_config,
    check_tuning_config,
    check_fits,
    check_adapters,
    check_tuning,
    check_references,
)


def check_workspace(ws: Workspace, ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    for rule in WORKSPACE_RULES:
        out.extend(rule(ws, ctx))
    return out
