"""`LoRALinear`: a base projection plus per-token multi-LoRA deltas from stacked slot buffers."""

from __future__ import annotations

import torch
from torch import nn

from loraplane.inference_worker.context import get_context
from loraplane.kernels.lora_ops import add_lora


class LoRALinear(nn.Module):
    """Wraps one of the engine's linear layers (`in_features`, `output_sizes`, `lora_names`).

    Semantics: `forward(x) = base(x)`, plus for every token t with slot s = meta.slot(t) >= 0 and
    every output slice i: `x[t] @ lora_a[i][s].T @ lora_b[i][s].T` (scaling already in B). Buffers are
    allocated once at `max_lora_rank`; slot contents change in place so CUDA graphs stay valid. A slot
    whose adapter does not target slice i holds zeros there.
    Shape: lora_a[i] [max_loras, max_rank, in_features]; lora_b[i] [max_loras, output_sizes[i], max_rank].
    """

    def __init__(
        self, base: nn.Module, max_loras: int, max_rank: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        self.base = base
        self.in_features = base.in_features
        self.output_sizes = list(base.output_sizes)
        self.lora_names = list(base.lora_names)
        self.lora_a: list[torch.Tensor] = []
        self.lora_b: list[torch.Tensor] = []
        for i, out_size in enumerate(self.output_sizes):
            a = torch.zeros(max_loras, max_rank, self.in_features, dtype=dtype, device=device)
            b = torch.zeros(max_loras, out_size, max_rank, dtype=dtype, device=device)
            self.register_buffer(f"lora_a_{i}", a, persistent=False)
            self.register_buffer(f"lora_b_{i}", b, persistent=False)
            self.lora_a.append(a)
            self.lora_b.append(b)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        meta = get_context().lora_meta
        if meta is not None and meta.has_lora:
            add_lora(
                out.view(-1, out.shape[-1]), x.reshape(-1, self.in_features), self.lora_a, self.lora_b, meta
            )
        return out

    def set_slot(self, slot: int, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copy an adapter's (A [r, in], B [out, r]) per slice name into `slot`; missing slices -> 0."""
        for i, name in enumerate(self.lora_names):
            a_slot, b_slot = self.lora_a[i][slot], self.lora_b[i][slot]
            pair = factors.get(name)
            if pair is None:
                a_slot.zero_()
                b_slot.zero_()
                continue
            a, b = pair
            rank = a.shape[0]
            a_slot[:rank].copy_(a, non_blocking=True)
            a_slot[rank:].zero_()
            b_slot[:, :rank].copy_(b, non_blocking=True)
            b_slot[:, rank:].zero_()

    def extra_repr(self) -> str:
        max_loras, max_rank, _ = self.lora_a[0].shape
        return f"max_loras={max_loras}, max_rank={max_rank}, lora_names={self.lora_names}"


def wrap_lora_layers(
    model: nn.Module,
    max_loras: int,
    max_rank: int,
    dtype: torch.dtype,
    device: torch.device,
    target_modules: tuple[str, ...] | None = None,
) -> list[list[LoRALinear]]:
    """Replace every LoRA-capable projection (a module with `lora_names`) in `model.model.layers[i]`
    that carries one of `target_modules` (None: all) with a `LoRALinear`; returns the wrapped modules per
    decoder layer."""
    wrapped = []
    for layer in model.model.layers:
        targets = [
            (name, module)
            for name, module in layer.named_modules()
            if hasattr(module, "lora_names")
            and not isinstance(module, LoRALinear)
            and name
            and (target_modules is None or set(module.lora_names) & set(target_modules))
        ]
        layer_wrapped = []
        for name, module in targets:
            parent_name, _, attr = name.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            lora_linear = LoRALinear(module, max_loras, max_rank, dtype, device)
            setattr(parent, attr, lora_linear)
            layer_wrapped.append(lora_linear)
        wrapped.append(layer_wrapped)
    return wrapped
