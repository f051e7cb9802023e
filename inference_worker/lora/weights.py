"""Load a PEFT adapter's tensors and map them onto the base model's projections.

PEFT saves `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in] and
`...lora_B.weight` [out, r]; here they become `(layer, "q_proj") -> (A [r, in], B*scaling [out, r])`
with the per-module scaling of `PeftLoRAConfig` folded into B, checked against the base model.

The files are untrusted input: they are read through their resolved paths inside the adapter directory
(`adapter_format.files`), a malformed safetensors header is an AdapterLoadError, and every tensor must
be of a floating dtype with finite values, before and after scaling into the serving dtype (a NaN or
Inf factor would silently turn every answer of the adapter into empty text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from loraplane.adapter_format.errors import AdapterLoadError
from loraplane.adapter_format.files import adapter_files, is_safetensors
from loraplane.adapter_format.modules import MODULE_PARENTS, module_key
from loraplane.adapter_format.peft_config import PeftLoRAConfig

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<kind>lora_A|lora_B)(?:\.[\w-]+)?\.weight$")
# (layer, PEFT module name) -> (lora_A, lora_B)
Factors = dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]
_LAYER_MODULE = re.compile(r"^model\.layers\.(?P<layer>\d+)\.(?P<parent>self_attn|mlp)\.(?P<name>\w+)$")


@dataclass(frozen=True)
class BaseModelShapes:
    """What an adapter must fit: layer count and (in_features, out_features) per PEFT module name."""

    num_layers: int
    modules: dict[str, tuple[int, int]]


@dataclass
class AdapterWeights:
    """One adapter's LoRA factors on the host, ready to copy into a GPU slot.

    Shape: `modules[(layer, name)] = (A [r_m, in], B [out, r_m])` with B already scaled; `rank` is
    the largest r_m (the work a slot does for this adapter).
    """

    version: str
    rank: int
    modules: Factors

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.modules.values())

    def pin_memory(self) -> AdapterWeights:
        pinned = {k: (a.pin_memory(), b.pin_memory()) for k, (a, b) in self.modules.items()}
        return AdapterWeights(self.version, self.rank, pinned)


def load_adapter_weights(
    adapter_dir: Path,
    config: PeftLoRAConfig,
    shapes: BaseModelShapes,
    max_lora_rank: int,
    dtype: torch.dtype,
    version: str,
) -> AdapterWeights:
    """Read, map, check and scale an adapter's tensors (AdapterLoadError names the field/module)."""
    _, weights_file = adapter_files(adapter_dir)
    pairs = _pair_tensors(_read_tensors(*weights_file))
    modules = {}
    for (layer, name), (a, b) in pairs.items():
        key = module_key(layer, name)
        _check_pair(key, name, layer, a, b, config, shapes, max_lora_rank)
        scaled_b = (b.float() * config.scaling_for(key)).to(dtype).contiguous()
        a = a.to(dtype).contiguous()
        for kind, tensor in (("lora_A", a), ("lora_B", scaled_b)):
            if not bool(torch.isfinite(tensor).all()):
                raise AdapterLoadError(
                    f"{key}.{kind} overflows {dtype} once scaled by lora_alpha/r; retrain or rescale it",
                    field="weights",
                )
        modules[(layer, name)] = (a, scaled_b)
    _check_complete(modules, config, shapes.num_layers)
    rank = max((a.shape[0] for a, _ in modules.values()), default=0)
    return AdapterWeights(version=version, rank=rank, modules=modules)


def _read_tensors(name: str, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of weight file `name` (resolved to `path`); any reader failure is AdapterLoadError."""
    try:
        if is_safetensors(name):
            from safetensors.torch import load_file

            tensors = load_file(str(path), device="cpu")
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means a corrupt file; say which
        raise AdapterLoadError(f"cannot read adapter weights {name}: {exc}", field="weights") from exc
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise AdapterLoadError(f"{name} does not hold a mapping of tensor names to tensors", "weights")
    return tensors


def _check_values(key: str, tensor: torch.Tensor) -> None:
    """A LoRA factor is a floating-point tensor of finite values; AdapterLoadError names the tensor."""
    if not tensor.is_floating_point():
        raise AdapterLoadError(
            f"tensor {key!r} has dtype {str(tensor.dtype).removeprefix('torch.')}; LoRA factors must be "
            "floating point (float32, float16 or bfloat16)",
            field="weights",
        )
    if not bool(torch.isfinite(tensor.float()).all()):
        raise AdapterLoadError(f"tensor {key!r} holds NaN or Inf values", field="weights")


def _pair_tensors(
    tensors: dict[str, torch.Tensor],
) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    found: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise AdapterLoadError(
                f"unsupported tensor {key!r} in the adapter (only lora_A/lora_B weights of linear "
                "projections are served; DoRA magnitudes, embeddings and full modules are not)",
                field="weights",
            )
        module = _LAYER_MODULE.match(match["module"])
        if module is None or MODULE_PARENTS.get(module["name"]) != module["parent"]:
            raise AdapterLoadError(
                f"tensor {key!r} targets {match['module']!r}, which cannot carry a LoRA here; supported: "
                f"{', '.join(MODULE_PARENTS)} inside model.layers.N",
                field="target_modules",
            )
        _check_values(key, tensor)
        found.setdefault((int(module["layer"]), module["name"]), {})[match["kind"]] = tensor
    for (layer, name), parts in found.items():
        if set(parts) != {"lora_A", "lora_B"}:
            raise AdapterLoadError(f"{module_key(layer, name)} has {sorted(parts)} but needs both", "weights")
    return {k: (v["lora_A"], v["lora_B"]) for k, v in found.items()}


def _check_pair(
    key: str,
    name: str,
    layer: int,
    a: torch.Tensor,
    b: torch.Tensor,
    config: PeftLoRAConfig,
    shapes: BaseModelShapes,
    max_lora_rank: int,
) -> None:
    if layer >= shapes.num_layers:
        raise AdapterLoadError(f"{key}: the base model has only {shapes.num_layers} layers", field="shape")
    if not config.targets(key):
        raise AdapterLoadError(f"{key} has weights but adapter_config does not target it", "target_modules")
    in_features, out_features = shapes.modules[name]
    rank = a.shape[0] if a.dim() == 2 else -1
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != in_features or tuple(b.shape) != (out_features, rank):
        raise AdapterLoadError(
            f"{key}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not fit the base model's "
            f"{name} [{out_features}, {in_features}] (expected A [r, {in_features}], B [{out_features}, r]); "
            "was the adapter trained for another base model?",
            field="shape",
        )
    expected = config.rank_for(key)
    if rank != expected:
        field = "rank_pattern" if config.rank_pattern else "r"
        raise AdapterLoadError(f"{key}: tensors have rank {rank} but adapter_config says {expected}", field)
    if rank > max_lora_rank:
        raise AdapterLoadError(f"{key}: rank {rank} exceeds max_lora_rank {max_lora_rank}", field="r")


def _check_complete(modules: Factors, config: PeftLoRAConfig, num_layers: int) -> None:
    for layer in range(num_layers):
        for name in MODULE_PARENTS:
            if config.targets(module_key(layer, name)) and (layer, name) not in modules:
                raise AdapterLoadError(
                    f"{module_key(layer, name)} is targeted by adapter_config but has no weights "
                    "(truncated or mismatched adapter file?)",
                    field="weights",
                )
