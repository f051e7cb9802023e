"""Per-step multi-LoRA metadata: tokens grouped by GPU slot in preallocated tensors.

The shrink/expand kernels read only these persistent tensors, and their launch grid depends only on
the number of tokens and ``max_loras``, so a CUDA graph captured once stays valid when the adapters
in the batch change: call :meth:`LoRAKernelMeta.prepare` before each replay, outside the graph.

The grouping runs on the host (numpy over at most a few thousand ints) into a pinned staging buffer,
then one non-blocking copy moves it into a single device tensor whose views are the fields below.
"""

from __future__ import annotations

import numpy as np
import torch

_FULL_RANK = torch.iinfo(torch.int32).max
TILE_M = 16  # tokens of one slot per tile of the tiled decode kernels (loraplane.kernels.triton_lora_decode)
MAX_TILED_TOKENS = 1024  # the tile table covers batches up to this many tokens
MAX_SLICES_PER_LAUNCH = 3  # output slices one launch of a LoRA kernel covers
# Workspace of the producer/consumer fused kernel (loraplane.kernels.triton_lora_fused_coop): per
# (token, slice) of up to COOP_MAX_TOKENS tokens and MAX_SLICES_PER_LAUNCH slices, COOP_PARTIALS fp32
# partials of y (split_k x the rank rounded to a power of two) and two zeroed counters the kernel resets
# itself.
COOP_MAX_TOKENS = 128
COOP_PARTIALS = 512


def num_tiles_bound(num_tokens: int, max_loras: int) -> int:
    """Upper bound on the tiles of any grouping of ``num_tokens`` tokens (a static grid size)."""
    return -(-num_tokens // TILE_M) + min(num_tokens, max_loras)


class LoRAKernelMeta:
    """Tokens of one step grouped by adapter slot (SGMV segments and tiles), for ``max_num_tokens``.

    Semantics (after ``prepare(token_slots)`` with ``T = len(token_slots)``)::

        token_slots[:T] = token_slots (as int32); -1 past T
        token_indices_sorted[:T] = stable argsort of token_slots (slot -1 first, then slot 0, 1, ...)
        for s in range(max_loras):
            num_tokens_per_slot[s] = count(token_slots == s)
            slot_start[s] = count(token_slots < s)   # offset of slot s in token_indices_sorted
        active_slots[:num_active] = sorted slots with num_tokens_per_slot > 0; the rest is -1
        active_num_tokens[a], active_slot_start[a] = the same per active entry a (0 past num_active),
            so the kernels find their segment with one level of loads
        slot_rank[s] = rank of the adapter in slot s (clamped to the buffer's max_rank by the kernels)
        # tiles (only when T <= max_tiled_tokens): each active slot's tokens, in sorted order, cut
        # into tiles of at most TILE_M; tile i holds slot tile_slot[i] (-1: unused tile), its rank
        # tile_rank[i] and its tokens tile_tokens[i, :] (-1 padding)

    Shape:
        token_indices_sorted, token_slots: [max_num_tokens] int32
        num_tokens_per_slot, slot_start, active_slots, slot_rank: [max_loras] int32
        active_num_tokens, active_slot_start: [max_loras] int32
        num_active: [1] int32
        tile_slot, tile_rank: [max_tiles] int32; tile_tokens: [max_tiles, TILE_M] int32
            with max_tiles = num_tiles_bound(min(max_num_tokens, MAX_TILED_TOKENS), max_loras)
        coop_counters: [2, min(max_num_tokens, COOP_MAX_TOKENS) * MAX_SLICES_PER_LAUNCH] int32, zero between
            launches; coop_partials: [that many pairs * COOP_PARTIALS] fp32 (kernel scratch)
    Host side: ``num_tokens`` (int) and ``has_lora`` (bool: any token has an adapter).
    """

    def __init__(self, max_num_tokens: int, max_loras: int, device: torch.device | str) -> None:
        if max_num_tokens <= 0 or max_loras <= 0:
            raise ValueError(f"max_num_tokens ({max_num_tokens}) and max_loras ({max_loras}) must be > 0")
        self.max_num_tokens = max_num_tokens
        self.max_loras = max_loras
        self.device = torch.device(device)
        self.max_tiled_tokens = min(max_num_tokens, MAX_TILED_TOKENS)
        self.max_tiles = num_tiles_bound(self.max_tiled_tokens, max_loras)
        # Field sizes in packing order; token_indices_sorted comes last so that one copy of a prefix
        # (up to its first T entries) carries everything a step needs.
        sizes = {
            "num_tokens_per_slot": max_loras,
            "slot_start": max_loras,
            "active_slots": max_loras,
            "active_num_tokens": max_loras,
            "active_slot_start": max_loras,
            "slot_rank": max_loras,
            "num_active": 1,
            "tile_slot": self.max_tiles,
            "tile_rank": self.max_tiles,
            "tile_tokens": self.max_tiles * TILE_M,
            "token_slots": max_num_tokens,
            "token_indices_sorted": max_num_tokens,
        }
        total = sum(sizes.values())
        pin = self.device.type == "cuda"
        self._staging = torch.zeros(total, dtype=torch.int32, pin_memory=pin)
        self._packed = torch.zeros(total, dtype=torch.int32, device=self.device)
        self._host: dict[str, np.ndarray] = {}
        offset = 0
        for name, size in sizes.items():
            self._host[name] = self._staging[offset : offset + size].numpy()
            setattr(self, name, self._packed[offset : offset + size])
            offset += size
        self._sorted_offset = offset - max_num_tokens
        self.tile_tokens = self.tile_tokens.view(self.max_tiles, TILE_M)
        self._host["slot_rank"][:] = _FULL_RANK
        self._host["token_slots"][:] = -1
        self._host["active_slots"][:] = -1
        self._packed.copy_(self._staging)
        self._copy_done = torch.cuda.Event() if pin else None
        coop_pairs = min(max_num_tokens, COOP_MAX_TOKENS) * MAX_SLICES_PER_LAUNCH
        self.coop_counters = torch.zeros(2, coop_pairs, dtype=torch.int32, device=self.device)
        self.coop_partials = torch.zeros(coop_pairs * COOP_PARTIALS, dtype=torch.float32, device=self.device)
        self.num_tokens = 0
        self.has_lora = False

    def prepare(self, token_slots: torch.Tensor, slot_rank: torch.Tensor | None = None) -> None:
        """Fill the metadata for one step; ``token_slots[t]`` is token t's slot or -1.

        Groups on the host (a device ``token_slots`` is read back first, a synchronization) and
        sends the result with one non-blocking copy. The staging buffer is reused only after the
        previous step's copy has finished.
        """
        slots = token_slots.detach().reshape(-1).cpu().numpy().astype(np.int64)
        num_tokens = slots.size
        if num_tokens > self.max_num_tokens:
            raise ValueError(f"{num_tokens} tokens exceed max_num_tokens={self.max_num_tokens}")
        if num_tokens and int(slots.max()) >= self.max_loras:
            raise ValueError(f"token slot {int(slots.max())} >= max_loras={self.max_loras}")
        if self._copy_done is not None:
            self._copy_done.synchronize()
        if slot_rank is not None:
            self._host["slot_rank"][:] = slot_rank.detach().cpu().numpy()
        self.num_tokens = num_tokens
        self.has_lora = bool((slots >= 0).any())
        self._group(slots)
        length = self._sorted_offset + num_tokens
        self._packed[:length].copy_(self._staging[:length], non_blocking=self._copy_done is not None)
        if self._copy_done is not None:
            self._copy_done.record()

    def _group(self, slots: np.ndarray) -> None:
        host, num_tokens, max_loras = self._host, slots.size, self.max_loras
        host["token_slots"][:num_tokens] = slots
        host["token_slots"][num_tokens:] = -1
        order = np.argsort(slots, kind="stable")
        host["token_indices_sorted"][:num_tokens] = order
        counts = np.bincount(slots + 1, minlength=max_loras + 1)[1:]
        starts = np.cumsum(counts) - counts + (num_tokens - counts.sum())
        host["num_tokens_per_slot"][:] = counts
        host["slot_start"][:] = starts
        active = np.flatnonzero(counts)
        num_active = active.size
        for name, values in (
            ("active_slots", active),
            ("active_num_tokens", counts[active]),
            ("active_slot_start", starts[active]),
        ):
            host[name][:num_active] = values
            host[name][num_active:] = -1 if name == "active_slots" else 0
        host["num_active"][0] = num_active
        if num_tokens <= self.max_tiled_tokens:
            self._tiles(slots, order, counts, starts, active)

    def _tiles(self, slots, order, counts, starts, active) -> None:
        """Cut each active slot's sorted tokens into tiles of at most TILE_M (see the class doc)."""
        host = self._host
        tiles_per_slot = -(-counts[active] // TILE_M)
        num_tiles = int(tiles_per_slot.sum())
        first_tile = np.cumsum(tiles_per_slot) - tiles_per_slot
        host["tile_slot"][:num_tiles] = np.repeat(active, tiles_per_slot)
        host["tile_slot"][num_tiles:] = -1
        host["tile_rank"][:num_tiles] = host["slot_rank"][host["tile_slot"][:num_tiles]]
        host["tile_rank"][num_tiles:] = 0
        tokens = order[len(slots) - int(counts.sum()) :]  # tokens with an adapter, in slot order
        seg_slot = slots[tokens]
        tile_of_slot = np.zeros(self.max_loras, dtype=np.int64)
        tile_of_slot[active] = first_tile
        pos = np.arange(tokens.size) - (starts[seg_slot] - (len(slots) - int(counts.sum())))
        tile_tokens = host["tile_tokens"].reshape(self.max_tiles, TILE_M)
        tile_tokens[:num_tiles] = -1
        tile_tokens[tile_of_slot[seg_slot] + pos // TILE_M, pos % TILE_M] = tokens

    def segments(self) -> list[tuple[int, int, int]]:
        """Host list of ``(slot, start, count)`` for the active slots (from the host copy)."""
        counts = self._host["num_tokens_per_slot"].tolist()
        starts = self._host["slot_start"].tolist()
        active = [s for s in self._host["active_slots"].tolist() if s >= 0]
        return [(s, starts[s], counts[s]) for s in active]
