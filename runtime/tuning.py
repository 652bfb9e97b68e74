"""`python -m runtime.tuning`: QLoRA / LoRA tuning with TRL's SFTTrainer, Kaito's config format.

    python -m runtime.tuning --model M --method qlora|lora --config PATH [--data-dir /mnt/data]
        [--output-dir DIR] [--download-dir DIR] [--progress-file PATH]
        [--push-image REF --docker-config PATH --model-name NAME] [--insecure]

`--config` is Kaito's training_config.yaml (sections ModelConfig, QuantizationConfig, LoraConfig,
TrainingArguments, DatasetConfig, DataCollator), merged over the method's defaults by
`reconciler.configs.merge_training_config`. QLoRA loads the base in 4-bit NF4 (bitsandbytes, double
quantisation) and runs `prepare_model_for_kbit_training`; LoRA loads it unquantised. The compute
dtype is bf16 only where the GPU supports it, else fp16 on a GPU and fp32 on the CPU.

`--model` is a local folder or a Hugging Face id; downloads go to `--download-dir` (HF_HOME) and
HF_HUB_OFFLINE=1 is respected. With several GPUs the command re-runs itself under
`accelerate launch` (unless it already runs under a launcher).

Output: only the adapter (adapter_config.json, adapter_model.safetensors) in the output folder,
then Kaito's marker fine_tuning_completed.txt, then the push of `--push-image` (runtime.oci).
Progress: runtime.progress (file + JSON log lines on stdout). Exit codes: 0 done, 1 failed (the
progress file is Failed and says why), 2 usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .progress import ProgressWriter, log_line, progress_path
from .weights import canonical_dtype

COMPLETION_MARKER = "fine_tuning_completed.txt"
PROGRESS_NAME = "progress.json"

MODEL_KEYS = {
    "pretrained_model_name_or_path",
    "revision",
    "torch_dtype",
    "dtype",
    "local_files_only",
    "device_map",
    "trust_remote_code",
    "attn_implementation",
    "low_cpu_mem_usage",
    "use_cache",
    "subfolder",
    "max_memory",
    "offload_folder",
    "cache_dir",
}
QUANT_KEYS = {
    "quant_method",
    "load_in_4bit",
    "load_in_8bit",
    "llm_int8_threshold",
    "llm_int8_skip_modules",
    "llm_int8_enable_fp32_cpu_offload",
    "llm_int8_has_fp16_weight",
    "bnb_4bit_compute_dtype",
    "bnb_4bit_quant_type",
    "bnb_4bit_use_double_quant",
    "bnb_4bit_quant_storage",
}
COLLATOR_KEYS = {"mlm", "mlm_probability", "pad_to_multiple_of", "return_tensors"}
TRAINING_ALIASES = {"max_seq_length": "max_length"}  # TRL < 0.20 name
OOM_HINT = (
    "CUDA ran out of GPU memory. Try a smaller TrainingArguments.per_device_train_batch_size (with "
    "gradient_accumulation_steps to keep the effective batch), a smaller max_length, method qlora "
    "(4-bit base weights), gradient_checkpointing: true, or a larger GPU / more GPUs."
)


class TuningError(RuntimeError):
    """Tuning cannot go on; the message says why and what to change."""


@dataclass
class Options:
    model: str
    method: str
    config: Path
    data_dir: Path
    output_dir: Path | None
    download_dir: Path | None
    push_image: str | None
    docker_config: list[str]
    model_name: str | None
    progress_file: Path | None
    insecure: bool


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runtime.tuning", description="QLoRA/LoRA tuning (Kaito's format)."
    )
    p.add_argument("--model", required=True, help="a local model folder or a Hugging Face repo id")
    p.add_argument("--method", choices=("qlora", "lora"), default="qlora")
    p.add_argument("--config", required=True, help="training_config.yaml")
    p.add_argument("--data-dir", default="/mnt/data")
    p.add_argument("--output-dir", help="where the adapter goes (default: TrainingArguments.output_dir)")
    p.add_argument("--download-dir", help="Hugging Face cache (HF_HOME) for downloaded weights")
    p.add_argument("--push-image", help="push the adapter to this image reference when done")
    p.add_argument(
        "--docker-config",
        action="append",
        default=[],
        metavar="PATH",
        help="dockerconfigjson with credentials for --push-image",
    )
    p.add_argument("--model-name", help="the preset name, written as sh.kaito.model.name on the image")
    p.add_argument(
        "--progress-file",
        help=f"progress JSON (default: env KAITO_PROGRESS_FILE, else <output>/{PROGRESS_NAME})",
    )
    p.add_argument("--insecure", action="store_true", help="push over plain http (automatic for 127.0.0.1)")
    return p


def parse_options(argv: list[str] | None) -> Options:
    a = parser().parse_args(argv)
    return Options(
        model=a.model,
        method=a.method,
        config=Path(a.config),
        data_dir=Path(a.data_dir),
        output_dir=Path(a.output_dir) if a.output_dir else None,
        download_dir=Path(a.download_dir) if a.download_dir else None,
        push_image=a.push_image,
        docker_config=a.docker_config,
        model_name=a.model_name,
        progress_file=progress_path(a.progress_file),
        insecure=a.insecure,
    )


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


def load_config(method: str, path: Path, output_dir_given: bool) -> dict:
    """The merged training_config (sections as dicts). Raises TuningError on config errors."""
    from reconciler.configs import merge_training_config
    from reconciler.findings import Severity

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TuningError(f"cannot read the training config {path}: {e.strerror or e}") from None
    merged = merge_training_config(method, text, source=str(path))
    errors = [
        i
        for i in merged.issues
        if i.severity is Severity.ERROR and not (output_dir_given and i.rule == "tuning-config-output-dir")
    ]
    if errors:
        lines = [f"{'.'.join(map(str, i.path)) or path.name}: {i.message} [{i.rule}]" for i in errors]
        raise TuningError(f"{path}: " + "; ".join(lines))
    return merged.config["training_config"]


def _unknown(section: str, given: dict, known: set[str]) -> None:
    bad = sorted(set(given) - known)
    if bad:
        hints = []
        for b in bad:
            near = difflib.get_close_matches(b, sorted(known), n=1)
            hints.append(f"{b} (did you mean {near[0]}?)" if near else b)
        raise TuningError(f"{section} has unknown key(s): {', '.join(hints)}")


def _dtype(name: Any):
    import torch

    if name is None or name == "auto" or isinstance(name, torch.dtype):
        return name
    key = canonical_dtype(name)
    if key not in ("bfloat16", "float16", "float32"):
        raise TuningError(f"unknown dtype {name!r}; use bfloat16, float16 or float32")
    return getattr(torch, key)


@dataclass
class Device:
    cuda: bool
    bf16: bool
    count: int
    local_rank: int
    world_size: int

    def compute_dtype(self, requested: Any):
        """bf16 only where supported, else fp16 on a GPU, fp32 on the CPU."""
        import torch

        want = _dtype(requested)
        if not self.cuda:
            return torch.float32
        if want in (None, "auto"):
            return torch.bfloat16 if self.bf16 else torch.float16
        if want is torch.bfloat16 and not self.bf16:
            return torch.float16
        return want


def detect_device() -> Device:
    import torch

    cuda = torch.cuda.is_available()
    bf16 = bool(cuda and torch.cuda.is_bf16_supported())
    return Device(
        cuda=cuda,
        bf16=bf16,
        count=torch.cuda.device_count() if cuda else 0,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )


def quantization_config(q: dict, method: str, device: Device):
    """BitsAndBytesConfig for qlora (4-bit NF4 by default), None for lora."""
    _unknown("QuantizationConfig", q, QUANT_KEYS)
    four, eight = q.get("load_in_4bit") is True, q.get("load_in_8bit") is True
    if method == "lora" or not (four or eight):
        return None
    from transformers import BitsAndBytesConfig

    kw = {k: v for k, v in q.items() if k != "quant_method" and v is not None}
    if "bnb_4bit_compute_dtype" in kw or four:
        kw["bnb_4bit_compute_dtype"] = device.compute_dtype(kw.get("bnb_4bit_compute_dtype", "bfloat16"))
    if "bnb_4bit_quant_storage" in kw:
        kw["bnb_4bit_quant_storage"] = _dtype(kw["bnb_4bit_quant_storage"])
    try:
        return BitsAndBytesConfig(**kw)
    except (TypeError, ValueError) as e:
        raise TuningError(f"QuantizationConfig: {e}") from None


def sft_config(ta: dict, collator: dict, output_dir: Path, device: Device, has_eval: bool):
    """TRL SFTConfig from TrainingArguments (unknown keys are an error), fitted to the device."""
    from trl import SFTConfig

    ta = dict(ta)
    for old, new in TRAINING_ALIASES.items():
        if old in ta and new not in ta:
            ta[new] = ta.pop(old)
    known = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    _unknown("TrainingArguments", ta, known)
    _unknown("DataCollator", collator, COLLATOR_KEYS)
    notes = []
    ta["output_dir"] = str(output_dir)
    ta.setdefault("report_to", "none")
    ta.setdefault("save_strategy", "no")
    ta.setdefault("disable_tqdm", True)
    if collator.get("pad_to_multiple_of") is not None:
        ta.setdefault("pad_to_multiple_of", collator["pad_to_multiple_of"])
    # DataCollator.mlm (Kaito's template says true) does not apply: causal LMs train with mlm off.
    if not device.cuda:
        if ta.get("bf16") or ta.get("fp16"):
            notes.append("bf16/fp16 mixed precision is off on the CPU (fp32)")
        ta.update(use_cpu=True, bf16=False, fp16=False)
    elif not device.bf16 and ta.get("bf16") is not False:
        if ta.get("bf16"):
            notes.append("this GPU has no bf16; using fp16 mixed precision")
        ta["bf16"] = False
        ta.setdefault("fp16", True)
    if not has_eval and ta.get("eval_strategy", "no") != "no":
        notes.append("eval_strategy needs DatasetConfig.train_test_split < 1; evaluation is off")
        ta["eval_strategy"] = "no"
    try:
        return SFTConfig(**ta), notes
    except (TypeError, ValueError) as e:
        raise TuningError(f"TrainingArguments: {e}") from None


def check_config(cfg: dict) -> None:
    """Unknown keys in any section are errors, before anything slow happens."""
    from peft import LoraConfig
    from trl import SFTConfig

    from .dataset import DataError, check_dataset_config

    ta = {TRAINING_ALIASES.get(k, k): v for k, v in (cfg.get("TrainingArguments") or {}).items()}
    _unknown("TrainingArguments", ta, {f.name for f in dataclasses.fields(SFTConfig) if f.init})
    _unknown("ModelConfig", cfg.get("ModelConfig") or {}, MODEL_KEYS)
    _unknown("QuantizationConfig", cfg.get("QuantizationConfig") or {}, QUANT_KEYS)
    _unknown(
        "LoraConfig", cfg.get("LoraConfig") or {}, {f.name for f in dataclasses.fields(LoraConfig) if f.init}
    )
    _unknown("DataCollator", cfg.get("DataCollator") or {}, COLLATOR_KEYS)
    try:
        check_dataset_config(cfg.get("DatasetConfig") or {})
    except DataError as e:
        raise TuningError(str(e)) from None


def catalog_target_modules(*names: str | None) -> list[str] | None:
    try:
        from reconciler.catalog import load_catalog

        cat = load_catalog()
    except Exception:
        return None
    for n in names:
        m = cat.model(n) if n else None
        if m is not None and m.tuning.target_modules:
            return list(m.tuning.target_modules)
    return None


def lora_config(lc: dict, model_names: tuple[str | None, ...]):
    from peft import LoraConfig

    kw = dict(lc)
    source = "LoraConfig.target_modules"
    tm = kw.get("target_modules")
    if isinstance(tm, str) and "," in tm and not any(c in tm for c in "^$*+?()[]|\\"):
        kw["target_modules"] = [t.strip() for t in tm.split(",") if t.strip()]  # "q_proj,v_proj"
    if not kw.get("target_modules"):
        env = os.environ.get("DEFAULT_TARGET_MODULES")
        cat = catalog_target_modules(*model_names)
        if env:
            kw["target_modules"], source = (
                [s.strip() for s in env.split(",") if s.strip()],
                "DEFAULT_TARGET_MODULES",
            )
        elif cat:
            kw["target_modules"], source = cat, "the model catalog"
        else:
            kw.pop("target_modules", None)
            source = "PEFT's default for the architecture"
    kw.setdefault("task_type", "CAUSAL_LM")
    known = {f.name for f in dataclasses.fields(LoraConfig) if f.init}
    _unknown("LoraConfig", kw, known)
    try:
        return LoraConfig(**kw), source
    except (TypeError, ValueError) as e:
        raise TuningError(f"LoraConfig: {e}") from None


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


def resolve_model(model: str, revision: str | None, trust_remote_code: bool) -> Path:
    """A local folder as is; a Hugging Face id from the cache, else downloaded (runtime.weights)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from . import weights

    try:
        return weights.resolve_model(model, revision, progress=False, trust_remote_code=trust_remote_code)
    except weights.WeightsNotFound as e:
        if isinstance(e.__cause__, GatedRepoError):  # a subclass of RepositoryNotFoundError: first
            raise TuningError(
                f"{model} is gated on Hugging Face: accept its license and give the workspace a token "
                "(modelAccessSecret / HF_TOKEN)"
            ) from None
        if isinstance(e.__cause__, RepositoryNotFoundError):
            raise TuningError(
                f"{model} is neither a local folder nor a Hugging Face model this token can see"
            ) from None
        raise TuningError(str(e)) from None


def load_model(path: Path, mc: dict, bnb, device: Device, gradient_checkpointing: bool):
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _unknown("ModelConfig", mc, MODEL_KEYS)
    trust = bool(mc.get("trust_remote_code", False))
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dtype = device.compute_dtype(mc.get("dtype", mc.get("torch_dtype", "bfloat16")))
    if not device.cuda:
        device_map: Any = {"": "cpu"}
    elif device.world_size > 1:
        device_map = {"": device.local_rank}
    else:
        device_map = mc.get("device_map", "auto")
    kw: dict[str, Any] = {"dtype": dtype, "device_map": device_map, "trust_remote_code": trust}
    for k in ("attn_implementation", "low_cpu_mem_usage", "max_memory", "offload_folder", "subfolder"):
        if mc.get(k) is not None:
            kw[k] = mc[k]
    if bnb is not None:
        kw["quantization_config"] = bnb
    model = AutoModelForCausalLM.from_pretrained(str(path), **kw)
    model.config.use_cache = False
    if bnb is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return model, tok


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def _is_oom(e: BaseException) -> bool:
    try:
        import torch

        if isinstance(e, torch.OutOfMemoryError):
            return True
    except Exception:
        pass
    return "out of memory" in str(e).lower() and "cuda" in str(e).lower()


def failure_message(e: BaseException) -> str:
    """What the progress file and the log say about an unexpected exception."""
    first = (str(e).splitlines() or [""])[0][:300]
    if _is_oom(e):
        return f"{OOM_HINT} ({first})"
    return f"{type(e).__name__}: {str(e)[:1000]}"


def save_adapter(model, output_dir: Path) -> list[str]:
    output_dir.mkdir(parents=True, exist_ok=True)
    had_readme = (output_dir / "README.md").exists()
    model.save_pretrained(str(output_dir), safe_serialization=True)
    if not had_readme:
        (output_dir / "README.md").unlink(missing_ok=True)  # PEFT's model card; only the adapter is kept
    files = ["adapter_config.json", "adapter_model.safetensors"]
    for f in files:
        if not (output_dir / f).is_file():
            raise TuningError(f"saving the adapter did not write {output_dir / f}")
        os.chmod(output_dir / f, 0o644)  # safetensors writes 0600; the inference pod may run as another user
    return files


def run(opts: Options, progress: ProgressWriter) -> dict:
    """Tune and save (and push). Returns the fields of the final progress."""
    t0 = time.monotonic()
    main_process = int(os.environ.get("RANK", "0")) == 0
    cfg = load_config(opts.method, opts.config, opts.output_dir is not None)
    ta = dict(cfg.get("TrainingArguments") or {})
    output_dir = opts.output_dir or Path("/mnt") / str(
        ta.get("output_dir", "/mnt/results")
    )  # relative: under /mnt
    output_dir.mkdir(parents=True, exist_ok=True)
    if progress.path is None:
        progress.path = output_dir / PROGRESS_NAME

    progress.phase("checking config")
    check_config(cfg)
    progress.phase("loading data", data_dir=str(opts.data_dir))
    from .dataset import DataError, load_training_data

    try:
        data = load_training_data(opts.data_dir, cfg.get("DatasetConfig") or {}, log=log_line)
    except DataError as e:
        raise TuningError(f"bad training data: {e}") from None
    log_line(
        "data_loaded",
        rows=len(data.train),
        eval_rows=len(data.eval) if data.eval is not None else 0,
        form=data.form,
        files=[str(f) for f in data.files],
    )

    device = detect_device()
    sft, notes = sft_config(ta, cfg.get("DataCollator") or {}, output_dir, device, data.eval is not None)
    for n in notes:
        log_line("config_note", level="warning", note=n)
    bnb = quantization_config(cfg.get("QuantizationConfig") or {}, opts.method, device)
    lcfg, target_source = lora_config(cfg.get("LoraConfig") or {}, (opts.model_name, opts.model))
    mc = dict(cfg.get("ModelConfig") or {})
    model_ref = opts.model or mc.get("pretrained_model_name_or_path")
    if not model_ref:
        raise TuningError("no model: pass --model")

    progress.phase("loading model", model=opts.model, method=opts.method)
    path = resolve_model(model_ref, mc.get("revision"), bool(mc.get("trust_remote_code", False)))
    model, tok = load_model(path, mc, bnb, device, bool(sft.gradient_checkpointing))
    if data.form != "text" and not getattr(tok, "chat_template", None):
        raise TuningError(
            f"{model_ref} has no chat template, so conversational data cannot be formatted; use a chat model "
            "or plain text data (a 'text' column)"
        )
    log_line(
        "model_loaded",
        model=str(model_ref),
        method=opts.method,
        quantization=bnb.quant_method if bnb else None,
        quant_type=getattr(bnb, "bnb_4bit_quant_type", None) if bnb and bnb.load_in_4bit else None,
        dtype=str(model.dtype),
        device="cuda" if device.cuda else "cpu",
        gpus=device.count,
    )

    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    from .progress import make_callback

    try:
        trainer = SFTTrainer(
            model=model,
            args=sft,
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tok,
            peft_config=lcfg,
            callbacks=[make_callback(progress)],
        )
    except ValueError as e:
        raise TuningError(f"cannot set up training: {e}") from None
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    peft_cfg = getattr(trainer.model, "peft_config", {}).get("default")
    modules = sorted(peft_cfg.target_modules) if peft_cfg is not None and peft_cfg.target_modules else None
    log_line(
        "train_start",
        trainable_params=trainable,
        rows=len(data.train),
        target_modules=modules,
        target_modules_from=target_source,
    )
    t_train = time.monotonic()
    result = trainer.train()
    train_seconds = round(time.monotonic() - t_train, 3)
    if not main_process:
        return {}

    progress.phase("saving", output_dir=str(output_dir))
    files = save_adapter(trainer.model, output_dir)
    final = {
        "step": trainer.state.global_step,
        "total_steps": trainer.state.max_steps,
        "train_seconds": train_seconds,
        "train_loss": round(float(result.training_loss), 6),
        "output_dir": str(output_dir),
        "adapter_files": files,
    }
    (output_dir / COMPLETION_MARKER).write_text(
        f"fine-tuning completed: {trainer.state.global_step} steps in {train_seconds} s\n", encoding="utf-8"
    )
    if opts.push_image:
        from . import oci

        progress.phase("pushing", image=opts.push_image)
        t_push = time.monotonic()
        try:
            pushed = oci.push_adapter(
                opts.push_image,
                output_dir,
                opts.model_name or str(model_ref),
                opts.docker_config,
                True if opts.insecure else None,
            )
        except (oci.OCIError, OSError) as e:
            raise TuningError(f"the adapter was saved to {output_dir} but pushing it failed: {e}") from None
        final.update(
            image=pushed.image, digest=pushed.digest, push_seconds=round(time.monotonic() - t_push, 3)
        )
    final["total_seconds"] = round(time.monotonic() - t0, 3)
    return final


def _maybe_relaunch(argv: list[str]) -> None:
    """Several GPUs and no launcher yet: re-run under `accelerate launch`, one process per GPU."""
    if any(k in os.environ for k in ("LOCAL_RANK", "ACCELERATE_PROCESS_INDEX", "KAITO_NO_ACCELERATE")):
        return
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return
    if n > 1:
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "runtime.tuning", *argv,
        ]  # fmt: skip
        log_line("relaunch", gpus=n, command=" ".join(cmd[:12]))
        sys.stdout.flush()
        os.execv(sys.executable, cmd)


def _quiet() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
    except Exception:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_options(argv)
    if opts.push_image and not opts.model_name:
        opts.model_name = opts.model
    if opts.download_dir:
        os.environ["HF_HOME"] = str(opts.download_dir)  # before huggingface_hub is imported
        opts.download_dir.mkdir(parents=True, exist_ok=True)
    pf = opts.progress_file
    if pf is None:
        out = opts.output_dir
        pf = (out / PROGRESS_NAME) if out else None
    rank0 = int(os.environ.get("RANK", "0")) == 0
    progress = ProgressWriter(pf, enabled=rank0, model=opts.model, method=opts.method, image=opts.push_image)
    progress.phase("starting")
    _quiet()
    _maybe_relaunch(argv)
    try:
        final = run(opts, progress)
    except TuningError as e:
        progress.failed(str(e))
        return 1
    except KeyboardInterrupt:
        progress.failed("interrupted")
        return 1
    except Exception as e:  # the pod log and the progress file must say why
        if not _is_oom(e):
            import traceback

            traceback.print_exc(file=sys.stderr)
        progress.failed(failure_message(e))
        return 1
    if rank0:
        progress.succeeded(**final)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["COMPLETION_MARKER", "Options", "TuningError", "main", "run"]
