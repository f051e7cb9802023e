"""The per-forward context: batch metadata that attention and LoRA layers read.

The ModelRunner sets it once per step (`with set_context(...)`); nesting is refused so a forward can
never read a stale context. This is the only module-level mutable state of the engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from loraplane.kernels.attention import CpuStepMeta
    from loraplane.kernels.lora_meta import LoRAKernelMeta


@dataclass
class Context:
    """Metadata of one forward.

    Shape: `slot_mapping` [T] int64 (KV slot of each new token, -1 = do not store);
    prefill: `cu_seqlens_q` [B+1] int32, `seq_lens` [B] int32 (context incl. new tokens),
    `block_tables` [B, max_blocks] int32; decode: `context_lens` [B] int32, `block_tables`.
    `lora_meta` is the LoRA kernel metadata (None when the batch has no adapter). `cpu_attn_meta` holds
    the CPU attention's per-step values (`kernels.attention.CpuStepMeta`): the first layer builds it,
    every later layer of the forward reuses it.
    """

    is_prefill: bool = False
    slot_mapping: torch.Tensor | None = None
    block_tables: torch.Tensor | None = None
    context_lens: torch.Tensor | None = None
    cu_seqlens_q: torch.Tensor | None = None
    seq_lens: torch.Tensor | None = None
    max_seqlen_q: int = 0
    lora_meta: LoRAKernelMeta | None = None
    cpu_attn_meta: CpuStepMeta | None = None


_EMPTY = Context()
_context: Context = _EMPTY


def get_context() -> Context:
    return _context


@contextlib.contextmanager
def set_context(ctx: Context) -> Iterator[Context]:
    global _context
    if _context is not _EMPTY:
        raise RuntimeError("a forward context is already set; contexts do not nest")
    _context = ctx
    try:
        yield ctx
    finally:
        _context = _EMPTY
