"""Per-step multi-LoRA metadata: tokens grouped by GPU slot in preallocated tensors.

The shrink/expand kernels read only these persistent tensors, and their launch grid depends only on
the number of tokens and ``max_loras``, so a CUDA graph captured once stays valid when the adapters
in the batch change: call :meth:`LoRAKernelMeta.prepare` before each replay, outside the graph.
"""

from __future__ import annotations

import torch

_FULL_RANK = torch.iinfo(torch.int32).max


class LoRAKernelMeta:
    """Tokens of one step grouped by adapter slot (SGMV segments), for ``max_num_tokens`` tokens.

    Semantics (after ``prepare(token_slots)`` with ``T = len(token_slots)``)::

        token_slots[:T] = token_slots (as int32)
        token_indices_sorted[:T] = stable argsort of token_slots (slot -1 first, then slot 0, 1, ...)
        for s in range(max_loras):
            num_tokens_per_slot[s] = count(token_slots == s)
            slot_start[s] = count(token_slots < s)   # offset of slot s in token_indices_sorted
        active_slots[:num_active] = sorted slots with num_tokens_per_slot > 0; the rest is -1
        active_num_tokens[a], active_slot_start[a] = the same per active entry a (0 past num_active),
            so the kernels find their segment with one level of loads
        slot_rank[s] = rank of the adapter in slot s (clamped to the buffer's max_rank by the kernels)

    Shape:
        token_indices_sorted, token_slots: [max_num_tokens] int32
        num_tokens_per_slot, slot_start, active_slots, slot_rank: [max_loras] int32
        active_num_tokens, active_slot_start: [max_loras] int32
        num_active: [1] int32
    Host side: ``num_tokens`` (int) and ``has_lora`` (bool: any token has an adapter).
    """

    def __init__(self, max_num_tokens: int, max_loras: int, device: torch.device | str) -> None:
        if max_num_tokens <= 0 or max_loras <= 0:
            raise ValueError(f"max_num_tokens ({max_num_tokens}) and max_loras ({max_loras}) must be > 0")
        self.max_num_tokens = max_num_tokens
        self.max_loras = max_loras
        self.device = torch.device(device)
        i32 = dict(dtype=torch.int32, device=self.device)
        self.token_indices_sorted = torch.zeros(max_num_tokens, **i32)
        self.token_slots = torch.full((max_num_tokens,), -1, **i32)
        self.num_tokens_per_slot = torch.zeros(max_loras, **i32)
        self.slot_start = torch.zeros(max_loras, **i32)
        self.active_slots = torch.full((max_loras,), -1, **i32)
        self.num_active = torch.zeros(1, **i32)
        self.active_num_tokens = torch.zeros(max_loras, **i32)
        self.active_slot_start = torch.zeros(max_loras, **i32)
        self.slot_rank = torch.full((max_loras,), _FULL_RANK, **i32)
        self._slot_ids = torch.arange(max_loras, **i32)
        self.num_tokens = 0
        self.has_lora = False

    def prepare(self, token_slots: torch.Tensor, slot_rank: torch.Tensor | None = None) -> None:
        """Fill the metadata in place for one step; ``token_slots[t]`` is token t's slot or -1.

        Pass ``token_slots`` on the CPU to compute ``has_lora`` without a device synchronization;
        the grouping itself runs with torch ops on ``self.device`` (argsort, scatter_add, cumsum).
        """
        num_tokens = token_slots.numel()
        if num_tokens > self.max_num_tokens:
            raise ValueError(f"{num_tokens} tokens exceed max_num_tokens={self.max_num_tokens}")
        self.num_tokens = num_tokens
        self.has_lora = bool((token_slots >= 0).any())
        if slot_rank is not None:
            self.slot_rank.copy_(slot_rank.to(torch.int32), non_blocking=True)
        slots = token_slots.to(device=self.device, dtype=torch.int64, non_blocking=True).reshape(-1)
        if self.has_lora and token_slots.device.type == "cpu" and int(token_slots.max()) >= self.max_loras:
            raise ValueError(f"token slot {int(token_slots.max())} >= max_loras={self.max_loras}")
        self._group(slots)

    def _group(self, slots: torch.Tensor) -> None:
        num_tokens = slots.numel()
        self.token_slots[:num_tokens].copy_(slots)
        order = torch.argsort(slots, stable=True)
        self.token_indices_sorted[:num_tokens].copy_(order)
        counts = torch.zeros(self.max_loras + 1, dtype=torch.int64, device=self.device)
        counts.scatter_add_(0, slots + 1, torch.ones_like(slots))
        cumulative = torch.cumsum(counts, 0)
        self.num_tokens_per_slot.copy_(counts[1:])
        self.slot_start.copy_(cumulative[:-1])
        present = counts[1:] > 0
        keys = torch.where(present, self._slot_ids, self.max_loras)
        ordered = torch.sort(keys).values
        valid = ordered < self.max_loras
        self.active_slots.copy_(torch.where(valid, ordered, -1))
        picked = ordered.clamp(max=self.max_loras - 1)
        self.active_num_tokens.copy_(torch.where(valid, counts[1:][picked], 0))
        self.active_slot_start.copy_(torch.where(valid, cumulative[:-1][picked], 0))
        self.num_active.copy_(present.sum().reshape(1))

    def segments(self) -> list[tuple[int, int, int]]:
        """Host list of ``(slot, start, count)`` for the active slots (reads the device tensors)."""
        counts = self.num_tokens_per_slot.tolist()
        starts = self.slot_start.tolist()
        active = [s for s in self.active_slots.tolist() if s >= 0]
        return [(s, starts[s], counts[s]) for s in active]
