"""One case per validation rule: the rule id, the line it points at, and the words of the message.

Each case is a whole file, written out, so the expected line can be checked by eye.
"""

from __future__ import annotations

import textwrap

import pytest

INFER = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: ws
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: ws
inference:
  preset:
    name: phi-4-mini-instruct
"""

TUNE = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: tune
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: tune
tuning:
  preset:
    name: phi-3-mini-128k-instruct
  method: qlora
  input:
    urls: ["https://example.com/data.parquet"]
  output:
    image: registry.example.com/adapters/tune:1
    imagePushSecret: push
"""


def test_the_base_cases_are_clean(validate):
    assert validate(INFER).findings == []
    # the push Secret is created in the cluster, as Secrets should be: validate can only say so
    [f] = validate(TUNE).findings
    assert f.rule == "object-reference-missing" and not f.is_error, f.text()
    assert f.field == "tuning.output.imagePushSecret" and "Secret default/push" in f.message


CASES = [
    # --- schema -------------------------------------------------------------------------
    (
        "schema-unknown-field",
        6,
        "unknown field 'instancetype'; did you mean 'instanceType'?",
        INFER.replace("instanceType:", "instancetype:"),
    ),
    ("schema-unknown-field", 1, "unknown field 'spec'", "spec: {}\n" + INFER),
    (
        "schema-type",
        12,
        "must be a string, not a whole number",
        INFER.replace("name: phi-4-mini-instruct", "name: 42"),
    ),
    (
        "schema-enum",
        1,
        "use one of: kaito.sh/v1alpha1, kaito.sh/v1beta1",
        INFER.replace("kaito.sh/v1beta1", "kaito.sh/v1"),
    ),
    (
        "schema-required",
        5,
        "missing required field 'labelSelector'",
        INFER.replace("  labelSelector:\n    matchLabels:\n      apps: ws\n", ""),
    ),
    (
        "schema-enum",
        13,
        "'sft' is not a tuning method; use lora or qlora",
        TUNE.replace("method: qlora", "method: sft"),
    ),
    (
        "schema-version",
        13,
        "only available in kaito.sh/v1beta1",
        INFER.replace("v1beta1", "v1alpha1") + "    presetOptions:\n      modelAccessSecret: hf\n",
    ),
    (
        "schema-type",
        15,
        'quote it: "0.5"',
        INFER + "  adapters:\n    - source: {name: a, image: reg.io/a:1}\n      strength: 0.5\n",
    ),
    # --- metadata -----------------------------------------------------------------------
    ("name-invalid", 4, "must be a DNS-1123 label", INFER.replace("name: ws", "name: My_Workspace")),
    ("name-too-long", 4, "at most 52 characters", INFER.replace("name: ws", "name: " + "a" * 60)),
    (
        "namespace-invalid",
        5,
        "metadata.namespace 'Team A'",
        INFER.replace("  name: ws\n", "  name: ws\n  namespace: Team A\n"),
    ),
    (
        "annotation-value",
        6,
        "kaito.sh/node-image-family must be one of ubuntu, azurelinux",
        INFER.replace(
            "  name: ws\n", "  name: ws\n  annotations:\n    kaito.sh/node-image-family: windows\n"
        ),
    ),
    (
        "annotation-runtime-ignored",
        6,
        "serves every preset with SGLang",
        INFER.replace("  name: ws\n", "  name: ws\n  annotations:\n    kaito.sh/runtime: vllm\n"),
    ),
    ("inference-xor-tuning", 4, "not neither", INFER.split("inference:")[0]),
    ("inference-xor-tuning", 13, "but not both", INFER + TUNE.split("\n", 9)[-1]),
    # --- resource -----------------------------------------------------------------------
    (
        "label-selector-empty",
        7,
        "at least one node label",
        INFER.replace("    matchLabels:\n      apps: ws\n", "    matchLabels: {}\n"),
    ),
    (
        "label-selector-reserved",
        7,
        "only uses labels kaito-gitops sets itself",
        INFER.replace("apps: ws", "kaito.sh/workspace: ws"),
    ),
    (
        "label-selector-expression",
        9,
        "only 'In' expressions with exactly one value",
        INFER.replace(
            "    matchLabels:\n      apps: ws\n",
            "    matchExpressions:\n      - {key: apps, operator: NotIn, values: [x]}\n",
        ),
    ),
    ("label-invalid", 9, "label value 'not ok!'", INFER.replace("apps: ws", "apps: not ok!")),
    (
        "instance-type-unknown",
        6,
        "unsupported instance type m5.large",
        INFER.replace("Standard_NC24ads_A100_v4", "m5.large"),
    ),
    (
        "instance-type-unknown",
        6,
        "did you mean Standard_NC24ads_A100_v4",
        INFER.replace("Standard_NC24ads_A100_v4", "Standard_NC24ads_A100_v5"),
    ),
    (
        "instance-type-retired",
        6,
        "retired by Azure",
        INFER.replace("Standard_NC24ads_A100_v4", "Standard_NC6s_v3"),
    ),
    (
        "partition-unsupported",
        10,
        "GPU partitions",
        INFER.replace("      apps: ws\n", "      apps: ws\n  partition: {mode: mig, profile: 1g.10gb}\n"),
    ),
    (
        "preferred-nodes-deprecated",
        10,
        "preferredNodes is deprecated",
        INFER.replace("      apps: ws\n", "      apps: ws\n  preferredNodes: [node-a]\n"),
    ),
    (
        "count-ignored",
        10,
        "sizing needs 1 node(s)",
        INFER.replace("      apps: ws\n", "      apps: ws\n  count: 3\n"),
    ),
    # --- presets ------------------------------------------------------------------------
    (
        "preset-unknown",
        12,
        "unknown preset 'phi-4-mini'; did you mean phi-4-mini-instruct",
        INFER.replace("name: phi-4-mini-instruct", "name: phi-4-mini"),
    ),
    (
        "preset-not-in-catalog",
        12,
        "served best effort",
        INFER.replace("name: phi-4-mini-instruct", "name: someorg/some-model"),
    ),
    (
        "preset-rejected",
        12,
        "phi-2 is deprecated and no longer served",
        INFER.replace("name: phi-4-mini-instruct", "name: phi-2"),
    ),
    (
        "preset-deprecated",
        12,
        "falcon-7b is deprecated",
        INFER.replace("name: phi-4-mini-instruct", "name: falcon-7b"),
    ),
    (
        "preset-gated-secret",
        11,
        "set presetOptions.modelAccessSecret",
        INFER.replace("name: phi-4-mini-instruct", "name: llama-3.1-8b-instruct"),
    ),
    (
        "preset-gated-secret",
        11,
        "only kaito.sh/v1beta1 has",
        INFER.replace("v1beta1", "v1alpha1").replace(
            "name: phi-4-mini-instruct", "name: llama-3.1-8b-instruct"
        ),
    ),
    (
        "preset-private-image",
        13,
        "private preset images are deprecated",
        INFER + "    presetOptions:\n      image: reg.io/phi:1\n",
    ),
    (
        "inference-preset-required",
        10,
        "needs a preset",
        INFER.replace("  preset:\n    name: phi-4-mini-instruct\n", "  config: x\n"),
    ),
    (
        "inference-preset-xor-template",
        13,
        "a preset or a template, not both",
        INFER + "  template:\n    spec: {containers: []}\n",
    ),
    # --- sizing -------------------------------------------------------------------------
    (
        "gpu-memory-insufficient",
        6,
        "deepseek-v3-0324 needs",
        INFER.replace("name: phi-4-mini-instruct", "name: deepseek-v3-0324").replace(
            "Standard_NC24ads_A100_v4", "Standard_NV36ads_A10_v5"
        ),
    ),
    (
        "gpu-unsupported",
        6,
        "need compute capability >= 8.0",
        INFER.replace("name: phi-4-mini-instruct", "name: gpt-oss-20b").replace(
            "Standard_NC24ads_A100_v4", "Standard_NC4as_T4_v3"
        ),
    ),
    (
        "gpu-unsupported",
        6,
        "NVIDIA CUDA only",
        INFER.replace("Standard_NC24ads_A100_v4", "Standard_NG32ads_V620_v1"),
    ),
    (
        "gpu-memory-insufficient",
        6,
        "LORA of phi-3-medium-128k-instruct needs about",
        TUNE.replace("phi-3-mini-128k-instruct", "phi-3-medium-128k-instruct")
        .replace("qlora", "lora")
        .replace("Standard_NC24ads_A100_v4", "Standard_NC6s_v3"),
    ),
    # --- adapters -----------------------------------------------------------------------
    (
        "adapters-too-many",
        13,
        "at most 10 adapters",
        INFER
        + "  adapters:\n"
        + "".join(f"    - source: {{name: a{i}, image: reg.io/a:{i}}}\n" for i in range(11)),
    ),
    (
        "adapter-name-invalid",
        14,
        "adapter name 'A_1'",
        INFER + "  adapters:\n    - source: {name: A_1, image: reg.io/a:1}\n",
    ),
    (
        "adapter-name-duplicate",
        15,
        "used twice",
        INFER
        + "  adapters:\n    - source: {name: a, image: reg.io/a:1}\n    - source: {name: a, image: reg.io/b:1}\n",
    ),
    ("adapter-name-required", 14, "needs a name", INFER + "  adapters:\n    - source: {image: reg.io/a:1}\n"),
    (
        "adapter-source",
        14,
        "not URLs",
        INFER + '  adapters:\n    - source: {name: a, urls: ["https://example.com/a"]}\n',
    ),
    (
        "adapter-strength-range",
        15,
        "between 0 and 1",
        INFER + '  adapters:\n    - source: {name: a, image: reg.io/a:1}\n      strength: "1.5"\n',
    ),
    (
        "adapter-strength-unsupported",
        15,
        "full strength; strength 0.5 is ignored",
        INFER + '  adapters:\n    - source: {name: a, image: reg.io/a:1}\n      strength: "0.5"\n',
    ),
    (
        "image-ref-invalid",
        14,
        "not a valid image reference",
        INFER + '  adapters:\n    - source: {name: a, image: "ACR_HERE/Adapter:1"}\n',
    ),
    # --- tuning -------------------------------------------------------------------------
    (
        "tuning-multinode",
        10,
        "tuning runs on one node",
        TUNE.replace("      apps: tune\n", "      apps: tune\n  count: 2\n"),
    ),
    ("tuning-method-required", 10, "needs method", TUNE.replace("  method: qlora\n", "")),
    (
        "tuning-preset-unsupported",
        12,
        "has no tuning support",
        TUNE.replace("phi-3-mini-128k-instruct", "llama-3.1-8b-instruct"),
    ),
    (
        "tuning-preset-required",
        10,
        "needs a preset",
        TUNE.replace("  preset:\n    name: phi-3-mini-128k-instruct\n", ""),
    ),
    (
        "tuning-input-required",
        10,
        "needs an input",
        TUNE.replace('  input:\n    urls: ["https://example.com/data.parquet"]\n', ""),
    ),
    (
        "tuning-input-exactly-one",
        14,
        "found urls and image",
        TUNE.replace("  input:\n", "  input:\n    image: reg.io/data:1\n"),
    ),
    (
        "url-forbidden",
        15,
        "only http and https",
        TUNE.replace("https://example.com/data.parquet", "file:///etc/passwd"),
    ),
    (
        "url-forbidden",
        15,
        "169.254.169.254 is a link-local address",
        TUNE.replace("https://example.com/data.parquet", "http://169.254.169.254/latest/meta-data"),
    ),
    (
        "url-forbidden",
        15,
        "localhost is this machine",
        TUNE.replace("https://example.com/data.parquet", "http://localhost:8080/x"),
    ),
    (
        "url-forbidden",
        15,
        "10.0.0.7 is a private address",
        TUNE.replace("https://example.com/data.parquet", "https://10.0.0.7/x"),
    ),
    (
        "url-forbidden",
        15,
        "metadata.google.internal is a cloud metadata service",
        TUNE.replace("https://example.com/data.parquet", "http://metadata.google.internal/x"),
    ),
    (
        "url-forbidden",
        15,
        "127.0.0.1 is a loopback address",
        TUNE.replace("https://example.com/data.parquet", "http://2130706433/x"),
    ),
    ("tuning-output-required", 10, "needs an output", TUNE.split("  output:")[0]),
    (
        "tuning-output-exactly-one",
        16,
        "found image and volumeSource",
        TUNE.replace("  output:\n", "  output:\n    volumeSource: {emptyDir: {}}\n"),
    ),
    (
        "output-push-secret-required",
        16,
        "needs imagePushSecret",
        TUNE.replace("    imagePushSecret: push\n", ""),
    ),
    (
        "hostpath-local-only",
        16,
        "only work with the local target",
        TUNE.replace(
            '    urls: ["https://example.com/data.parquet"]\n',
            "    volumeSource:\n      hostPath: {path: /data}\n",
        ),
    ),
    # --- names of referenced Secrets, ConfigMaps and PVCs --------------------------------
    (
        "reference-placeholder",
        18,
        "replace this placeholder with the name of a Secret in namespace default",
        TUNE.replace("imagePushSecret: push", "imagePushSecret: ACR_REGISTRY_SECRET_HERE"),
    ),
    (
        "reference-placeholder",
        14,
        "'<your-secret>' looks like a placeholder",
        INFER + "    presetOptions:\n      modelAccessSecret: <your-secret>\n",
    ),
    (
        "reference-placeholder",
        16,
        "replace this placeholder",
        INFER + "    presetOptions:\n      imagePullSecrets:\n        - ok\n        - ${PULL_SECRET}\n",
    ),
    (
        "reference-name-invalid",
        18,
        "Secret name 'Push_Secret' is not a name Kubernetes accepts",
        TUNE.replace("imagePushSecret: push", "imagePushSecret: Push_Secret"),
    ),
    (
        "reference-name-invalid",
        13,
        "ConfigMap name 'My Config'",
        INFER + "  config: My Config\n",
    ),
    (
        "reference-name-invalid",
        17,
        "PersistentVolumeClaim name 'data/set'",
        TUNE.replace(
            '    urls: ["https://example.com/data.parquet"]\n',
            "    volumeSource:\n      persistentVolumeClaim:\n        claimName: data/set\n",
        ),
    ),
    (
        "reference-name-invalid",
        17,
        "ConfigMap name '-adapters'",
        INFER
        + "  adapters:\n    - source:\n        name: a\n        volumeSource:\n"
        + "          projected: {sources: [{configMap: {name: -adapters}}]}\n",
    ),
    (
        "reference-name-invalid",
        17,
        "Secret name 'Pull'",
        INFER
        + "  adapters:\n    - source:\n        name: a\n        image: reg.io/a:1\n"
        + "        imagePullSecrets: [Pull]\n",
    ),
    (
        "config-map-not-in-repo",
        13,
        "must exist in namespace default in the cluster",
        INFER + "  config: my-config\n",
    ),
]


@pytest.mark.parametrize(
    ("rule", "line", "words", "text"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_rule(validate, rule, line, words, text):
    rev = validate(text)
    hits = [f for f in rev.findings if f.rule == rule]
    assert hits, f"expected {rule}; got " + "; ".join(f.text() for f in rev.findings)
    assert any(f.line == line and words in f.message for f in hits), [f.text() for f in hits]


CONFIG_WS = INFER + "  config: serving\n"


def configmap(body: str, name: str = "serving") -> str:
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  inference_config.yaml: |\n"
        + textwrap.indent(body, "    ")
        + "---\n"
    )


@pytest.mark.parametrize(
    ("rule", "line", "words", "body"),
    [
        (
            "inference-config-unknown-flag",
            8,
            "did you mean 'attention-backend'",
            "sglang:\n  attention-backnd: fa3\n",
        ),
        ("inference-config-value", 8, "did you mean 'qwen'", "sglang:\n  tool-call-parser: qwen9\n"),
        ("inference-config-reserved", 8, "--port is set by kaito-gitops", "sglang:\n  port: 8000\n"),
        (
            "inference-config-vllm-unsupported",
            9,
            "has no SGLang equivalent",
            "vllm:\n  max-model-len: 4096\n  foo: 1\n",
        ),
        (
            "inference-config-vllm-unsupported",
            8,
            "'phi4_mini_json' has no SGLang counterpart",
            "vllm:\n  tool-call-parser: phi4_mini_json\n",
        ),
        (
            "inference-config-vllm-noop",
            8,
            "SGLang parses tool calls",
            "vllm:\n  enable-auto-tool-choice: true\n",
        ),
        ("inference-config-ignored", 7, "LMCache", "kv_cache_cpu_memory_utilization: 0.5\n"),
        (
            "context-length-too-long",
            8,
            "above phi-4-mini-instruct's limit of 131,072",
            "vllm:\n  max-model-len: 200000\n",
        ),
        ("parallelism-invalid", 8, "tensor parallel 2 is not possible", "sglang:\n  tp-size: 2\n"),
        ("inference-config-unknown-key", 7, "unknown key 'vlm'", "vlm:\n  x: 1\n"),
    ],
)
def test_inference_config_rule(validate, rule, line, words, body):
    rev = validate({"serving.yaml": configmap(body) + CONFIG_WS})
    hits = [f for f in rev.findings if f.rule == rule]
    assert hits, "; ".join(f.text() for f in rev.findings)
    assert any(f.line == line and words in f.message and f.path == "serving.yaml" for f in hits), [
        f.text() for f in hits
    ]


def test_config_map_without_the_key(validate):
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: serving\ndata:\n  other.yaml: x\n---\n"
    rev = validate({"a.yaml": cm + CONFIG_WS})
    [f] = [f for f in rev.findings if f.rule == "config-map-key"]
    assert f.line == 7 + 13 and "has no key inference_config.yaml" in f.message


TUNING_WS = TUNE + "  config: train\n"


@pytest.mark.parametrize(
    ("rule", "line", "words", "body"),
    [
        ("tuning-config-section", 8, "did you mean 'LoraConfig'", "training_config:\n  LoraConfg: {r: 4}\n"),
        (
            "tuning-config-quantization",
            8,
            "needs load_in_4bit: true",
            "training_config:\n  QuantizationConfig: {load_in_4bit: false}\n",
        ),
        (
            "tuning-config-output-dir",
            9,
            "must be a folder under /mnt",
            "training_config:\n  TrainingArguments:\n    output_dir: /tmp/out\n",
        ),
        (
            "tuning-config-output-dir",
            9,
            "inside /mnt/data, where the pod mounts its training data",
            "training_config:\n  TrainingArguments:\n    output_dir: /mnt/data/out\n",
        ),
        (
            "tuning-config-output-dir",
            9,
            "inside /mnt/config",
            "training_config:\n  TrainingArguments:\n    output_dir: config\n",
        ),
        ("tuning-config-shape", 6, "one top-level key 'training_config'", "ModelConfig: {}\n"),
    ],
)
def test_training_config_rule(validate, rule, line, words, body):
    cm = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: train\ndata:\n  training_config.yaml: |\n"
        + textwrap.indent(body, "    ")
        + "---\n"
    )
    rev = validate({"train.yaml": cm + TUNING_WS})
    hits = [f for f in rev.findings if f.rule == rule]
    assert hits, "; ".join(f.text() for f in rev.findings)
    assert any(f.line == line and words in f.message for f in hits), [f.text() for f in hits]


def test_a_placeholder_kubernetes_would_accept_is_a_warning_and_real_names_pass(validate):
    rev = validate(TUNE.replace("imagePushSecret: push", "imagePushSecret: your-push-secret"))
    (hit,) = [f for f in rev.findings if f.rule == "reference-placeholder"]
    assert hit.severity.value == "warning" and hit.line == 18
    for name in ("acr-push", "acr.push-1", "a" * 253):
        rev = validate(TUNE.replace("imagePushSecret: push", f"imagePushSecret: {name}"))
        assert not [f for f in rev.findings if f.rule.startswith("reference-")], name


def test_a_huge_reference_name_is_shortened_in_the_message(validate):
    rev = validate(TUNE.replace("imagePushSecret: push", "imagePushSecret: " + "A" * 5000))
    (hit,) = [f for f in rev.findings if f.rule == "reference-name-invalid"]
    assert len(hit.message) < 400 and "..." in hit.message


def test_duplicate_workspace_names_both_files(validate):
    rev = validate({"a.yaml": INFER, "b/c.yaml": INFER})
    dups = [f for f in rev.findings if f.rule == "workspace-duplicate"]
    assert {f.path for f in dups} == {"a.yaml", "b/c.yaml"}
    assert any("also defined in b/c.yaml:4" in f.message for f in dups)
    # the same name in another namespace is a different workspace
    other = INFER.replace("  name: ws\n", "  name: ws\n  namespace: team-b\n")
    assert not [
        f for f in validate({"a.yaml": INFER, "b.yaml": other}).findings if f.rule == "workspace-duplicate"
    ]


def test_hostpath_is_fine_for_the_local_target_and_an_error_for_kubernetes(validate):
    text = TUNE.replace(
        '    urls: ["https://example.com/data.parquet"]\n', "    volumeSource:\n      hostPath: {path: /d}\n"
    )
    assert not [f for f in validate(text, target="local").findings if f.rule == "hostpath-local-only"]
    [f] = [f for f in validate(text, target="kubernetes").findings if f.rule == "hostpath-local-only"]
    assert f.is_error


def test_an_unknown_instance_type_is_only_a_hint_with_your_own_nodes(validate):
    """Kaito's examples for bring-your-own nodes write `instanceType: <your-vm-sku>`."""
    text = INFER.replace("Standard_NC24ads_A100_v4", "<your-vm-sku>")
    [f] = [f for f in validate(text).findings if f.rule.startswith("instance-type")]
    assert f.rule == "instance-type-unknown" and f.is_error and f.line == 6
    [f] = [f for f in validate(text, byo_nodes=True).findings if f.rule.startswith("instance-type")]
    assert f.rule == "instance-type-ignored" and not f.is_error and f.line == 6
    assert "sized from the GPU labels" in f.message
    # a hint too small for the model: the nodes may well be bigger, so it does not block the workspace
    small = INFER.replace("Standard_NC24ads_A100_v4", "Standard_NV36ads_A10_v5").replace(
        "phi-4-mini-instruct", "deepseek-r1-0528"
    )
    [f] = [f for f in validate(small).findings if f.rule == "gpu-memory-insufficient"]
    assert f.is_error
    [f] = [f for f in validate(small, byo_nodes=True).findings if f.rule == "gpu-memory-insufficient"]
    assert not f.is_error and "the matching nodes' GPU labels decide" in f.message


def test_a_secret_with_data_in_git_is_refused_and_nothing_else_is_affected(validate):
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {HF_TOKEN: x}\n---\n"
    rev = validate(secret + INFER)
    [f] = rev.findings
    assert f.rule == "object-secret-in-git" and f.is_error and (f.line, f.col) == (2, 7)
    assert "SealedSecret" in f.message and "ExternalSecret" in f.message and "SOPS" in f.message
    assert "x" not in f.message.split() and rev.valid_workspaces() and not rev.valid_objects()


def test_documents_that_are_not_objects_are_ignored_with_a_warning(validate):
    rev = validate("on: push\njobs: {}\n---\napiVersion: kaito.sh/v1beta1\nkind: RAGEngine\n---\n" + INFER)
    assert [(f.rule, f.is_error) for f in rev.findings] == [("document-ignored", False)] * 2
    assert rev.valid_workspaces() and not rev.objects


def test_a_bad_workspace_does_not_affect_another(validate):
    bad = INFER.replace("name: ws", "name: bad").replace("phi-4-mini-instruct", "nope")
    rev = validate({"good.yaml": INFER, "bad.yaml": bad, "broken.yaml": "a: [\n"})
    assert set(rev.valid_workspaces()) == {("default", "ws")}
    assert "broken.yaml" in rev.unreadable_files


def test_v1alpha1_defaults_the_instance_type_like_its_crd(validate):
    text = INFER.replace("v1beta1", "v1alpha1").replace("  instanceType: Standard_NC24ads_A100_v4\n", "")
    rev = validate(text)
    assert rev.workspaces[0].resource.instance_type == "Standard_NC24ads_A100_v4"
    assert not rev.has_errors
