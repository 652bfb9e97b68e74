"""runtime.tuning end to end: real 4-bit NF4 QLoRA on CPU on a tiny Llama, progress file, adapter
push to a real registry (basic auth, dockerconfigjson) and pull back with `runtime.adapters pull`.

The tuning CLI runs once, in a subprocess, for the whole module; the tests read its results.
Data shapes and config errors are checked in-process (runtime.dataset, runtime.tuning).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.tiny_model import build_tiny_model

from runtime.progress import FAILED, RUNNING, SUCCEEDED, ProgressWriter, read_progress

if not all(
    importlib.util.find_spec(m) for m in ("torch", "transformers", "peft", "bitsandbytes", "trl", "oras")
):
    pytest.skip(
        "needs the ML extra (torch, transformers, peft, bitsandbytes, trl, oras)", allow_module_level=True
    )
pytestmark = [pytest.mark.ml, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
ROOT = Path(__file__).resolve().parent.parent


COUNTRIES = [
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Germany", "Berlin"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
]
CONFIG = """\
training_config:
  LoraConfig:
    r: 8
    lora_alpha: 16
    target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
  TrainingArguments:
    max_steps: 30
    per_device_train_batch_size: 8
    learning_rate: 0.005
    lr_scheduler_type: constant
    logging_steps: 1
    max_length: 128
    seed: 0
  DatasetConfig: {shuffle_seed: 0}
"""


def dolly_rows(n: int = 64) -> list[dict]:
    rows = []
    for i in range(n):
        c, k = COUNTRIES[i % len(COUNTRIES)]
        rows.append(
            {
                "instruction": f"What is the capital of {c}?",
                "context": "" if i % 2 else f"{c} is a country.",
                "response": f"The capital of {c} is {k}.",
                "category": "open_qa",
            }
        )
    return rows


def env_for(root: Path) -> dict:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(root / "hf"),
        TMPDIR=str(root),
        PYTHONPATH=str(ROOT),
        PYTHONWARNINGS="ignore::FutureWarning",
        # A 200k-parameter model gains nothing from a second thread, and OpenMP's spinning threads
        # make it several times slower on a busy 2-core machine.
        OMP_NUM_THREADS="1",
    )
    env.pop("KAITO_PROGRESS_FILE", None)
    return env


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def logs_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_model, registry):
    import pandas as pd

    root = tmp_path_factory.mktemp("tuning")
    (root / "data").mkdir()
    pd.DataFrame(dolly_rows()).to_parquet(root / "data" / "dolly.parquet")
    (root / "training_config.yaml").write_text(CONFIG)
    docker_config = registry.docker_config(root / "push-config.json")
    image = f"{registry.host}/adapters/tiny-qlora:v1"
    out, progress = root / "results", root / "results" / "progress.json"
    cmd = [
        sys.executable,
        "-m",
        "runtime.tuning",
        "--model",
        str(tiny_model),
        "--method",
        "qlora",
        "--config",
        str(root / "training_config.yaml"),
        "--data-dir",
        str(root / "data"),
        "--output-dir",
        str(out),
        "--download-dir",
        str(root / "hf"),
        "--push-image",
        image,
        "--docker-config",
        str(docker_config),
        "--model-name",
        "tiny-llama",
        "--progress-file",
        str(progress),
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=root, env=env_for(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: list[tuple[str, str, int]] = []  # (state, phase, step) as a reader polling the file sees them
    streams: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda n=n, f=f: streams.__setitem__(n, f.read()), daemon=True)
        for n, f in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for r in readers:
        r.start()
    while proc.poll() is None:
        p = read_progress(progress)
        if p and (not seen or seen[-1] != (p["state"], p["phase"], p["step"])):
            seen.append((p["state"], p["phase"], p["step"]))
        time.sleep(0.02)
    for r in readers:
        r.join(10)
    stdout, stderr = streams.get("out", ""), streams.get("err", "")
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, f"tuning failed:\n{stdout[-4000:]}\n{stderr[-4000:]}"
    final = read_progress(progress)
    seen.append((final["state"], final["phase"], final["step"]))
    return SimpleNamespace(
        root=root,
        out=out,
        image=image,
        docker_config=docker_config,
        progress=final,
        seen=seen,
        logs=logs_of(stdout),
        stderr=stderr,
        seconds=seconds,
        model=tiny_model,
    )


def test_qlora_nf4_trains_and_loss_falls(tuned):
    loaded = next(e for e in tuned.logs if e["event"] == "model_loaded")
    assert (loaded["method"], loaded["quantization"], loaded["quant_type"], loaded["device"]) == (
        "qlora",
        "bitsandbytes",
        "nf4",
        "cpu",
    )
    assert loaded["dtype"] == "torch.float32"  # compute dtype on the CPU
    start = next(e for e in tuned.logs if e["event"] == "train_start")
    assert start["target_modules_from"] == "LoraConfig.target_modules" and len(start["target_modules"]) == 7
    losses = [loss for _, loss in tuned.progress["history"]]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(
        f"\nQLoRA: {tuned.progress['train_seconds']} s training, {tuned.seconds:.1f} s end to end, "
        f"loss {first:.3f} -> {last:.3f}, push {tuned.progress['push_seconds']} s"
    )
    assert last < first - 0.05


def test_output_is_only_the_adapter_and_the_marker(tuned):
    names = sorted(p.name for p in tuned.out.iterdir())
    assert names == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "fine_tuning_completed.txt",
        "progress.json",
    ]
    cfg = json.loads((tuned.out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["lora_alpha"] == 16


def test_progress_goes_running_to_succeeded(tuned):
    states = [s for s, _, _ in tuned.seen]
    assert states[0] == RUNNING and states[-1] == SUCCEEDED
    assert any(s == RUNNING and ph == "training" for s, ph, _ in tuned.seen)
    p = tuned.progress
    assert p["step"] == p["total_steps"] == 30 and p["eta_seconds"] == 0 and p["error"] is None
    assert isinstance(p["loss"], float) and p["learning_rate"] == pytest.approx(0.005)
    assert p["tokens_per_second"] > 0 and p["epoch"] > 1
    assert p["image"] == tuned.image and p["digest"].startswith("sha256:")
    logged = [e["state"] for e in tuned.logs if "state" in e]
    assert logged[0] == RUNNING and logged[-1] == SUCCEEDED


def test_pushed_adapter_pulls_back_identical(tuned, tmp_path):
    dest = tmp_path / "adapter"
    t0 = time.monotonic()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.adapters",
            "pull",
            "--image",
            tuned.image,
            "--dest",
            str(dest),
            "--docker-config",
            str(tuned.docker_config),
            "--expect",
            "adapter",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    pull_seconds = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    last = logs_of(p.stdout)[-1]
    assert last["event"] == "pulled" and last["digest"] == tuned.progress["digest"]
    print(f"\npull (subprocess) {pull_seconds:.2f} s, in-process {last['seconds']} s")
    assert sorted(x.name for x in dest.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert sha(dest / name) == sha(tuned.out / name)

    from runtime import oci

    manifest, _ = oci.get_manifest(oci.client_for(tuned.image, [tuned.docker_config]))
    assert manifest["annotations"]["sh.kaito.model.name"] == "tiny-llama"


def test_adapter_loads_on_the_base_and_is_trained(tuned):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = load_file(str(tuned.out / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(v) > 0 for v in lora_b)  # B starts at zero; training moved it
    tok = AutoTokenizer.from_pretrained(str(tuned.model))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tuned.model)), str(tuned.out))
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of Peru?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**enc, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4


def test_cpu_server_answers_with_the_pulled_adapter(tuned, tmp_path):
    """The adapter as a user gets it (pulled from the registry) serves through the CPU server,
    token for token what peft produces with it, and the base model stays untouched beside it."""
    import torch
    from fastapi.testclient import TestClient
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime import oci
    from runtime.cpu_server import create_app

    dest = tmp_path / "mnt-adapter" / "tiny-qlora"
    oci.pull(tuned.image, dest, [tuned.docker_config], expect="adapter")
    prompt, n = "The capital of Peru is", 8
    app = create_app(
        str(tuned.model),
        "tiny-llama",
        {"tiny-qlora": str(dest)},
        load_in_background=False,
        check_memory=False,
    )
    with TestClient(app) as client:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert ids == ["tiny-llama", "tiny-qlora"]

        def complete(model: str) -> str:
            body = {"model": model, "prompt": prompt, "temperature": 0, "max_tokens": n, "min_tokens": n}
            r = client.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == n
            return r.json()["choices"][0]["text"]

        served_adapter, served_base = complete("tiny-qlora"), complete("tiny-llama")

    tok = AutoTokenizer.from_pretrained(str(tuned.model))
    enc = tok(prompt, return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(str(tuned.model), dtype=torch.float32)
    with torch.no_grad():
        plain = base.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        peft_model = PeftModel.from_pretrained(base, str(dest))
        adapted = peft_model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    start = enc["input_ids"].shape[1]
    assert served_adapter == tok.decode(adapted[0, start:], skip_special_tokens=True)
    assert served_base == tok.decode(plain[0, start:], skip_special_tokens=True)
    assert served_adapter != served_base  # training moved the greedy answer


def test_bad_data_fails_with_file_and_row(tiny_model, tmp_path, monkeypatch, capsys):
    """The CLI, in-process: it fails while loading the data, before torch or trl do any work."""
    from runtime.tuning import main

    (tmp_path / "data").mkdir()
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    (tmp_path / "data" / "chat.jsonl").write_text(
        json.dumps(good) + "\n" + json.dumps({"messages": "oops"}) + "\n"
    )
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    progress = tmp_path / "out" / "progress.json"
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setenv("KAITO_NO_ACCELERATE", "1")  # never re-run pytest under accelerate
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # main sets it; restored after
    rc = main(
        [
            "--model",
            str(tiny_model),
            "--method",
            "qlora",
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--data-dir",
            str(tmp_path / "data"),
            "--output-dir",
            str(tmp_path / "out"),
            "--progress-file",
            str(progress),
        ]
    )
    assert rc == 1
    state = read_progress(progress)
    assert state["state"] == FAILED and state["phase"] == "loading data"
    assert "chat.jsonl: row 2" in state["error"] and "list of {role, content}" in state["error"]
    assert logs_of(capsys.readouterr().out)[-1]["error"] == state["error"]
    assert not (tmp_path / "out" / "fine_tuning_completed.txt").exists()


def test_model_errors_say_why(tmp_path, monkeypatch):
    from runtime.tuning import TuningError, resolve_model

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TuningError, match="does not exist"):  # once an uncaught HFValidationError
        resolve_model(str(tmp_path / "missing"), None, False)
    with pytest.raises(TuningError, match=r"org/not-cached: not in the Hugging Face cache .*HF_HUB_OFFLINE"):
        resolve_model("org/not-cached", None, False)


# ---- in-process: data shapes and config errors ---------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("rows", "form", "first"),
    [
        (
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
            "messages",
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        ),
        (
            [{"prompt": "q", "completion": "a"}],
            "prompt_completion",
            {
                "prompt": [{"role": "user", "content": "q"}],
                "completion": [{"role": "assistant", "content": "a"}],
            },
        ),
        (
            [{"prompt": "q", "response": "a"}],
            "prompt_completion",
            {
                "prompt": [{"role": "user", "content": "q"}],
                "completion": [{"role": "assistant", "content": "a"}],
            },
        ),
        (
            [{"instruction": "do", "input": "this", "output": "done"}],
            "prompt_completion",
            {
                "prompt": [{"role": "user", "content": "do\n\nthis"}],
                "completion": [{"role": "assistant", "content": "done"}],
            },
        ),
        (
            [{"instruction": "do", "context": "", "response": "ok", "category": "x"}],
            "prompt_completion",
            {
                "prompt": [{"role": "user", "content": "do"}],
                "completion": [{"role": "assistant", "content": "ok"}],
            },
        ),
        ([{"text": "plain text"}], "text", {"text": "plain text"}),
    ],
)
def test_dataset_shapes(tmp_path, rows, form, first):
    from runtime.dataset import load_training_data

    write_jsonl(tmp_path / "d" / "rows.jsonl", rows)
    data = load_training_data(tmp_path / "d", {"shuffle_dataset": False}, cache_dir=str(tmp_path / "cache"))
    assert data.form == form and data.train[0] == first and data.eval is None


def test_dataset_config_columns_mixing_split_and_errors(tmp_path):
    import pandas as pd

    from runtime.dataset import DataError, load_training_data

    cache = str(tmp_path / "cache")
    d = tmp_path / "cols"
    d.mkdir()
    pd.DataFrame({"question": [f"q{i}" for i in range(10)], "answer": [f"a{i}" for i in range(10)]}).to_csv(
        d / "qa.csv", index=False
    )
    data = load_training_data(
        d,
        {
            "context_column": "question",
            "response_column": "answer",
            "train_test_split": 0.8,
            "shuffle_seed": 1,
        },
        cache_dir=cache,
    )
    assert (len(data.train), len(data.eval)) == (8, 2) and data.form == "prompt_completion"

    mixed = tmp_path / "mixed"
    write_jsonl(
        mixed / "a.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}],
    )
    write_jsonl(mixed / "b.jsonl", [{"prompt": "p", "completion": "c"}])
    data = load_training_data(mixed, {}, cache_dir=cache)
    assert data.form == "messages" and len(data.train) == 2

    write_jsonl(
        tmp_path / "bad" / "x.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "wizard", "content": "a"}]}],
    )
    with pytest.raises(DataError, match=r"x\.jsonl: row 1: message 2 has role 'wizard'"):
        load_training_data(tmp_path / "bad", {}, cache_dir=cache)
    write_jsonl(tmp_path / "mix2" / "a.jsonl", [{"text": "t"}])
    write_jsonl(tmp_path / "mix2" / "b.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(DataError, match="cannot be mixed"):
        load_training_data(tmp_path / "mix2", {}, cache_dir=cache)
    (tmp_path / "empty").mkdir()
    pd.DataFrame({"text": pd.Series([], dtype="str")}).to_parquet(tmp_path / "empty" / "none.parquet")
    with pytest.raises(DataError, match="no training rows"):
        load_training_data(tmp_path / "empty", {}, cache_dir=cache)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no training data files"):
        load_training_data(tmp_path / "nothing", {}, cache_dir=cache)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "b.jsonl").write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"b\.jsonl: cannot be read as json"):
        load_training_data(tmp_path / "broken", {}, cache_dir=cache)
    with pytest.raises(DataError, match="unknown key"):
        load_training_data(d, {"shuffle": True}, cache_dir=cache)


def test_config_errors_name_the_keys(tmp_path):
    from runtime.tuning import TuningError, check_config, load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("training_config:\n  TrainingArguments: {max_step: 3, learnin_rate: 0.1}\n")
    cfg = load_config("qlora", bad, output_dir_given=True)
    with pytest.raises(TuningError, match=r"learnin_rate \(did you mean learning_rate\?\), max_step"):
        check_config(cfg)
    lora = tmp_path / "lora.yaml"
    lora.write_text("training_config:\n  QuantizationConfig: {load_in_4bit: true}\n")
    with pytest.raises(TuningError, match="method lora trains unquantized weights"):
        load_config("lora", lora, output_dir_given=True)
    with pytest.raises(TuningError, match="cannot read the training config"):
        load_config("qlora", tmp_path / "missing.yaml", output_dir_given=True)


def test_compute_dtype_and_precision_by_device(tmp_path):
    import torch

    from runtime.tuning import Device, sft_config

    cpu = Device(cuda=False, bf16=False, count=0, local_rank=0, world_size=1)
    v100 = Device(cuda=True, bf16=False, count=1, local_rank=0, world_size=1)
    a100 = Device(cuda=True, bf16=True, count=1, local_rank=0, world_size=1)
    assert cpu.compute_dtype("bfloat16") is torch.float32
    assert v100.compute_dtype("bfloat16") is torch.float16
    assert a100.compute_dtype("bfloat16") is torch.bfloat16
    sft, _ = sft_config({"bf16": True, "max_steps": 1}, {"mlm": True}, tmp_path, cpu, has_eval=False)
    assert sft.use_cpu and not sft.bf16 and not sft.fp16 and sft.output_dir == str(tmp_path)


def test_progress_writer_is_atomic_and_readable(tmp_path):
    path = tmp_path / "p" / "progress.json"
    lines = []
    w = ProgressWriter(path, logger=lambda ev, **kw: lines.append((ev, kw)), model="m")
    w.phase("training", total_steps=10)
    w.add_loss(1, 2.5)
    w.update(step=1, loss=2.5)
    assert read_progress(path)["history"] == [[1, 2.5]] and read_progress(path)["model"] == "m"
    w.failed("CUDA ran out of GPU memory")
    p = read_progress(path)
    assert p["state"] == FAILED and "out of GPU memory" in p["error"]
    assert [p.name for p in path.parent.iterdir()] == ["progress.json"]  # no temp files left
    assert lines[-1][0] == "failed" and lines[-1][1]["level"] == "error"
    assert read_progress(tmp_path / "none.json") is None


def test_failure_messages_and_target_modules():
    import torch

    from runtime.tuning import failure_message, lora_config

    msg = failure_message(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert "per_device_train_batch_size" in msg and "max_length" in msg and "qlora" in msg
    assert "gradient_checkpointing" in msg and "Tried to allocate" in msg
    assert failure_message(ValueError("boom")) == "ValueError: boom"
    cfg, source = lora_config({"r": 4, "target_modules": "q_proj, v_proj"}, ("x",))
    assert sorted(cfg.target_modules) == ["q_proj", "v_proj"] and source == "LoraConfig.target_modules"
    cfg, source = lora_config({"r": 4}, ("phi-3-mini-4k-instruct",))
    assert source == "the model catalog" and "gate_up_proj" in cfg.target_modules
    cfg, source = lora_config({"r": 4}, ("/models/local",))
    assert cfg.target_modules is None and source.startswith("PEFT's default")
