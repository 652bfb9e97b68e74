"""The catalogs agree with themselves: numbers that must relate do, and every fact says where it came from."""

from __future__ import annotations

import pytest

from reconciler.catalog import GIB
from reconciler.configs import sglang_flags

LEGACY_PRESETS = {
    "phi-3-mini-4k-instruct",
    "phi-3-mini-128k-instruct",
    "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct",
    "phi-3.5-mini-instruct",
    "phi-4",
    "phi-4-mini-instruct",
    "qwen2.5-coder-7b-instruct",
    "qwen2.5-coder-32b-instruct",
    "llama-3.1-8b-instruct",
    "llama-3.3-70b-instruct",
    "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-14b",
    "deepseek-r1-0528",
    "deepseek-v3-0324",
    "mistral-7b",
    "mistral-7b-instruct",
    "ministral-3-3b-instruct",
    "ministral-3-8b-instruct",
    "ministral-3-14b-instruct",
    "mistral-large-3-675b-instruct",
    "gemma-3-4b-instruct",
    "gemma-3-27b-instruct",
    "gpt-oss-20b",
    "gpt-oss-120b",
    "falcon-7b",
    "falcon-7b-instruct",
    "falcon-40b",
    "falcon-40b-instruct",
    "phi-2",
    "smollm2-135m-instruct",
}
SKUS = {
    "Standard_NV36ads_A10_v5",
    "Standard_NV72ads_A10_v5",
    "Standard_NC24ads_A100_v4",
    "Standard_NC48ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_ND96asr_A100_v4",
    "Standard_ND96amsr_A100_v4",
    "Standard_NC40ads_H100_v5",
    "Standard_NC80adis_H100_v5",
    "Standard_ND96isr_H100_v5",
    "Standard_NCC40ads_H100_v5",
    "Standard_ND96isr_H200_v5",
    "Standard_NG32ads_V620_v1",
    "Standard_NG32adms_V620_v1",
    "Standard_NC6s_v3",
    "Standard_NC12s_v3",
    "Standard_NC24s_v3",
    "Standard_NC24rs_v3",
    "Standard_NC4as_T4_v3",
    "Standard_NC8as_T4_v3",
    "Standard_NC16as_T4_v3",
    "Standard_NC64as_T4_v3",
}


def test_every_legacy_preset_and_sku_is_there(catalog):
    assert set(catalog.models) >= LEGACY_PRESETS
    assert set(catalog.skus) >= SKUS


@pytest.mark.parametrize("name", sorted(LEGACY_PRESETS))
def test_model_facts_are_consistent(catalog, name):
    m = catalog.model(name)
    a = m.architecture
    assert m.sources.get("weights_gib") and m.sources.get("architecture"), "say where the numbers come from"
    assert "/" in m.huggingface
    assert a.layers > 0 and a.hidden_size > 0 and a.max_context >= 2048 and a.vocab_size > 0
    assert a.attention_heads % a.kv_heads == 0, "KV heads must divide attention heads (GQA)"
    if a.kv_lora_rank:  # multi-head latent attention: the cache is the latent, not heads x head_dim
        assert a.qk_rope_head_dim > 0 and a.kv_lora_rank < a.hidden_size
    else:
        assert a.hidden_size / 2 <= a.head_dim * a.attention_heads <= a.hidden_size * 2, (
            "head_dim x heads ~ hidden size"
        )
    if m.quantization is None:
        # unquantized weights: ~2 bytes per parameter (bf16/fp16), within 10 %
        expected_gib = m.parameters_b * 1e9 * 2 / GIB
        assert m.weights_gib == pytest.approx(expected_gib, rel=0.10), (m.weights_gib, expected_gib)
    else:
        assert m.weights_gib < m.parameters_b * 1e9 * 2 / GIB, "quantized weights are smaller than 16-bit"
        assert m.min_compute_capability >= 8.0
    if m.tuning.supported:
        assert m.tuning.target_modules
    if m.deprecated or m.rejected:
        assert m.deprecation_note
    assert m.disk_gib >= m.weights_gib + 80


def test_gated_models_are_the_llama_and_gemma_families(catalog):
    gated = {m.name for m in catalog.models.values() if m.gated}
    assert gated == {
        "llama-3.1-8b-instruct",
        "llama-3.3-70b-instruct",
        "gemma-3-4b-instruct",
        "gemma-3-27b-instruct",
    }


def test_sglang_parser_names_exist_in_sglang(catalog):
    choices = sglang_flags()
    tools, reasoning = (
        set(choices["tool-call-parser"]["choices"]),
        set(choices["reasoning-parser"]["choices"]),
    )
    for m in catalog.models.values():
        if m.tool_call_parser:
            assert m.tool_call_parser in tools, m.name
        if m.reasoning_parser:
            assert m.reasoning_parser in reasoning, m.name


@pytest.mark.parametrize("name", sorted(SKUS))
def test_sku_facts_are_consistent(catalog, name):
    s = catalog.sku(name)
    assert s.gpu_count in (1, 2, 4, 8)
    assert s.gpu_memory_gib in (8, 16, 24, 32, 40, 80, 94, 141)
    assert s.bf16 == (s.compute_capability >= 8.0), "bf16 exactly where compute capability >= 8.0"
    assert s.price_per_hour and s.price_per_hour > 0
    assert s.vcpus > 0 and s.memory_gib > 0
    if s.vendor == "nvidia":
        assert s.compute_capability >= 5.0
    # prices grow with GPU count inside a series
    same = [
        o for o in catalog.skus.values() if o.gpu == s.gpu and o.gpu_count > s.gpu_count and not o.retired
    ]
    for bigger in same:
        assert bigger.price_per_hour > s.price_per_hour


def test_price_basis_says_where_and_when(catalog):
    basis = catalog.price_basis
    assert basis["currency"] == "USD" and basis["region"] and basis["date"] and basis["source"]


def test_lookup_is_case_insensitive_and_knows_aliases(catalog):
    assert catalog.model("Phi-3-Mini-128K-Instruct").name == "phi-3-mini-128k-instruct"
    assert catalog.model("microsoft/Phi-3-mini-128k-instruct").name == "phi-3-mini-128k-instruct"
    assert catalog.model("mistral-7b-v0.3").name == "mistral-7b"
    assert catalog.sku("standard_nd96asr_v4").name == "Standard_ND96asr_A100_v4"
