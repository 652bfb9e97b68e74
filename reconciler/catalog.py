"""The model preset catalog and the GPU SKU catalog, read from the shipped data files.

Data lives in `presets/models/*.yaml` (one file per family) and `presets/gpus.yaml`,
shipped inside the wheel (reconciler/_data) and read with importlib.resources.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable

from ruamel.yaml import YAML

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Architecture:
    name: str
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    max_context: int
    vocab_size: int
    # DeepSeek-style multi-head latent attention caches a compressed KV per layer.
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    experts: int = 0
    experts_per_token: int = 0

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token at 16-bit, summed over layers (whole model, unsharded)."""
        if self.kv_lora_rank:
            return 2 * self.layers * (self.kv_lora_rank + self.qk_rope_head_dim)
        return 2 * self.layers * 2 * self.kv_heads * self.head_dim


@dataclass(frozen=True, slots=True)
class Tuning:
    supported: bool = False
    target_modules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Model:
    name: str  # the preset name users write (lower-case)
    family: str
    huggingface: str  # Hugging Face repo id
    parameters_b: float  # billions of parameters
    weights_gib: float  # size of the weight files as published
    dtype: str  # bfloat16 | float16 | float32
    quantization: str | None  # None | fp8 | mxfp4 | awq ...
    architecture: Architecture
    gated: bool = False
    deprecated: bool = False  # still served, with a warning
    rejected: bool = False  # Kaito refuses it outright (phi-2)
    deprecation_note: str = ""
    aliases: tuple[str, ...] = ()
    tuning: Tuning = field(default_factory=Tuning)
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    min_compute_capability: float = 0.0
    sources: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def served_name(self) -> str:
        """What clients pass as `model`: the lower-cased repo basename, as Kaito serves it."""
        return self.huggingface.rsplit("/", 1)[-1].lower()

    @property
    def disk_gib(self) -> int:
        """OS disk for a node that downloads these weights: weights + 80 GiB (Kaito's rule), rounded to 10."""
        need = self.weights_gib + 80
        return int(-(-need // 10) * 10)


@dataclass(frozen=True, slots=True)
class Sku:
    name: str
    gpu: str
    gpu_count: int
    gpu_memory_gib: float  # per GPU
    compute_capability: float
    bf16: bool
    nvme: bool
    vcpus: int
    memory_gib: float  # host RAM
    price_per_hour: float | None
    retired: bool = False
    note: str = ""
    price_region: str = ""  # set when the price is not from the catalog's default region
    aliases: tuple[str, ...] = ()
    vendor: str = "nvidia"
    family: str = ""  # the vCPU quota family (presets/gpus.yaml `families`)
    arm_name: str = ""  # the size as ARM names it, when Kaito's name differs

    @property
    def vm_size(self) -> str:
        """What an AKS agent pool's vmSize must say."""
        return self.arm_name or self.name


@dataclass
class Catalog:
    models: dict[str, Model]
    skus: dict[str, Sku]
    price_basis: dict
    _models_by_key: dict[str, Model] = field(init=False, repr=False)
    _skus_by_key: dict[str, Sku] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._models_by_key = {}
        for m in self.models.values():
            for key in (m.name, m.huggingface, *m.aliases):
                self._models_by_key[key.lower()] = m
        self._skus_by_key = {}
        for s in self.skus.values():
            for key in (s.name, *s.aliases):
                self._skus_by_key[key.lower()] = s

    # -- models -------------------------------------------------------------
    def model(self, name: str) -> Model | None:
        return self._models_by_key.get((name or "").strip().lower())

    def suggest_model(self, name: str) -> list[str]:
        names = sorted(m.name for m in self.models.values() if not m.deprecated)
        return difflib.get_close_matches((name or "").lower(), names, n=3, cutoff=0.6)

    # -- skus ---------------------------------------------------------------
    def sku(self, name: str) -> Sku | None:
        return self._skus_by_key.get((name or "").strip().lower())

    def suggest_sku(self, name: str) -> list[str]:
        names = sorted(s.name for s in self.skus.values() if not s.retired)
        lowered = {n.lower(): n for n in names}
        hits = difflib.get_close_matches((name or "").lower(), list(lowered), n=3, cutoff=0.75)
        return [lowered[h] for h in hits]


GFD_PRODUCT, GFD_COUNT, GFD_MEMORY = "nvidia.com/gpu.product", "nvidia.com/gpu.count", "nvidia.com/gpu.memory"
GFD_CC_MAJOR, GFD_CC_MINOR = "nvidia.com/cuda.compute.major", "nvidia.com/cuda.compute.minor"
BYO_PREFIX = "byo:"  # names of Skus read from node labels rather than the catalog


def sku_from_gpu_labels(labels: dict[str, str]) -> Sku | None:
    """What a bring-your-own node offers, from NVIDIA GPU feature discovery's labels (Kaito's rule).

    `nvidia.com/gpu.memory` is MiB per GPU. None when a required label is missing or malformed.
    """
    try:
        product = labels[GFD_PRODUCT]
        count = int(labels[GFD_COUNT])
        memory_gib = round(int(labels[GFD_MEMORY]) / 1024)
    except (KeyError, ValueError):
        return None
    try:
        cc = float(f"{int(labels[GFD_CC_MAJOR])}.{int(labels[GFD_CC_MINOR])}")
    except (KeyError, ValueError):
        cc = 8.0 if any(g in product.upper() for g in ("A100", "A10", "H100", "H200", "L4", "L40")) else 7.0
    return Sku(
        name=f"{BYO_PREFIX}{product}",
        gpu=product,
        gpu_count=count,
        gpu_memory_gib=memory_gib,
        compute_capability=cc,
        bf16=cc >= 8.0,
        nvme=False,
        vcpus=0,
        memory_gib=0,
        price_per_hour=None,
    )


def _data_root() -> Traversable:
    return resources.files("reconciler") / "_data"


def _read_yaml(node: Traversable):
    return YAML(typ="safe").load(node.read_text(encoding="utf-8"))


def _model_from(family: str, raw: dict) -> Model:
    a = raw["architecture"]
    arch = Architecture(
        name=a["name"],
        layers=int(a["layers"]),
        hidden_size=int(a["hidden_size"]),
        attention_heads=int(a["attention_heads"]),
        kv_heads=int(a["kv_heads"]),
        head_dim=int(a.get("head_dim") or a["hidden_size"] // a["attention_heads"]),
        max_context=int(a["max_context"]),
        vocab_size=int(a["vocab_size"]),
        kv_lora_rank=int(a.get("kv_lora_rank", 0)),
        qk_rope_head_dim=int(a.get("qk_rope_head_dim", 0)),
        experts=int(a.get("experts", 0)),
        experts_per_token=int(a.get("experts_per_token", 0)),
    )
    t = raw.get("tuning") or {}
    sg = raw.get("sglang") or {}
    return Model(
        name=raw["name"].lower(),
        family=family,
        huggingface=raw["huggingface"],
        parameters_b=float(raw["parameters_b"]),
        weights_gib=float(raw["weights_gib"]),
        dtype=raw.get("dtype", "bfloat16"),
        quantization=raw.get("quantization"),
        architecture=arch,
        gated=bool(raw.get("gated", False)),
        deprecated=bool(raw.get("deprecated", False)),
        rejected=bool(raw.get("rejected", False)),
        deprecation_note=raw.get("deprecation_note", ""),
        aliases=tuple(raw.get("aliases", ())),
        tuning=Tuning(bool(t.get("supported", False)), tuple(t.get("target_modules", ()))),
        tool_call_parser=sg.get("tool_call_parser"),
        reasoning_parser=sg.get("reasoning_parser"),
        min_compute_capability=float(raw.get("min_compute_capability", 0.0)),
        sources=dict(raw.get("sources", {})),
    )


def _sku_from(raw: dict, family: str = "") -> Sku:
    return Sku(
        name=raw["name"],
        gpu=raw["gpu"],
        gpu_count=int(raw["gpu_count"]),
        gpu_memory_gib=float(raw["gpu_memory_gib"]),
        compute_capability=float(raw.get("compute_capability") or 0.0),
        bf16=bool(raw.get("bf16", False)),
        nvme=bool(raw.get("nvme", False)),
        vcpus=int(raw.get("vcpus", 0)),
        memory_gib=float(raw.get("memory_gib", 0)),
        price_per_hour=raw.get("price_per_hour"),
        retired=bool(raw.get("retired", False)),
        note=raw.get("note", ""),
        price_region=raw.get("price_region", ""),
        aliases=tuple(raw.get("aliases", ())),
        vendor=raw.get("vendor", "nvidia"),
        family=family,
        arm_name=raw.get("azure_name", ""),
    )


@functools.cache
def load_catalog() -> Catalog:
    root = _data_root() / "presets"
    models: dict[str, Model] = {}
    for entry in sorted((root / "models").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        doc = _read_yaml(entry)
        for raw in doc["models"]:
            m = _model_from(doc["family"], raw)
            if m.name in models:
                raise ValueError(f"preset {m.name} is defined twice (second time in {entry.name})")
            models[m.name] = m
    gpus = _read_yaml(root / "gpus.yaml")
    family_of = {sku: fam for fam, names in (gpus.get("families") or {}).items() for sku in names}
    skus = {s["name"]: _sku_from(s, family_of.get(s["name"], "")) for s in gpus["skus"]}
    unknown = set(family_of) - set(skus)
    if unknown:
        raise ValueError(f"gpus.yaml families name sizes it does not list: {', '.join(sorted(unknown))}")
    return Catalog(models=models, skus=skus, price_basis=dict(gpus.get("prices", {})))


def schema_text() -> str:
    return (_data_root() / "schema" / "workspace.schema.json").read_text(encoding="utf-8")


def settings_schema_text() -> str:
    return (_data_root() / "schema" / "kaito-gitops.schema.json").read_text(encoding="utf-8")
