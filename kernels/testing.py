"""Inputs for kernel tests and benchmarks: adapter-popularity mixes and stacked LoRA weights.

Popularity mixes (Punica's test matrix): ``distinct`` (every token its own adapter), ``uniform``,
``zipf`` (skewed, exponent 1.5), ``identical`` (one adapter for all), ``base_mixed`` (uniform with
about a third of the tokens on the base model, slot -1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

POPULARITIES = ("distinct", "uniform", "zipf", "identical", "base_mixed")


def make_token_slots(popularity: str, num_tokens: int, num_loras: int, seed: int = 0) -> torch.Tensor:
    """Per-token slot ids in ``[0, num_loras)`` (or -1) for one popularity mix; int32 on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    if popularity == "distinct":
        if num_tokens > num_loras:
            raise ValueError(f"distinct needs num_loras >= num_tokens, got {num_loras} < {num_tokens}")
        slots = torch.randperm(num_loras, generator=gen)[:num_tokens]
    elif popularity in ("uniform", "base_mixed"):
        slots = torch.randint(0, num_loras, (num_tokens,), generator=gen)
        if popularity == "base_mixed":
            slots[torch.rand(num_tokens, generator=gen) < 0.35] = -1
    elif popularity == "zipf":
        weights = 1.0 / torch.arange(1, num_loras + 1, dtype=torch.float64) ** 1.5
        slots = torch.multinomial(weights, num_tokens, replacement=True, generator=gen)
    elif popularity == "identical":
        slots = torch.full((num_tokens,), int(torch.randint(0, num_loras, (1,), generator=gen)))
    else:
        raise ValueError(f"unknown popularity {popularity!r}; expected one of {POPULARITIES}")
    return slots.to(torch.int32)


def make_lora_weights(
    num_loras: int,
    max_rank: int,
    in_features: int,
    out_features: Sequence[int],
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Stacked A ``[num_loras, max_rank, in]`` and B ``[num_loras, out_i, max_rank]`` per slice."""
    gen = torch.Generator().manual_seed(seed)
    a_std, b_std = in_features**-0.5, max_rank**-0.5
    lora_a = [
        (torch.randn(num_loras, max_rank, in_features, generator=gen) * a_std).to(device, dtype)
        for _ in out_features
    ]
    lora_b = [
        (torch.randn(num_loras, n, max_rank, generator=gen) * b_std).to(device, dtype) for n in out_features
    ]
    return lora_a, lora_b


def make_slot_ranks(num_loras: int, ranks: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A per-slot rank table drawing each slot's rank from ``ranks`` (heterogeneous ranks)."""
    gen = torch.Generator().manual_seed(seed)
    choice = torch.randint(0, len(ranks), (num_loras,), generator=gen)
    return torch.tensor(ranks, dtype=torch.int32)[choice]
