"""CPU weight packing: packed GEMMs equal F.linear for any row count, and CPU engines use them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inference_worker.layers.cpu_layout import can_pack, pack_linear_weights, pack_weight, packed_linear
from inference_worker.layers.embedding import LMHead
from inference_worker.layers.linear import FusedLinear, qkv_linear

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")


@pytest.mark.parametrize("rows", [1, 5, 8, 37])
@pytest.mark.parametrize("with_bias", [False, True])
def test_packed_linear_matches_f_linear(rows, with_bias):
    gen = torch.Generator().manual_seed(rows)
    weight = torch.randn(96, 40, generator=gen)
    bias = torch.randn(96, generator=gen) if with_bias else None
    x = torch.randn(rows, 40, generator=gen)
    torch.testing.assert_close(packed_linear(x, pack_weight(weight), bias), F.linear(x, weight, bias))


def test_pack_linear_weights_keeps_outputs_and_dense_weights():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"qkv": qkv_linear(32, 4, 2, 8, bias=True), "head": LMHead(50, 32)})
    for p in model.parameters():
        p.data.normal_()
    x = torch.randn(3, 32)
    before = {name: module(x) for name, module in model.items()}
    assert pack_linear_weights(model, min_numel=0) == 2
    for name, module in model.items():
        assert module.packed_weight is not None and module.weight.is_contiguous()
        torch.testing.assert_close(module(x), before[name])


def test_only_fp32_cpu_weights_are_packed():
    assert not can_pack(torch.zeros(4, 4, dtype=torch.bfloat16), min_numel=0)
    layer = FusedLinear(8, [8], ["o_proj"]).to(torch.float16)
    assert pack_linear_weights(layer, min_numel=0) == 0 and layer.packed_weight is None
    assert not can_pack(torch.zeros(4, 4)) and can_pack(torch.zeros(4, 4), min_numel=16)


def test_cpu_engine_packs_only_large_projections(tiny_llama_llm):
    model = tiny_llama_llm.engine.runner.model
    assert model.model.layers[0].self_attn.qkv_proj.packed_weight is None  # 64 x 128: F.linear is faster
    assert model.lm_head.packed_weight is not None  # 49152 x 64
