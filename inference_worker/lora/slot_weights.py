"""`SlotWeights`: the device side of the LoRA manager, where adapter weights meet the model.

It wraps the model's projections once (stacked A/B buffers of `max_loras` slots at `max_lora_rank`),
reads the base model's shapes from them, stages an adapter's weights for the device (`load`: read,
check and scale on CPU, pinned when the device is CUDA so the slot copy is asynchronous) and copies
them into a slot (`fill`). It holds no bookkeeping: `LoRAManager` decides what goes where, under its
lock; `SlotTable` says which version owns which slot.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from loraplane.adapter_format import PeftLoRAConfig
from loraplane.inference_worker.lora.config import LoRAConfig
from loraplane.inference_worker.lora.layers import LoRALinear, wrap_lora_layers
from loraplane.inference_worker.lora.weights import AdapterWeights, BaseModelShapes, load_adapter_weights
from loraplane.kernels.lora_meta import LoRAKernelMeta


class SlotWeights:
    """The LoRA-wrapped projections of `model`, their per-slot ranks and the kernels' metadata.

    Semantics: after `fill(slot, weights)`, every wrapped projection's slot `slot` holds the adapter's
    factors (zeros for projections it does not target) and `slot_rank[slot]` its rank; `meta` is the
    preallocated per-step metadata the LoRA kernels read.
    Shape: slot_rank [max_loras] int32.
    """

    def __init__(
        self,
        config: LoRAConfig,
        model: nn.Module,
        device: torch.device | str,
        dtype: torch.dtype,
        max_num_tokens: int,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype if config.lora_dtype == "auto" else getattr(torch, config.lora_dtype)
        self.max_lora_rank = config.max_lora_rank
        self.layers = wrap_lora_layers(
            model, config.max_loras, config.max_lora_rank, self.dtype, self.device, config.target_modules
        )
        self.shapes = _base_shapes(self.layers)
        self.meta = LoRAKernelMeta(max_num_tokens, config.max_loras, self.device)
        self.slot_rank = torch.zeros(config.max_loras, dtype=torch.int32)

    def load(self, directory: Path, config: PeftLoRAConfig, version: str) -> AdapterWeights:
        """Read and check an adapter's weights against the model; pinned for an asynchronous copy on CUDA."""
        weights = load_adapter_weights(
            directory, config, self.shapes, self.max_lora_rank, self.dtype, version
        )
        return weights.pin_memory() if self.device.type == "cuda" else weights

    def fill(self, slot: int, weights: AdapterWeights) -> None:
        """Copy `weights` into `slot` of every wrapped projection (engine thread: CUDA graphs see it)."""
        for layer_index, modules in enumerate(self.layers):
            for module in modules:
                factors = {
                    name: weights.modules[(layer_index, name)]
                    for name in module.lora_names
                    if (layer_index, name) in weights.modules
                }
                module.set_slot(slot, factors)
        self.slot_rank[slot] = weights.rank


def _base_shapes(layers: list[list[LoRALinear]]) -> BaseModelShapes:
    modules = {}
    for module in layers[0]:
        for name, out_size in zip(module.lora_names, module.output_sizes, strict=True):
            modules[name] = (module.in_features, out_size)
    return BaseModelShapes(num_layers=len(layers), modules=modules)
