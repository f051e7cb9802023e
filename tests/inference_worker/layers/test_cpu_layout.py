"""CPU weight packing: packed GEMMs equal F.linear for any row count (fp32, and bf16 where oneDNN has
bf16 kernels), and CPU engines use them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loraplane.inference_worker import SamplingParams
from loraplane.inference_worker.layers import cpu_layout
from loraplane.inference_worker.layers.cpu_layout import (
    bf16_supported,
    can_pack,
    pack_linear_weights,
    pack_weight,
    packed_linear,
)
from loraplane.inference_worker.layers.embedding import LMHead
from loraplane.inference_worker.layers.linear import FusedLinear, qkv_linear
from loraplane.kernels.cpu_gemm import PanelWeight
from loraplane.kernels.native import avx512_supported
from tests.inference_worker.conftest import PROMPTS, make_llm

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="needs oneDNN bf16 kernels (AVX512-BF16/AMX)")
needs_panels = pytest.mark.skipif(not avx512_supported(), reason="needs the AVX-512 panel kernel")


@pytest.mark.parametrize("rows", [1, 5, 8, 37, 80])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("use_panels", [False, True])
def test_packed_linear_matches_f_linear(rows, with_bias, use_panels):
    gen = torch.Generator().manual_seed(rows)
    weight = torch.randn(96, 40, generator=gen)
    bias = torch.randn(96, generator=gen) if with_bias else None
    x = torch.randn(rows, 40, generator=gen)
    packed = pack_weight(weight, use_panels=use_panels)
    torch.testing.assert_close(packed_linear(x, packed, bias), F.linear(x, weight, bias))


@needs_bf16
@pytest.mark.parametrize("rows", [1, 8, 37])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bf16_packed_linear_matches_fp32_reference(rows, with_bias):
    """bf16 inputs and weights, fp32 accumulation: within bf16 output rounding of the exact product."""
    gen = torch.Generator().manual_seed(rows)
    weight = torch.randn(200, 72, generator=gen).bfloat16()
    bias = torch.randn(200, generator=gen).bfloat16() if with_bias else None
    x = torch.randn(rows, 72, generator=gen).bfloat16()
    out = packed_linear(x, pack_weight(weight), bias)
    ref = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
    assert out.dtype == torch.bfloat16 and out.shape == (rows, 200)
    torch.testing.assert_close(out.float(), ref, rtol=1.6e-2, atol=2e-2)


def test_without_the_panel_kernel_fp32_packs_for_onednn(monkeypatch):
    monkeypatch.setattr(cpu_layout, "panel_kernels", lambda: None)
    assert not isinstance(pack_weight(torch.randn(64, 32)), PanelWeight)


@needs_panels
def test_fp32_packs_into_panels_where_the_kernel_builds():
    assert isinstance(pack_weight(torch.randn(64, 32)), PanelWeight)
    assert not isinstance(pack_weight(torch.randn(64, 32), use_panels=False), PanelWeight)


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


@needs_bf16
def test_bf16_layers_pack_at_any_size_and_keep_outputs():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"qkv": qkv_linear(32, 4, 2, 8, bias=True), "head": LMHead(50, 32)})
    model = model.to(torch.bfloat16)
    for p in model.parameters():
        p.data.normal_()
    x = torch.randn(3, 32).bfloat16()
    before = {name: module(x) for name, module in model.items()}
    assert pack_linear_weights(model) == 2  # bf16: no size threshold
    for name, module in model.items():
        assert module.packed_weight.dtype == torch.bfloat16
        out = module(x)
        assert out.dtype == before[name].dtype  # the LM head still returns fp32 logits
        torch.testing.assert_close(out.float(), before[name].float(), rtol=1.6e-2, atol=2e-2)


def test_pack_only_supported_dtypes_above_their_threshold():
    layer = FusedLinear(8, [8], ["o_proj"]).to(torch.float16)
    assert pack_linear_weights(layer, min_numel=0) == 0 and layer.packed_weight is None
    assert not can_pack(torch.zeros(4, 4)) and can_pack(torch.zeros(4, 4), min_numel=16)
    assert not can_pack(torch.zeros(4, 4, dtype=torch.float64), min_numel=0)
    assert can_pack(torch.zeros(4, 4, dtype=torch.bfloat16)) == bf16_supported()


def test_cpu_engine_packs_only_large_projections(tiny_llama_llm):
    model = tiny_llama_llm.engine.runner.model
    assert model.model.layers[0].self_attn.qkv_proj.packed_weight is None  # 64 x 128: F.linear is faster
    assert model.lm_head.packed_weight is not None  # 49152 x 64


@needs_bf16
def test_bf16_cpu_engine_matches_hf_bf16(tiny_llama_path):
    """Smoke test of the bf16 CPU engine: every projection packed in bf16, greedy tokens as HF's in
    bf16 (a near-tie may flip one stream), and each step's logprobs within bf16 tolerance of HF's
    logits while the two streams agree."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = make_llm(tiny_llama_path, dtype="bfloat16")
    model = llm.engine.runner.model
    assert model.model.layers[0].self_attn.qkv_proj.packed_weight.dtype == torch.bfloat16
    prompts = PROMPTS[:6]
    outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=4, logprobs=3))
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.bfloat16).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    same_streams = 0
    for prompt, out in zip(prompts, outputs, strict=True):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            ref = hf.generate(
                ids, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True
            )
        hf_logprobs = torch.log_softmax(torch.cat(ref.logits).float(), dim=-1)
        tokens, hf_tokens = out.outputs[0].token_ids, ref.sequences[0, ids.shape[1] :].tolist()
        assert len(tokens) == 4 and tokens[0] == hf_tokens[0], prompt
        same_streams += tokens == hf_tokens
        for step, top in enumerate(out.outputs[0].logprobs):
            for token_id, lp in top.items():
                assert lp.logprob == pytest.approx(hf_logprobs[step, token_id].item(), abs=3e-2), prompt
            if tokens[step] != hf_tokens[step]:
                break  # later steps see different contexts
    assert same_streams >= len(prompts) - 1
