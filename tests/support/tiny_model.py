"""A tiny causal LM and tokenizer, built offline in seconds, for tests of the ML runtime.

A 2-layer Llama (about 200k parameters) with a byte-level BPE tokenizer trained on
tests/support/tiny_corpus.txt (committed, so every build is the same) and a simple chat
template. It generates junk, but it loads, trains (LoRA / 4-bit QLoRA on CPU) and serves
through exactly the code paths a real model does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CORPUS = Path(__file__).with_name("tiny_corpus.txt")
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


_built: dict[tuple[int, int], Path] = {}  # one build per test process; later calls copy it


def build_tiny_model(out: Path, vocab_size: int = 2048, seed: int = 0) -> Path:
    """Write a loadable model folder (config, safetensors, tokenizer, chat template) to `out`."""
    out = Path(out)
    if (out / "config.json").exists():
        return out
    first = _built.get((vocab_size, seed))
    if first is not None and (first / "config.json").exists():
        shutil.copytree(first, out, dirs_exist_ok=True)
        return out
    _build(out, vocab_size, seed)
    _built[(vocab_size, seed)] = out
    return out


def _build(out: Path, vocab_size: int, seed: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    lines = CORPUS.read_text().splitlines()
    tok.train_from_iterator(
        lines,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            min_frequency=1,
            show_progress=False,
        ),
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    # transformers 5 writes "TokenizersBackend", which 4.x cannot read; this class loads on both.
    tc = out / "tokenizer_config.json"
    data = json.loads(tc.read_text())
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    import sys

    print(build_tiny_model(Path(sys.argv[1])))
