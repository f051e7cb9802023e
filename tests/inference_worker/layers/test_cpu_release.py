"""Releasing dense CPU weights once packed: a bf16 model is resident once, outputs unchanged."""

from __future__ import annotations

import pytest
import torch

from loraplane.inference_worker.layers.cpu_layout import (
    bf16_supported,
    pack_linear_weights,
    release_packed_dense_weights,
)
from loraplane.inference_worker.layers.embedding import LMHead, VocabEmbedding
from loraplane.inference_worker.layers.linear import qkv_linear
from loraplane.kernels.native import avx512_supported
from tests.inference_worker.conftest import make_llm

needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="needs oneDNN bf16 kernels (AVX512-BF16/AMX)")


def _model(dtype: torch.dtype, tied: bool) -> torch.nn.ModuleDict:
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {"qkv": qkv_linear(32, 4, 2, 8, bias=True), "embed": VocabEmbedding(50, 32), "head": LMHead(50, 32)}
    ).to(dtype)
    for p in model.parameters():
        p.data.normal_()
    if tied:
        model["head"].weight = model["embed"].weight
    return model


@needs_bf16
@pytest.mark.parametrize("tied", [False, True])
def test_bf16_packed_weights_drop_their_dense_copy_but_not_a_shared_one(tied):
    model = _model(torch.bfloat16, tied)
    x = torch.randn(5, 32).bfloat16()
    before = {name: model[name](x) for name in ("qkv", "head")}
    pack_linear_weights(model)
    qkv_bytes = model["qkv"].weight.numel() * 2
    head_bytes = 0 if tied else model["head"].weight.numel() * 2
    assert release_packed_dense_weights(model) == qkv_bytes + head_bytes
    assert model["qkv"].weight.is_meta and model["qkv"].weight.shape == (64, 32)
    assert model["head"].weight.is_meta != tied and not model["embed"].weight.is_meta
    for name, out in before.items():
        torch.testing.assert_close(model[name](x).float(), out.float())


@pytest.mark.skipif(not avx512_supported(), reason="needs the AVX-512 panel kernel")
def test_fp32_panel_weights_keep_the_dense_copy_long_prefills_read():
    model = _model(torch.float32, tied=False)
    pack_linear_weights(model, min_numel=0)
    release_packed_dense_weights(model)
    assert not any(p.is_meta for p in model.parameters())


@needs_bf16
def test_the_bf16_cpu_engine_holds_its_projections_once(tiny_llama_path):
    model = make_llm(tiny_llama_path, dtype="bfloat16").engine.runner.model
    assert model.model.layers[0].self_attn.qkv_proj.weight.is_meta
    assert not model.model.embed_tokens.weight.is_meta  # tied to the LM head: the embedding reads it
