"""Sizing: how many nodes and GPUs a model needs, and how SGLang should split it.

Pure functions of (model preset, GPU SKU, user overrides). The same numbers feed
validation ("does it fit?"), the plan shown on pull requests, and the rendered
SGLang flags, so there is one formula and one place to fix it.

Inference memory model, per GPU, for tensor parallel ``tp`` and pipeline parallel ``pp``:

    static   = gpu_memory x mem_fraction_static          SGLang's pool: weights + KV cache
    weights  = weights_gib x 1.02 / (tp x pp)            +2 % for buffers not in the files
    kv_token = kv_bytes_per_token x kv_share(tp) / pp    bytes per cached token on this GPU
    kv_tokens = (static - weights) / kv_token            tokens the KV pool can hold

``kv_bytes_per_token = 2 bytes x layers x 2 (K and V) x kv_heads x head_dim``; for
multi-head latent attention (DeepSeek) it is ``2 x layers x (kv_lora_rank + rope_dim)``
and is not sharded by tensor parallelism. ``kv_share(tp)`` is ``max(1, kv_heads/tp)/kv_heads``:
past ``tp = kv_heads`` SGLang replicates KV heads instead of splitting them.

A plan fits when the KV cache holds at least one full context (``context_length``
tokens; 8,192 when unset) and is at least 1 GiB and 10 % of the static pool per GPU, so
batches have room to grow. What is left outside the static pool (1 - mem_fraction_static;
3-12 GiB) is for activations, CUDA graphs and NCCL buffers.

How the GPUs are split, which is where we do better than Kaito's estimator:
* Tensor parallel must divide the attention heads and either divide or be a multiple of
  the KV heads, or SGLang fails at start (Falcon-7B's 71 heads allow only tp=1).
* Tensor parallel stays inside a node: Azure GPU VMs have NVLink inside the VM only, so
  across nodes we use pipeline parallel, which sends one activation per layer boundary.
* The smallest tp x pp that fits is one replica; the node's remaining GPUs become
  data-parallel replicas (``--dp-size``), which is more throughput than tp over idle heads.
* ``context_length`` defaults to the model's maximum, reduced to what the KV pool holds
  (a power of two, at least 2048) so a single long request cannot run out of cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalog import GIB, Model, Sku

WEIGHT_OVERHEAD = 1.02
MIN_KV_GIB = 1.0
MIN_KV_SHARE = 0.10  # of the static pool
MIN_CONTEXT = 2048
DEFAULT_TARGET_CONTEXT = 8192  # what sizing must fit when the user sets no context length
MAX_NODES = 16
SGLANG_MIN_CC = 7.0


def default_mem_fraction(gpu_memory_gib: float) -> float:
    """Share of GPU memory for SGLang's static pool; smaller GPUs need a larger reserve."""
    if gpu_memory_gib < 20:
        return 0.78
    if gpu_memory_gib < 40:
        return 0.82
    if gpu_memory_gib < 60:
        return 0.85
    return 0.87


def startup_seconds(model: Model) -> int:
    """How long a pod may take to serve: download + load. Kaito's rule: 15 min + 18 s/GiB, 30..180 min."""
    return int(min(max(15 * 60 + 18 * model.weights_gib, 30 * 60), 180 * 60))


def valid_tensor_parallel(model: Model, limit: int) -> list[int]:
    """tp sizes SGLang accepts for this model, up to `limit` GPUs, ascending."""
    a = model.architecture
    out = []
    for t in range(1, limit + 1):
        if limit % t:
            continue
        if a.attention_heads % t:
            continue
        if not a.kv_lora_rank and a.kv_heads % t and t % a.kv_heads:
            continue
        out.append(t)
    return out


def compute_dtype(model: Model, sku: Sku) -> str:
    """bf16 only where the GPU has it (compute capability >= 8.0); otherwise fp16."""
    if model.dtype == "float32":
        return "float16"
    if model.dtype == "bfloat16" and not sku.bf16:
        return "float16"
    return model.dtype


@dataclass(frozen=True, slots=True)
class Overrides:
    """What a user may pin through inference_config.yaml."""

    context_length: int | None = None
    mem_fraction_static: float | None = None
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None


@dataclass(frozen=True, slots=True)
class InferenceSizing:
    nodes: int
    gpus_per_node: int
    tp: int
    pp: int
    dp: int
    dtype: str
    mem_fraction_static: float
    context_length: int
    weights_gib_per_gpu: float
    kv_gib_per_gpu: float
    kv_tokens: int  # tokens one replica's KV pool holds
    startup_seconds: int
    notes: tuple[str, ...] = ()

    @property
    def full_context_requests(self) -> float:
        """How many requests of full context length fit in one replica's KV cache at once."""
        return self.kv_tokens / self.context_length

    def describe(self) -> str:
        return (
            f"SGLang tp={self.tp} pp={self.pp} dp={self.dp}, {self.dtype}, context {self.context_length:,}, "
            f"mem-fraction-static {self.mem_fraction_static:g}; weights {self.weights_gib_per_gpu:.1f} GiB/GPU, "
            f"KV cache {self.kv_gib_per_gpu:.1f} GiB/GPU = {self.kv_tokens:,} tokens "
            f"({self.full_context_requests:.1f} full-context requests)"
        )


@dataclass(frozen=True, slots=True)
class DoesNotFit:
    reason: str
    # memory | hardware | parallelism | context; and which override caused it, if one did
    kind: str = "memory"
    override: str | None = None


def _kv_bytes_per_token_per_gpu(model: Model, tp: int, pp: int) -> float:
    a = model.architecture
    full = a.kv_bytes_per_token
    if a.kv_lora_rank:
        share = 1.0  # the latent cache is replicated on every tensor-parallel rank
    else:
        share = max(1.0, a.kv_heads / tp) / a.kv_heads
    return full * share / pp


def _memory(model: Model, sku: Sku, tp: int, pp: int, fraction: float) -> tuple[float, float, int]:
    """(weights GiB/GPU, KV GiB/GPU, KV tokens) for one split."""
    static = sku.gpu_memory_gib * fraction
    weights = model.weights_gib * WEIGHT_OVERHEAD / (tp * pp)
    kv_gib = static - weights
    per_token = _kv_bytes_per_token_per_gpu(model, tp, pp)
    tokens = int(kv_gib * GIB / per_token) if kv_gib > 0 else 0
    return weights, kv_gib, tokens


def _context_for(model: Model, tokens: int, requested: int | None) -> int:
    if requested:
        return requested
    max_ctx = model.architecture.max_context
    if tokens >= max_ctx:
        return max_ctx
    ctx = MIN_CONTEXT
    while ctx * 2 <= min(tokens, max_ctx):
        ctx *= 2
    return ctx


def _hardware_problem(model: Model, sku: Sku) -> str | None:
    if sku.vendor != "nvidia":
        return (
            f"{sku.name} has {sku.gpu} GPUs ({sku.vendor.upper()}); kaito-gitops runs SGLang on NVIDIA CUDA only. "
            "Pick an NVIDIA size such as Standard_NV36ads_A10_v5 or Standard_NC24ads_A100_v4"
        )
    if sku.compute_capability < SGLANG_MIN_CC:
        return (
            f"{sku.name} has {sku.gpu} GPUs (compute capability {sku.compute_capability}); "
            f"SGLang needs {SGLANG_MIN_CC} or newer"
        )
    if model.min_compute_capability > sku.compute_capability:
        return (
            f"{model.name} ships {model.quantization} weights that need compute capability "
            f">= {model.min_compute_capability}; {sku.gpu} is {sku.compute_capability}"
        )
    return None


def size_inference(
    model: Model, sku: Sku, overrides: Overrides = Overrides()
) -> InferenceSizing | DoesNotFit:
    """Choose nodes and the tp/pp/dp split for `model` on `sku` (see the module docstring)."""
    problem = _hardware_problem(model, sku)
    if problem:
        return DoesNotFit(problem, kind="hardware")
    a = model.architecture
    G = sku.gpu_count
    fraction = overrides.mem_fraction_static or default_mem_fraction(sku.gpu_memory_gib)
    notes: list[str] = []
    dtype = compute_dtype(model, sku)
    if dtype != model.dtype and model.quantization is None:
        notes.append(f"{sku.gpu} has no bfloat16; serving in float16 (some models overflow in fp16)")
    if sku.compute_capability < 7.5:
        notes.append(
            f"SGLang support for {sku.gpu} (compute capability {sku.compute_capability}) is best effort"
        )
    if overrides.context_length and overrides.context_length > a.max_context:
        return DoesNotFit(
            f"context length {overrides.context_length:,} is above {model.name}'s maximum of {a.max_context:,}",
            kind="context",
            override="context_length",
        )
    need_ctx = overrides.context_length or min(a.max_context, DEFAULT_TARGET_CONTEXT)

    tps = valid_tensor_parallel(model, G)
    if overrides.tp:
        if overrides.tp not in tps:
            return DoesNotFit(
                f"tensor parallel {overrides.tp} is not possible: it must divide {model.name}'s "
                f"{a.attention_heads} attention heads and its {a.kv_heads} KV heads, and fit in one node's {G} GPUs "
                f"(valid here: {', '.join(map(str, tps)) or 'none'})",
                kind="parallelism",
                override="tp",
            )
        tps = [overrides.tp]
    if not tps:
        return DoesNotFit(
            f"no tensor-parallel size divides {model.name}'s {a.attention_heads} attention heads "
            f"on a node of {G} GPUs",
            kind="parallelism",
        )

    def fits(tp: int, pp: int) -> tuple[bool, float, float, int]:
        w, kv, tokens = _memory(model, sku, tp, pp, fraction)
        floor = max(MIN_KV_GIB, MIN_KV_SHARE * sku.gpu_memory_gib * fraction)
        return (kv >= floor and tokens >= need_ctx), w, kv, tokens

    def result(nodes: int, tp: int, pp: int, dp: int, w: float, kv: float, tokens: int) -> InferenceSizing:
        return InferenceSizing(
            nodes=nodes,
            gpus_per_node=G,
            tp=tp,
            pp=pp,
            dp=dp,
            dtype=dtype,
            mem_fraction_static=fraction,
            context_length=_context_for(model, tokens, overrides.context_length),
            weights_gib_per_gpu=round(w, 2),
            kv_gib_per_gpu=round(kv, 2),
            kv_tokens=tokens,
            startup_seconds=startup_seconds(model),
            notes=tuple(notes),
        )

    # One node: the smallest replica (tp x pp GPUs) that fits; spare GPUs become replicas.
    candidates = sorted(
        (
            (t, p)
            for t in tps
            for p in range(1, G // t + 1)
            if (G // t) % p == 0 and p <= a.layers and (overrides.pp in (None, p))
        ),
        key=lambda tp_pp: (tp_pp[0] * tp_pp[1], tp_pp[1]),
    )
    for t, p in candidates:
        ok, w, kv, tokens = fits(t, p)
        if ok:
            dp = overrides.dp or G // (t * p)
            if dp * t * p > G:
                return DoesNotFit(
                    f"data parallel {dp} x tp {t} x pp {p} needs {dp * t * p} GPUs; a node has {G}",
                    kind="parallelism",
                    override="dp",
                )
            return result(1, t, p, dp, w, kv, tokens)

    # Several nodes: the widest tp inside each node, pipeline stages across all GPUs.
    t = max(tps)
    for n in range(2, MAX_NODES + 1):
        p = n * G // t
        if p > a.layers:
            break
        if overrides.pp not in (None, p):
            continue
        ok, w, kv, tokens = fits(t, p)
        if ok:
            notes.append(
                f"multi-node: tensor parallel {t} inside each node, {p} pipeline stages over {n} nodes"
            )
            return result(n, t, p, 1, w, kv, tokens)

    _w1, kv1, _tok1 = _memory(model, sku, t, max(1, MAX_NODES * G // t), fraction)
    need = model.weights_gib * WEIGHT_OVERHEAD
    return DoesNotFit(
        f"{model.name} needs {need:.1f} GiB for weights plus KV cache for {need_ctx:,} tokens "
        f"({model.architecture.kv_bytes_per_token * need_ctx / GIB:.1f} GiB); {sku.name} offers "
        f"{sku.gpu_memory_gib:g} GiB x {G} GPU per node ({fraction:.0%} usable), and even {MAX_NODES} nodes "
        f"leave {max(kv1, 0):.1f} GiB/GPU for KV cache"
    )


# --------------------------------------------------------------------------------------
# Tuning
# --------------------------------------------------------------------------------------

CUDA_OVERHEAD_GIB = 1.5
QLORA_BYTES_PER_PARAM = 0.5 * 1.08  # NF4 with double-quantized absmax
ADAM_BYTES_PER_TRAINABLE = 16  # fp32 master weight + grad + two Adam moments
DEFAULT_TRAIN_SEQ = 1024  # TRL SFTConfig.max_length default


@dataclass(frozen=True, slots=True)
class TuningSizing:
    gpus: int
    dtype: str
    method: str
    weights_gib: float
    trainable_params_m: float
    activations_gib: float
    need_gib: float  # per GPU
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        return (
            f"1 node x {self.gpus} GPU; {self.method} in {self.dtype}; needs {self.need_gib:.1f} GiB/GPU "
            f"(weights {self.weights_gib:.1f}, LoRA {self.trainable_params_m:.1f}M params, "
            f"activations {self.activations_gib:.1f})"
        )


def lora_trainable_params(model: Model, r: int = 8) -> int:
    """LoRA adds r x (in + out) per adapted matrix; attention + MLP projections on every layer."""
    a = model.architecture
    h = a.hidden_size
    q = a.attention_heads * a.head_dim
    kv = a.kv_heads * a.head_dim
    inter = int(h * 8 / 3) if not a.experts else h  # MLP width is not in the catalog; 8/3 h is typical
    per_layer = r * ((h + q) + 2 * (h + kv) + (q + h) + 3 * (h + inter))
    return per_layer * a.layers


def size_tuning(
    model: Model, sku: Sku, method: str, seq_len: int = DEFAULT_TRAIN_SEQ, r: int = 8
) -> TuningSizing | DoesNotFit:
    """Memory one GPU needs to fine-tune `model` with LoRA or QLoRA (every GPU holds a full copy)."""
    if sku.vendor != "nvidia":
        return DoesNotFit(
            f"{sku.name} has {sku.vendor.upper()} GPUs; tuning images are built for CUDA", kind="hardware"
        )
    if sku.compute_capability < 7.0:
        return DoesNotFit(
            f"{sku.gpu} (compute capability {sku.compute_capability}) is too old for bitsandbytes and PyTorch CUDA",
            kind="hardware",
        )
    a = model.architecture
    params = model.parameters_b * 1e9
    embed = a.vocab_size * a.hidden_size * 2 * 2  # input embedding and LM head stay 16-bit
    if method == "qlora":
        weights = params * QLORA_BYTES_PER_PARAM + embed
    else:
        weights = params * 2
    trainable = lora_trainable_params(model, r)
    # With gradient checkpointing (SFTTrainer's default): layer inputs kept, one layer recomputed,
    # plus fp32 logits over the vocabulary for the loss.
    act = (
        seq_len * a.hidden_size * 2 * a.layers + seq_len * a.hidden_size * 34 + seq_len * a.vocab_size * 4 * 2
    )
    need = (weights + trainable * ADAM_BYTES_PER_TRAINABLE + act) / GIB + CUDA_OVERHEAD_GIB
    dtype = "bfloat16" if sku.bf16 else "float16"
    notes = []
    if not sku.bf16:
        notes.append(f"{sku.gpu} has no bfloat16: training computes in float16")
    if model.quantization and method == "lora":
        notes.append(f"{model.name} ships {model.quantization} weights; LoRA trains on the dequantized model")
    usable = sku.gpu_memory_gib * 0.95
    if need > usable:
        hint = " QLoRA needs about a quarter of LoRA's weight memory." if method == "lora" else ""
        return DoesNotFit(
            f"{method.upper()} of {model.name} needs about {need:.1f} GiB per GPU (weights {weights / GIB:.1f} GiB, "
            f"optimizer {trainable * ADAM_BYTES_PER_TRAINABLE / GIB:.1f} GiB, activations {act / GIB:.1f} GiB at "
            f"{seq_len} tokens); {sku.name} has {sku.gpu_memory_gib:g} GiB per GPU.{hint}"
        )
    return TuningSizing(
        gpus=sku.gpu_count,
        dtype=dtype,
        method=method,
        weights_gib=round(weights / GIB, 2),
        trainable_params_m=round(trainable / 1e6, 2),
        activations_gib=round(act / GIB, 2),
        need_gib=round(need, 2),
        notes=tuple(notes),
    )


__all__ = [
    "DoesNotFit",
    "InferenceSizing",
    "Overrides",
    "TuningSizing",
    "compute_dtype",
    "default_mem_fraction",
    "size_inference",
    "size_tuning",
    "startup_seconds",
    "valid_tensor_parallel",
]
