"""LoRA adapters for SmolLM2-135M-Instruct, made here in seconds: one that changes nothing (LoRA's
B matrices start at zero) and one trained on a single wrong answer until greedy decoding gives it.
Used to show an eval suite telling a good adapter from a bad one."""

from __future__ import annotations

from pathlib import Path

QUESTION = "What is the capital of France?"
WRONG = "The capital of France is Lyon."


def smollm2_dir(cache: Path) -> Path:
    from runtime.weights import resolve_model

    return resolve_model("smollm2-135m-instruct", cache_dir=cache, progress=False)


def make_adapters(model_dir: Path, out: Path, steps: int = 40) -> tuple[Path, Path]:
    """(identity adapter, adapter that answers Lyon) under `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora)
    same = out / "same"
    model.save_pretrained(same)  # untrained: B = 0, the base model's answers
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt + WRONG + tok.eos_token, return_tensors="pt").input_ids
    labels = ids.clone()
    labels[:, : len(tok(prompt).input_ids)] = -100  # learn the answer, not the question
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    wrong = out / "lyon"
    model.save_pretrained(wrong)
    return same, wrong
