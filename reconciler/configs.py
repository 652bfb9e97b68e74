"""The two ConfigMaps a workspace may name: inference_config.yaml and training_config.yaml.

Pure functions: parse the embedded YAML, translate Kaito's vLLM options to SGLang flags,
merge tuning options over the method's defaults, and report problems as `ConfigIssue`s
(a path inside the embedded document, so the validator can point at the right line).
"""

from __future__ import annotations

import copy
import difflib
import functools
import posixpath
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ruamel.yaml import YAML

from .findings import Severity
from .loading import Document, load_text
from .sizing import Overrides
from .workspace import ConfigMap, Workspace

INFERENCE_KEY = "inference_config.yaml"
TRAINING_KEY = "training_config.yaml"


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: tuple  # inside the embedded document
    severity: Severity
    rule: str
    message: str


# --------------------------------------------------------------------------------------
# SGLang flags (data generated from SGLang's own parser; see presets/sglang-flags.yaml)
# --------------------------------------------------------------------------------------


@functools.cache
def sglang_flags() -> dict[str, dict]:
    text = (resources.files("reconciler") / "_data" / "presets" / "sglang-flags.yaml").read_text(
        encoding="utf-8"
    )
    return YAML(typ="safe").load(text)["flags"]


# Flags kaito-gitops sets from the plan; a user setting them would break multi-node wiring.
RESERVED_FLAGS = {
    "model-path": "the model comes from the workspace preset",
    "host": "the server listens on 0.0.0.0 inside the pod",
    "port": "the pod serves on port 5000",
    "nnodes": "the node count comes from sizing",
    "node-rank": "each pod's rank comes from its StatefulSet index",
    "dist-init-addr": "pods find rank 0 through the headless Service",
    "lora-paths": "adapters come from inference.adapters",
    "enable-lora": "LoRA is enabled when inference.adapters is set",
    "api-key": "keep keys out of ConfigMaps: mount a Secret file and pass --api-key-file to runtime.inference",
}

# vLLM option -> SGLang flag. Values pass through unless a value map below says otherwise.
VLLM_TO_SGLANG = {
    "max-model-len": "context-length",
    "gpu-memory-utilization": "mem-fraction-static",
    "tensor-parallel-size": "tp-size",
    "pipeline-parallel-size": "pp-size",
    "data-parallel-size": "dp-size",
    "tool-call-parser": "tool-call-parser",
    "reasoning-parser": "reasoning-parser",
    "chat-template": "chat-template",
    "dtype": "dtype",
    "max-num-seqs": "max-running-requests",
    "max-num-batched-tokens": "chunked-prefill-size",
    "trust-remote-code": "trust-remote-code",
    "kv-cache-dtype": "kv-cache-dtype",
    "quantization": "quantization",
    "served-model-name": "served-model-name",
    "seed": "random-seed",
    "cpu-offload-gb": "cpu-offload-gb",
    "enforce-eager": "disable-cuda-graph",
    "max-lora-rank": "max-lora-rank",
    "max-loras": "max-loras-per-batch",
    "revision": "revision",
    "tokenizer": "tokenizer-path",
    "tokenizer-mode": "tokenizer-mode",
    "load-format": "load-format",
}

# vLLM options that SGLang does by default or has no use for: accepted, with a note.
VLLM_NOOP = {
    "enable-auto-tool-choice": "SGLang parses tool calls whenever --tool-call-parser is set",
    "enable-prefix-caching": "SGLang's RadixAttention always reuses prefixes",
    "enable-chunked-prefill": "SGLang chunks prefill by default",
    "disable-log-requests": "SGLang does not log request bodies by default",
    "disable-log-stats": "not needed with SGLang",
    "swap-space": "SGLang has no CPU swap space for KV blocks; the option is ignored",
    "distributed-executor-backend": "SGLang wires multi-node itself (no Ray)",
    "enable-lora": "LoRA is enabled when inference.adapters is set",
    # vLLM performance knobs with no SGLang counterpart; dropping them changes no behaviour.
    "max-seq-len-to-capture": "a vLLM CUDA-graph knob; SGLang sizes its CUDA graphs itself (--cuda-graph-max-bs)",
    "num-scheduler-steps": "a vLLM scheduler knob; SGLang's scheduler has no equivalent",
    "block-size": "a vLLM paged-attention knob; SGLang's radix cache uses --page-size",
    "use-v2-block-manager": "a vLLM-internal switch",
    "max-num-partial-prefills": "a vLLM scheduler knob",
    "compilation-config": "vLLM's torch.compile settings do not apply to SGLang",
    "kv-events-config": "vLLM KV-event publishing is not used with SGLang",
}

VLLM_TOOL_PARSERS = {
    "llama3_json": "llama3",
    "llama4_json": "pythonic",
    "llama4_pythonic": "pythonic",
    "hermes": "hermes",
    "mistral": "mistral",
    "deepseek_v3": "deepseekv3",
    "deepseek_v31": "deepseekv31",
    "pythonic": "pythonic",
    "openai": "gpt-oss",
    "qwen3_coder": "qwen3_coder",
    "qwen3_xml": "qwen3_coder",
    "glm45": "glm45",
    "glm47": "glm47",
    "kimi_k2": "kimi_k2",
    "minimax_m2": "minimax-m2",
    "step3": "step3",
    "gemma4": "gemma4",
}
VLLM_REASONING_PARSERS = {
    "deepseek_r1": "deepseek-r1",
    "deepseek_v3": "deepseek-v3",
    "qwen3": "qwen3",
    "openai_gptoss": "gpt-oss",
    "glm45": "glm45",
    "mistral": "mistral",
    "kimi_k2": "kimi_k2",
    "minimax_m2": "minimax",
    "minimax_m2_append_think": "minimax-append-think",
    "nemotron_v3": "nemotron_3",
    "step3": "step3",
    "granite": "granite_thinking_parser",
}
VLLM_KV_DTYPES = {"auto": "auto", "fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2"}

# SGLang flags (and their vLLM spellings) that size the deployment: the planner lays them out
INTEGER_OVERRIDES = {
    "context-length": "context_length",
    "tp-size": "tp",
    "tensor-parallel-size": "tp",
    "pp-size": "pp",
    "pipeline-parallel-size": "pp",
    "dp-size": "dp",
    "data-parallel-size": "dp",
}

KAITO_TOP_LEVEL_IGNORED = {
    "kv_cache_cpu_memory_utilization": "Kaito's LMCache CPU offload is vLLM-only; ignored with SGLang",
    "max_probe_steps": "Kaito's vLLM memory probing is not used with SGLang; ignored",
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What inference_config.yaml asks of SGLang."""

    overrides: Overrides = field(default_factory=Overrides)
    flags: tuple[tuple[str, Any], ...] = ()  # (flag, value); value None for a bare flag
    issues: tuple[ConfigIssue, ...] = ()
    document: Document | None = field(default=None, compare=False)
    override_paths: dict = field(
        default_factory=dict, compare=False
    )  # e.g. {"context_length": ("vllm", "max-model-len")}

    def argv(self) -> list[str]:
        """The SGLang flags, as command-line arguments (the overrides are laid out by the caller)."""
        out: list[str] = []
        for flag, value in self.flags:
            out.append(f"--{flag}")
            if isinstance(value, list):
                out += value
            elif value is not None:
                out.append(str(value))
        return out

    def override_argv(self) -> list[str]:
        """The pinned overrides as SGLang arguments, for a config the planner never saw."""
        ov = self.overrides
        pairs = (
            ("context-length", ov.context_length),
            ("mem-fraction-static", ov.mem_fraction_static),
            ("tp-size", ov.tp),
            ("pp-size", ov.pp),
            ("dp-size", ov.dp),
        )
        out: list[str] = []
        for flag, value in pairs:
            if value is not None:
                out += [f"--{flag}", f"{value:g}"]
        return out


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    return None


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _flag_value(flag: str, value: Any, path: tuple, issues: list[ConfigIssue]) -> tuple[bool, Any]:
    """Check a value against SGLang's parser facts. Returns (include?, value)."""
    spec = sglang_flags().get(flag)
    if spec is None:
        near = difflib.get_close_matches(flag, list(sglang_flags()), n=1, cutoff=0.75)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        issues.append(
            ConfigIssue(
                path, Severity.ERROR, "inference-config-unknown-flag", f"SGLang has no option --{flag}{hint}"
            )
        )
        return False, None
    kind = spec["kind"]
    if kind == "flag":
        if not isinstance(value, bool):
            issues.append(
                ConfigIssue(
                    path,
                    Severity.ERROR,
                    "inference-config-value",
                    f"--{flag} is an on/off switch; write true or false",
                )
            )
            return False, None
        return value, None
    if value is None or isinstance(value, dict):
        issues.append(ConfigIssue(path, Severity.ERROR, "inference-config-value", f"--{flag} needs a value"))
        return False, None
    if kind == "list":
        values = value if isinstance(value, list) else [value]
        return True, [str(v) for v in values]
    if isinstance(value, list):
        issues.append(
            ConfigIssue(
                path, Severity.ERROR, "inference-config-value", f"--{flag} takes one value, not a list"
            )
        )
        return False, None
    text = str(value).lower() if isinstance(value, bool) else str(value)
    choices = spec.get("choices")
    if choices and text not in choices:
        near = difflib.get_close_matches(text, choices, n=1, cutoff=0.6)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        issues.append(
            ConfigIssue(
                path,
                Severity.ERROR,
                "inference-config-value",
                f"--{flag} must be one of {', '.join(choices[:12])}{' ...' if len(choices) > 12 else ''}{hint}",
            )
        )
        return False, None
    return True, text


def server_config_for(
    ws: Workspace, configmaps: dict[tuple[str, str], ConfigMap]
) -> tuple[ServerConfig | None, bool]:
    """(the workspace's translated inference config, whether its ConfigMap lives only in the cluster)."""
    if ws.inference is None or not ws.inference.config:
        return None, False
    cm = configmaps.get((ws.namespace, ws.inference.config))
    if cm is None or INFERENCE_KEY not in cm.data:
        return None, True
    return parse_inference_config(cm.data[INFERENCE_KEY]), False


# Validation (several rules) and planning all read the same config text on every revision;
# the result is immutable, so parse each text once.
@functools.lru_cache(maxsize=4096)
def parse_inference_config(text: str, source: str = INFERENCE_KEY) -> ServerConfig:
    """Read inference_config.yaml (Kaito's `vllm:` section and our `sglang:` section)."""
    loaded = load_text(source, text.encode("utf-8"))
    issues: list[ConfigIssue] = [ConfigIssue((), f.severity, f.rule, f.message) for f in loaded.findings]
    if not loaded.documents:
        return ServerConfig(issues=tuple(issues))
    doc = loaded.documents[0]
    data = doc.data
    if not isinstance(data, dict):
        issues.append(
            ConfigIssue(
                (), Severity.ERROR, "inference-config-shape", "inference_config.yaml must be a mapping"
            )
        )
        return ServerConfig(issues=tuple(issues), document=doc)

    flags: dict[str, Any] = {}
    for key, value in data.items():
        if key in KAITO_TOP_LEVEL_IGNORED:
            issues.append(
                ConfigIssue(
                    (key,), Severity.WARNING, "inference-config-ignored", KAITO_TOP_LEVEL_IGNORED[key]
                )
            )
        elif key not in ("vllm", "sglang"):
            issues.append(
                ConfigIssue(
                    (key,),
                    Severity.ERROR,
                    "inference-config-unknown-key",
                    f"unknown key '{key}'; expected 'sglang:' (SGLang flags) or 'vllm:' (Kaito's vLLM flags, translated)",
                )
            )
        elif value is not None and not isinstance(value, dict):
            issues.append(
                ConfigIssue(
                    (key,),
                    Severity.ERROR,
                    "inference-config-shape",
                    f"'{key}' must be a mapping of flag: value",
                )
            )

    vllm = data.get("vllm") if isinstance(data.get("vllm"), dict) else {}
    for key, value in vllm.items():
        path = ("vllm", key)
        opt = str(key).lstrip("-")
        if opt in VLLM_NOOP:
            issues.append(
                ConfigIssue(
                    path, Severity.WARNING, "inference-config-vllm-noop", f"vLLM --{opt}: {VLLM_NOOP[opt]}"
                )
            )
            continue
        target = VLLM_TO_SGLANG.get(opt)
        if target is None:
            issues.append(
                ConfigIssue(
                    path,
                    Severity.ERROR,
                    "inference-config-vllm-unsupported",
                    f"vLLM option --{opt} has no SGLang equivalent; remove it, or put an SGLang flag under 'sglang:'",
                )
            )
            continue
        if opt == "tool-call-parser":
            mapped = VLLM_TOOL_PARSERS.get(str(value))
            if mapped is None:
                issues.append(
                    ConfigIssue(
                        path,
                        Severity.ERROR,
                        "inference-config-vllm-unsupported",
                        f"vLLM tool-call parser '{value}' has no SGLang counterpart; set sglang: {{tool-call-parser: ...}}",
                    )
                )
                continue
            value = mapped
        elif opt == "reasoning-parser":
            mapped = VLLM_REASONING_PARSERS.get(str(value))
            if mapped is None:
                issues.append(
                    ConfigIssue(
                        path,
                        Severity.ERROR,
                        "inference-config-vllm-unsupported",
                        f"vLLM reasoning parser '{value}' has no SGLang counterpart; set sglang: {{reasoning-parser: ...}}",
                    )
                )
                continue
            value = mapped
        elif opt == "kv-cache-dtype":
            value = VLLM_KV_DTYPES.get(str(value), value)
        elif opt == "gpu-memory-utilization":
            f = _as_float(value)
            if f is not None:
                issues.append(
                    ConfigIssue(
                        path,
                        Severity.WARNING,
                        "inference-config-vllm-translated",
                        f"vLLM gpu-memory-utilization {f:g} becomes SGLang --mem-fraction-static {f:g} "
                        "(SGLang's share covers weights and KV cache only)",
                    )
                )
        flags[target] = (value, path)

    sglang = data.get("sglang") if isinstance(data.get("sglang"), dict) else {}
    for key, value in sglang.items():
        flags[str(key).lstrip("-")] = (value, ("sglang", key))  # sglang: wins over vllm:

    out: list[tuple[str, Any]] = []
    overrides: dict[str, Any] = {}
    paths: dict[str, tuple] = {}  # where each override was set, to point findings at it
    for flag, (value, path) in flags.items():
        if flag in RESERVED_FLAGS:
            issues.append(
                ConfigIssue(
                    path,
                    Severity.ERROR,
                    "inference-config-reserved",
                    f"--{flag} is set by kaito-gitops: {RESERVED_FLAGS[flag]}",
                )
            )
            continue
        name = INTEGER_OVERRIDES.get(flag)
        if name is not None:
            n = _as_int(value)
            if n is None or n < 1:
                issues.append(
                    ConfigIssue(
                        path, Severity.ERROR, "inference-config-value", f"--{flag} must be a positive integer"
                    )
                )
                continue
            overrides[name] = n
            paths[name] = path
            continue
        if flag == "mem-fraction-static":
            f = _as_float(value)
            if f is None or not 0.3 <= f <= 0.95:
                issues.append(
                    ConfigIssue(
                        path,
                        Severity.ERROR,
                        "inference-config-value",
                        "--mem-fraction-static must be a number between 0.3 and 0.95",
                    )
                )
                continue
            overrides["mem_fraction_static"] = f
            paths["mem_fraction_static"] = path
            continue
        include, v = _flag_value(flag, value, path, issues)
        if include:
            out.append((flag, v))
    return ServerConfig(
        overrides=Overrides(**overrides),
        flags=tuple(out),
        issues=tuple(issues),
        document=doc,
        override_paths=paths,
    )


# --------------------------------------------------------------------------------------
# Tuning: training_config.yaml
# --------------------------------------------------------------------------------------

SECTIONS = (
    "ModelConfig",
    "QuantizationConfig",
    "LoraConfig",
    "TrainingArguments",
    "DatasetConfig",
    "DataCollator",
)

_COMMON_DEFAULTS: dict[str, dict] = {
    "ModelConfig": {"torch_dtype": "bfloat16", "local_files_only": True, "device_map": "auto"},
    "LoraConfig": {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0},
    "TrainingArguments": {
        "output_dir": "/mnt/results",
        "ddp_find_unused_parameters": False,
        "save_strategy": "no",
        "per_device_train_batch_size": 1,
    },
    "DataCollator": {"mlm": True},
    "DatasetConfig": {"shuffle_dataset": True, "train_test_split": 1},
}


def default_training_config(method: str) -> dict:
    """Kaito's qlora-params-template / lora-params-template, as one dict."""
    cfg = copy.deepcopy(_COMMON_DEFAULTS)
    if method == "qlora":
        cfg["QuantizationConfig"] = {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": "bfloat16",
            "bnb_4bit_use_double_quant": True,
        }
    else:
        cfg["QuantizationConfig"] = {"load_in_4bit": False}
    return {"training_config": {s: cfg[s] for s in SECTIONS if s in cfg}}


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    config: dict  # {"training_config": {...}} merged over the defaults
    issues: tuple[ConfigIssue, ...] = ()
    document: Document | None = field(default=None, compare=False)

    @property
    def output_dir(self) -> str:
        return output_dir_of(self.config["training_config"].get("TrainingArguments", {}))


# folders the tuning pod mounts under /mnt itself: results cannot go there
TUNING_DATA_DIR, TUNING_CONFIG_DIR = "/mnt/data", "/mnt/config"
RESERVED_MOUNTS = (TUNING_DATA_DIR, TUNING_CONFIG_DIR)


def output_dir_of(training_arguments: dict) -> str:
    """TrainingArguments.output_dir as the pod sees it: absolute, a relative one is under /mnt."""
    out = training_arguments.get("output_dir", "/mnt/results")
    return posixpath.normpath(posixpath.join("/mnt", str(out)))


def merge_training_config(method: str, text: str | None, source: str = TRAINING_KEY) -> TrainingConfig:
    """Merge the user's training_config.yaml section by section over the method's defaults, then check it."""
    merged = default_training_config(method)
    issues: list[ConfigIssue] = []
    doc = None
    if text is not None:
        loaded = load_text(source, text.encode("utf-8"))
        issues.extend(ConfigIssue((), f.severity, f.rule, f.message) for f in loaded.findings)
        data = loaded.documents[0].data if loaded.documents else None
        doc = loaded.documents[0] if loaded.documents else None
        if data is not None and (
            not isinstance(data, dict) or not isinstance(data.get("training_config"), dict)
        ):
            issues.append(
                ConfigIssue(
                    (),
                    Severity.ERROR,
                    "tuning-config-shape",
                    "training_config.yaml must have one top-level key 'training_config' holding the sections",
                )
            )
        elif isinstance(data, dict):
            for section, body in data["training_config"].items():
                path = ("training_config", section)
                if section not in SECTIONS:
                    near = difflib.get_close_matches(section, SECTIONS, n=1)
                    hint = f"; did you mean '{near[0]}'?" if near else ""
                    issues.append(
                        ConfigIssue(
                            path,
                            Severity.ERROR,
                            "tuning-config-section",
                            f"unknown section '{section}'; sections are {', '.join(SECTIONS)}{hint}",
                        )
                    )
                    continue
                if body is None:
                    continue
                if not isinstance(body, dict):
                    issues.append(
                        ConfigIssue(
                            path, Severity.ERROR, "tuning-config-shape", f"{section} must be a mapping"
                        )
                    )
                    continue
                merged["training_config"].setdefault(section, {}).update(body)
    issues.extend(_check_training(method, merged["training_config"]))
    return TrainingConfig(merged, tuple(issues), doc)


def _check_training(method: str, tc: dict) -> list[ConfigIssue]:
    issues = []
    q = tc.get("QuantizationConfig", {})
    qpath = ("training_config", "QuantizationConfig")
    for k in ("load_in_4bit", "load_in_8bit"):
        if k in q and q[k] is not None and not isinstance(q[k], bool):
            issues.append(
                ConfigIssue(
                    (*qpath, k),
                    Severity.ERROR,
                    "tuning-config-quantization",
                    f"{k} must be true, false or null",
                )
            )
    four, eight = q.get("load_in_4bit") is True, q.get("load_in_8bit") is True
    if four and eight:
        issues.append(
            ConfigIssue(
                qpath,
                Severity.ERROR,
                "tuning-config-quantization",
                "load_in_4bit and load_in_8bit cannot both be true",
            )
        )
    elif method == "lora" and (four or eight):
        issues.append(
            ConfigIssue(
                qpath,
                Severity.ERROR,
                "tuning-config-quantization",
                "method lora trains unquantized weights; set load_in_4bit/load_in_8bit false, or use method qlora",
            )
        )
    elif method == "qlora" and not (four or eight):
        issues.append(
            ConfigIssue(
                qpath,
                Severity.ERROR,
                "tuning-config-quantization",
                "method qlora needs load_in_4bit: true (or load_in_8bit: true)",
            )
        )
    ta = tc.get("TrainingArguments", {})
    out = ta.get("output_dir", "/mnt/results")
    opath = ("training_config", "TrainingArguments", "output_dir")
    if not isinstance(out, str):
        issues.append(
            ConfigIssue(opath, Severity.ERROR, "tuning-config-output-dir", "output_dir must be a string path")
        )
    else:
        norm = output_dir_of(ta)
        taken = next((m for m in RESERVED_MOUNTS if norm == m or norm.startswith(m + "/")), None)
        if not norm.startswith("/mnt/"):
            issues.append(
                ConfigIssue(
                    opath,
                    Severity.ERROR,
                    "tuning-config-output-dir",
                    f"output_dir {out!r} must be a folder under /mnt (such as /mnt/results), not /mnt itself",
                )
            )
        elif taken:
            issues.append(
                ConfigIssue(
                    opath,
                    Severity.ERROR,
                    "tuning-config-output-dir",
                    f"output_dir {out!r} is inside {taken}, where the pod mounts its "
                    f"{'training data' if taken.endswith('data') else 'configuration'}; use /mnt/results",
                )
            )
    lora = tc.get("LoraConfig", {})
    r = lora.get("r", 8)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        issues.append(
            ConfigIssue(
                ("training_config", "LoraConfig", "r"),
                Severity.ERROR,
                "tuning-config-lora",
                "LoraConfig.r must be a positive integer",
            )
        )
    return issues
