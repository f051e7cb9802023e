"""Greedy parity with HF transformers `generate`, continuous batching, preemption and prefix caching."""

from __future__ import annotations

import pytest
import torch

from loraplane.inference_worker import SamplingParams
from tests.inference_worker.conftest import PROMPTS, make_llm

MAX_TOKENS = 12
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)


def _ids(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


@pytest.mark.parametrize("llm_fixture", ["tiny_llama_llm", "tiny_qwen2_llm", "smol_llm"])
def test_greedy_batch_matches_hf(request, llm_fixture, hf_reference):
    llm = request.getfixturevalue(llm_fixture)
    outputs = llm.generate(PROMPTS, GREEDY)
    path = llm.engine.model_path
    for prompt, out in zip(PROMPTS, outputs, strict=True):
        expected, _ = hf_reference(path, prompt, MAX_TOKENS)
        assert out.outputs[0].token_ids == expected, prompt


@pytest.mark.parametrize("llm_fixture", ["tiny_qwen2_llm", "smol_llm"])
def test_logprobs_match_hf_logits(request, llm_fixture, hf_reference):
    """Every generated step's logprobs (prefill and decode) agree with HF's logits in fp32."""
    llm = request.getfixturevalue(llm_fixture)
    prompts = PROMPTS[:6]
    outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=6, logprobs=5))
    for prompt, out in zip(prompts, outputs, strict=True):
        _, hf_logits = hf_reference(llm.engine.model_path, prompt, 6)
        hf_logprobs = torch.log_softmax(hf_logits, dim=-1)
        for step, top in enumerate(out.outputs[0].logprobs):
            for token_id, lp in top.items():
                assert lp.logprob == pytest.approx(hf_logprobs[step, token_id].item(), abs=2e-3), (
                    prompt,
                    step,
                )


def test_staggered_arrivals_match_solo_runs(tiny_llama_llm):
    engine = tiny_llama_llm.engine
    solo = {p: tiny_llama_llm.generate([p], GREEDY)[0].outputs[0].token_ids for p in PROMPTS[:8]}
    finished = {}
    pending = list(PROMPTS[:8])
    step = 0
    while pending or engine.has_unfinished_requests():
        if pending and step % 3 == 0:  # a new request every third step, while others decode
            prompt = pending.pop(0)
            engine.add_request(f"stagger-{prompt}", prompt, GREEDY)
        for out in engine.step():
            if out.finished:
                finished[out.prompt] = out.outputs[0].token_ids
        step += 1
    assert finished == solo


@pytest.mark.parametrize("path_fixture", ["tiny_llama_path", "tiny_qwen2_path"])
def test_preemption_keeps_outputs(request, path_fixture, hf_reference):
    path = request.getfixturevalue(path_fixture)
    llm = make_llm(path, num_kv_blocks=10, max_num_seqs=16)
    outputs = llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=16))
    assert llm.engine.scheduler.num_preemptions > 0
    for prompt, out in zip(PROMPTS, outputs, strict=True):
        assert out.outputs[0].token_ids == hf_reference(path, prompt, 16)[0], prompt


def test_chunked_prefill_matches(tiny_llama_path, hf_reference):
    llm = make_llm(tiny_llama_path, max_num_batched_tokens=7, max_num_seqs=4)
    outputs = llm.generate(PROMPTS[:6], GREEDY)
    for prompt, out in zip(PROMPTS[:6], outputs, strict=True):
        assert out.outputs[0].token_ids == hf_reference(tiny_llama_path, prompt, MAX_TOKENS)[0]


def test_prefix_cache_hits_change_nothing(tiny_qwen2_llm):
    shared = "You are a helpful assistant. Answer briefly and precisely, and never make things up. " * 2
    prompts = [shared + p for p in PROMPTS[:6]]
    first = _ids(tiny_qwen2_llm.generate(prompts, GREEDY))
    before = tiny_qwen2_llm.engine.stats()
    second = _ids(tiny_qwen2_llm.generate(prompts, GREEDY))
    after = tiny_qwen2_llm.engine.stats()
    assert second == first
    assert after.prefix_cache_hits - before.prefix_cache_hits >= 6 * 16
    assert after.prefix_cache_queries > before.prefix_cache_queries
    uncached = make_llm(tiny_qwen2_llm.engine.model_path, enable_prefix_caching=False)
    assert _ids(uncached.generate(prompts, GREEDY)) == first
    assert uncached.engine.stats().prefix_cache_hits == 0
