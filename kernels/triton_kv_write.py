"""Triton KV-cache write for paged attention: alone, or fused with RoPE on q and k.

Program t handles token t: its k and v rows go to cache slot ``slot_mapping[t]`` (a slot of -1, a
padding token, writes nothing). The fused form rotates the token's q and k heads in place and stores
the rotated k straight from registers. Contracts: :func:`loraplane.kernels.attention.store_kvcache_ref`
and :func:`loraplane.kernels.attention.rope_and_store_kvcache`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _store_kvcache_kernel(
    key_ptr,
    value_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    stride_key,
    stride_value,
    stride_slot,
    ROW: tl.constexpr,
    ROW_P2: tl.constexpr,
):
    pid = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + pid).to(tl.int64)
    if slot < 0:
        return
    offs = tl.arange(0, ROW_P2)
    mask = offs < ROW
    key = tl.load(key_ptr + pid * stride_key + offs, mask=mask)
    value = tl.load(value_ptr + pid * stride_value + offs, mask=mask)
    tl.store(k_cache_ptr + slot * stride_slot + offs, key, mask=mask)
    tl.store(v_cache_ptr + slot * stride_slot + offs, value, mask=mask)


@triton.jit
def _rope_store_kernel(
    qk_ptr,
    value_ptr,
    cos_ptr,
    sin_ptr,
    k_cache_ptr,
    v_cache_ptr,
    slot_mapping_ptr,
    stride_qk,
    stride_value,
    stride_cos,
    stride_sin,
    stride_slot,
    NUM_Q_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HALF: tl.constexpr,
    HEADS_P2: tl.constexpr,
    HALF_P2: tl.constexpr,
    ROW_P2: tl.constexpr,
):
    """Program t: rotate token t's q and k heads in place; with a slot, write its rotated k and its v
    into the cache (the rotated k is stored straight from registers)."""
    token = tl.program_id(0).to(tl.int64)
    heads = tl.arange(0, HEADS_P2)[:, None]
    dims = tl.arange(0, HALF_P2)[None, :]
    dim_mask = dims < HALF
    mask = (heads < NUM_Q_HEADS + NUM_KV_HEADS) & dim_mask
    first = qk_ptr + token * stride_qk + heads * (2 * HALF) + dims
    x1 = tl.load(first, mask=mask, other=0.0)
    x2 = tl.load(first + HALF, mask=mask, other=0.0)
    cos1 = tl.load(cos_ptr + token * stride_cos + dims, mask=dim_mask, other=0.0)
    cos2 = tl.load(cos_ptr + token * stride_cos + HALF + dims, mask=dim_mask, other=0.0)
    sin1 = tl.load(sin_ptr + token * stride_sin + dims, mask=dim_mask, other=0.0)
    sin2 = tl.load(sin_ptr + token * stride_sin + HALF + dims, mask=dim_mask, other=0.0)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    r1 = (x1f * cos1 + x2f * sin1).to(x1.dtype)
    r2 = (x2f * cos2 + x1f * sin2).to(x1.dtype)
    tl.store(first, r1, mask=mask)
    tl.store(first + HALF, r2, mask=mask)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot >= 0:
        k_mask = mask & (heads >= NUM_Q_HEADS)
        k_dst = k_cache_ptr + slot * stride_slot + (heads - NUM_Q_HEADS) * (2 * HALF) + dims
        tl.store(k_dst, r1.to(k_cache_ptr.dtype.element_ty), mask=k_mask)
        tl.store(k_dst + HALF, r2.to(k_cache_ptr.dtype.element_ty), mask=k_mask)
        offs = tl.arange(0, ROW_P2)
        row_mask = offs < NUM_KV_HEADS * 2 * HALF
        value = tl.load(value_ptr + token * stride_value + offs, mask=row_mask)
        tl.store(
            v_cache_ptr + slot * stride_slot + offs, value.to(v_cache_ptr.dtype.element_ty), mask=row_mask
        )


def store_kvcache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Launch the cache write (contract: :func:`loraplane.kernels.attention.store_kvcache_ref`)."""
    row = key.shape[1] * key.shape[2]
    key, value = (t if t[0].is_contiguous() else t.contiguous() for t in (key, value))
    if key.dtype != k_cache.dtype:
        key, value = key.to(k_cache.dtype), value.to(k_cache.dtype)
    _store_kvcache_kernel[(key.shape[0],)](
        key,
        value,
        k_cache,
        v_cache,
        slot_mapping,
        key.stride(0),
        value.stride(0),
        k_cache.stride(1),
        ROW=row,
        ROW_P2=triton.next_power_of_2(row),
    )


def rope_and_store_kvcache(
    qk: torch.Tensor,
    value: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Launch RoPE + cache write (contract: :func:`loraplane.kernels.attention.rope_and_store_kvcache`)."""
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    cos2d, sin2d = cos.reshape(-1, head_dim), sin.reshape(-1, head_dim)
    assert qk.stride(-1) == 1 and value.stride(-1) == 1 and cos2d.stride(-1) == 1 and sin2d.stride(-1) == 1
    assert k_cache.stride(2) == head_dim and k_cache.stride() == v_cache.stride()
    if qk.shape[0] == 0:
        return
    _rope_store_kernel[(qk.shape[0],)](
        qk,
        value,
        cos2d,
        sin2d,
        k_cache,
        v_cache,
        slot_mapping,
        qk.stride(0),
        value.stride(0),
        cos2d.stride(0),
        sin2d.stride(0),
        k_cache.stride(1),
        NUM_Q_HEADS=num_q_heads,
        NUM_KV_HEADS=num_kv_heads,
        HALF=head_dim // 2,
        HEADS_P2=triton.next_power_of_2(num_q_heads + num_kv_heads),
        HALF_P2=triton.next_power_of_2(head_dim // 2),
        ROW_P2=triton.next_power_of_2(num_kv_heads * head_dim),
        num_warps=4,
    )
