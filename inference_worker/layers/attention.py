"""Paged attention layer: stores the new tokens' K/V in the cache and attends over it.

Reads the per-forward Context. The ops come from `kernels.attention` (Triton on CUDA, PyTorch reference
on CPU). Without a KV cache (the warm-up forward that sizes the cache) it runs plain causal attention
over the batch's sequences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loraplane.inference_worker.context import Context, get_context
from loraplane.kernels import attention as attn_ops
from loraplane.kernels import fused_ops


class Attention(nn.Module):
    """RoPE, KV-cache write and paged attention of one layer. `k_cache`/`v_cache` [num_blocks,
    block_size, Hkv, D]."""

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = scale
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)

    def forward(self, qkv: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Shape: qkv [T, (H + 2*Hkv)*D] (q, k, v heads side by side; q and k are rotated in place),
        cos_sin rows of this forward's positions -> [T, H*D]."""
        ctx = get_context()
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        qk, v_rows = qkv[:, : q_size + kv_size], qkv[:, q_size + kv_size :]
        q = qkv[:, :q_size].view(-1, self.num_heads, self.head_dim)
        cos, sin = cos_sin
        if self.k_cache.numel() == 0:
            fused_ops.rotary_embedding(qk, cos, sin, self.head_dim)
            k = qk[:, q_size:].view(-1, self.num_kv_heads, self.head_dim)
            v = v_rows.view(-1, self.num_kv_heads, self.head_dim)
            return self._no_cache(q, k, v, ctx.cu_seqlens_q).flatten(1)
        meta = self._cpu_meta(ctx)
        attn_ops.rope_and_store_kvcache(
            qk, v_rows, cos, sin, self.num_heads, self.k_cache, self.v_cache, ctx.slot_mapping, meta
        )
        if ctx.is_prefill:
            out = attn_ops.paged_prefill_attention(
                q,
                self.k_cache,
                self.v_cache,
                ctx.block_tables,
                ctx.cu_seqlens_q,
                ctx.seq_lens,
                self.scale,
                ctx.max_seqlen_q,
            )
        else:
            out = attn_ops.paged_decode_attention(
                q, self.k_cache, self.v_cache, ctx.block_tables, ctx.context_lens, self.scale, meta
            )
        return out.flatten(1)

    def _cpu_meta(self, ctx: Context) -> attn_ops.CpuStepMeta | None:
        """The step's shared CPU attention values, built by the forward's first layer (None on a GPU,
        where building them would sync the device)."""
        if self.k_cache.device.type != "cpu":
            return None
        if ctx.cpu_attn_meta is None:
            decode = not ctx.is_prefill
            ctx.cpu_attn_meta = attn_ops.cpu_step_meta(
                ctx.slot_mapping,
                ctx.block_tables if decode else None,
                ctx.context_lens if decode else None,
                self.k_cache.shape[1],
            )
        return ctx.cpu_attn_meta

    def _no_cache(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor
    ) -> torch.Tensor:
        """Causal attention within each sequence of a prefill batch (warm-up only; no prefix)."""
        outs = []
        bounds = cu_seqlens.tolist()
        group = self.num_heads // self.num_kv_heads
        for start, end in zip(bounds[:-1], bounds[1:], strict=False):
            qs = q[start:end].transpose(0, 1)
            ks = k[start:end].repeat_interleave(group, dim=1).transpose(0, 1)
            vs = v[start:end].repeat_interleave(group, dim=1).transpose(0, 1)
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=self.scale)
            outs.append(o.transpose(0, 1))
        return torch.cat(outs)
