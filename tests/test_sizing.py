"""Sizing: every preset on every SKU gets a plan or "does not fit" with the numbers.

The whole table is a golden file (tests/golden/sizing-table.txt, UPDATE_GOLDEN=1 rewrites it),
so any change to the formula shows up as a reviewable diff; the invariants below must hold
for every row whatever the formula.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.catalog import GIB, load_catalog
from reconciler.sizing import (
    DoesNotFit,
    InferenceSizing,
    Overrides,
    TuningSizing,
    default_mem_fraction,
    size_inference,
    size_tuning,
    valid_tensor_parallel,
)

GOLDEN = Path(__file__).parent / "golden" / "sizing-table.txt"
CATALOG = load_catalog()
PAIRS = [
    (m, s)
    for m in sorted(CATALOG.models.values(), key=lambda m: m.name)
    for s in sorted(CATALOG.skus.values(), key=lambda s: s.name)
]


def row(m, s) -> str:
    r = size_inference(m, s)
    if isinstance(r, DoesNotFit):
        return f"{m.name:32} {s.name:27} does not fit: {r.reason}"
    return (
        f"{m.name:32} {s.name:27} {r.nodes} node x {r.gpus_per_node} GPU tp={r.tp} pp={r.pp} dp={r.dp} "
        f"{r.dtype} ctx={r.context_length} weights={r.weights_gib_per_gpu:.1f}G kv={r.kv_gib_per_gpu:.1f}G "
        f"tokens={r.kv_tokens}"
    )


def test_the_table_of_every_preset_on_every_sku():
    table = "\n".join(row(m, s) for m, s in PAIRS) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(table)
    assert table == GOLDEN.read_text()
    fits = sum("does not fit" not in line for line in table.splitlines())
    assert 200 < fits < len(PAIRS)


@pytest.mark.parametrize(("m", "s"), PAIRS, ids=[f"{m.name}@{s.name}" for m, s in PAIRS])
def test_invariants(m, s):
    r = size_inference(m, s)
    if isinstance(r, DoesNotFit):
        assert r.reason and any(ch.isdigit() for ch in r.reason), "say why, with numbers"
        return
    a = m.architecture
    assert a.attention_heads % r.tp == 0, "tensor parallel divides the attention heads"
    assert a.kv_lora_rank or a.kv_heads % r.tp == 0 or r.tp % a.kv_heads == 0
    assert r.tp <= s.gpu_count, "tensor parallel stays inside a node"
    assert r.tp * r.pp * r.dp == r.nodes * s.gpu_count, "every GPU has a job"
    assert r.nodes == 1 or r.dp == 1, "data parallel only inside one node"
    assert r.pp <= a.layers
    if m.dtype == "bfloat16":
        assert r.dtype == ("bfloat16" if s.bf16 else "float16"), "bf16 only where the GPU has it"
    assert MIN_CONTEXT <= r.context_length <= a.max_context
    assert r.kv_tokens >= r.context_length, "one full-context request fits the KV cache"
    if r.nodes == 1:  # the smallest replica that fits; spare GPUs are replicas, not wider splits
        smaller = [
            (t, p)
            for t in valid_tensor_parallel(m, s.gpu_count)
            for p in range(1, s.gpu_count // t + 1)
            if (s.gpu_count // t) % p == 0 and t * p < r.tp * r.pp
        ]
        fits = [
            (t, p)
            for t, p in smaller
            if isinstance(size_inference(m, s, Overrides(tp=t, pp=p)), InferenceSizing)
        ]
        assert not fits, f"tp x pp {fits[0]} fits on fewer GPUs than {r.tp} x {r.pp}"


MIN_CONTEXT = 2048


def test_tensor_parallel_respects_heads():
    falcon = CATALOG.model("falcon-7b")  # 71 heads, 1 KV head
    assert valid_tensor_parallel(falcon, 8) == [1]
    phi_medium = CATALOG.model("phi-3-medium-128k-instruct")  # 40 heads, 10 KV heads
    assert valid_tensor_parallel(phi_medium, 8) == [1, 2]
    r = size_inference(phi_medium, CATALOG.sku("Standard_ND96amsr_A100_v4"))
    assert (r.tp, r.dp) == (1, 8), "a small model on 8 GPUs becomes 8 replicas"


def test_small_model_data_parallel_big_model_multi_node():
    r = size_inference(CATALOG.model("llama-3.1-8b-instruct"), CATALOG.sku("Standard_NC96ads_A100_v4"))
    assert (r.nodes, r.tp, r.pp, r.dp) == (1, 1, 1, 4)
    r = size_inference(CATALOG.model("deepseek-r1-0528"), CATALOG.sku("Standard_NC80adis_H100_v5"))
    assert (r.nodes, r.tp, r.pp, r.dp) == (5, 2, 5, 1), "tp inside the 2-GPU node, pipeline across 5 nodes"
    r = size_inference(CATALOG.model("deepseek-r1-0528"), CATALOG.sku("Standard_ND96isr_H200_v5"))
    assert (r.nodes, r.tp, r.pp) == (1, 8, 1), "641 GiB of fp8 fits one 8 x H200 node"


def test_dtype_follows_the_gpu():
    m = CATALOG.model("phi-3-mini-128k-instruct")
    assert size_inference(m, CATALOG.sku("Standard_NC6s_v3")).dtype == "float16"  # V100
    assert size_inference(m, CATALOG.sku("Standard_NV36ads_A10_v5")).dtype == "bfloat16"


def test_user_overrides():
    m, s = CATALOG.model("llama-3.1-8b-instruct"), CATALOG.sku("Standard_NC96ads_A100_v4")
    r = size_inference(m, s, Overrides(tp=4, context_length=32768))
    assert (r.tp, r.dp, r.context_length) == (4, 1, 32768)
    bad = size_inference(m, s, Overrides(tp=3))
    assert (
        isinstance(bad, DoesNotFit)
        and "tensor parallel 3 is not possible" in bad.reason
        and bad.override == "tp"
    )
    too_long = size_inference(m, s, Overrides(context_length=10**6))
    assert isinstance(too_long, DoesNotFit) and too_long.kind == "context"


def test_does_not_fit_names_the_numbers():
    r = size_inference(CATALOG.model("deepseek-v3-0324"), CATALOG.sku("Standard_NV36ads_A10_v5"))
    assert isinstance(r, DoesNotFit)
    assert "654.1 GiB for weights" in r.reason and "24 GiB x 1 GPU per node" in r.reason


def test_tuning_memory_is_method_aware():
    m, v100 = CATALOG.model("phi-3-mini-128k-instruct"), CATALOG.sku("Standard_NC6s_v3")
    q, lo = size_tuning(m, v100, "qlora"), size_tuning(m, v100, "lora")
    assert isinstance(q, TuningSizing) and isinstance(lo, TuningSizing)
    assert q.need_gib < lo.need_gib < v100.gpu_memory_gib
    assert q.dtype == "float16"
    medium = size_tuning(CATALOG.model("phi-3-medium-128k-instruct"), v100, "lora")
    assert isinstance(medium, DoesNotFit) and "QLoRA needs about a quarter" in medium.reason
    assert isinstance(size_tuning(CATALOG.model("phi-3-medium-128k-instruct"), v100, "qlora"), TuningSizing)


def test_memory_fraction_reserves_more_on_small_gpus():
    assert (
        default_mem_fraction(16)
        < default_mem_fraction(24)
        < default_mem_fraction(48)
        < default_mem_fraction(80)
    )
    assert all((1 - default_mem_fraction(g)) * g >= 3 for g in (16, 24, 40, 80, 94, 141))


def test_kv_bytes_per_token():
    llama = CATALOG.model("llama-3.1-8b-instruct").architecture
    assert llama.kv_bytes_per_token == 2 * 32 * 2 * 8 * 128  # 128 KiB per token
    ds = CATALOG.model("deepseek-r1-0528").architecture
    assert ds.kv_bytes_per_token == 2 * 61 * (512 + 64)  # MLA latent
    assert ds.kv_bytes_per_token < llama.kv_bytes_per_token


__all__ = ["GIB", "InferenceSizing"]
