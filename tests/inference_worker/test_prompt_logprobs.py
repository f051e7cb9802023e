"""SamplingParams.prompt_logprobs: every prompt token scored as HF scores the full prompt, chunked or not."""

from __future__ import annotations

import pytest
import torch

from loraplane.inference_worker import SamplingParams
from loraplane.inference_worker.errors import InvalidRequestError
from tests.inference_worker.conftest import make_llm

PROMPT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the dark forest tonight"
K = 3
RANK_TIE = 1e-5


@pytest.fixture(scope="module")
def hf_logprobs(tiny_llama_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(tiny_llama_path)(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    return ids[0].tolist(), torch.log_softmax(logits, dim=-1)


def assert_matches_hf(output, hf_logprobs) -> None:
    ids, reference = hf_logprobs
    assert output.prompt_token_ids == ids and len(output.prompt_logprobs) == len(ids) > 16
    assert output.prompt_logprobs[0] is None
    for pos in range(1, len(ids)):
        entry, row = output.prompt_logprobs[pos], reference[pos - 1]
        token = ids[pos]
        assert entry[token].logprob == pytest.approx(row[token].item(), abs=1e-4)
        # the rank HF's logits give, up to near-ties (other summation orders move logits by ~1e-6)
        value = row[token].item()
        assert (
            int((row > value + RANK_TIE).sum()) + 1
            <= entry[token].rank
            <= int((row > value - RANK_TIE).sum()) + 1
        )
        top_values, top_ids = row.topk(K)
        for rank, (tid, value) in enumerate(zip(top_ids.tolist(), top_values.tolist(), strict=True)):
            assert entry[tid].logprob == pytest.approx(value, abs=1e-4)
            assert tid == token or entry[tid].rank == rank + 1
        assert set(entry) <= {token, *top_ids.tolist()} and entry[token].decoded_token is not None


def test_prompt_logprobs_match_hf_full_prompt_logits(tiny_llama_llm, hf_logprobs):
    params = SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=K)
    out = tiny_llama_llm.generate([PROMPT], params)[0]
    assert_matches_hf(out, hf_logprobs)
    again = tiny_llama_llm.generate([PROMPT], params)[0]  # the prompt's blocks are cached by now
    assert again.num_cached_tokens == 0 and again.prompt_logprobs == out.prompt_logprobs
    assert tiny_llama_llm.generate([PROMPT], SamplingParams(max_tokens=1))[0].prompt_logprobs is None


def test_prompt_logprobs_with_chunked_prefill_and_other_requests(tiny_llama_path, hf_logprobs):
    llm = make_llm(tiny_llama_path, max_num_seqs=4, max_num_batched_tokens=8)
    params = SamplingParams(temperature=0, max_tokens=3, prompt_logprobs=K)
    plain = SamplingParams(temperature=0, max_tokens=3)
    outs = llm.generate(["Hello there, how are you", PROMPT], [plain, params])
    assert outs[0].prompt_logprobs is None
    assert_matches_hf(outs[1], hf_logprobs)


def test_prompt_logprobs_is_validated():
    with pytest.raises(InvalidRequestError, match="prompt_logprobs"):
        SamplingParams(prompt_logprobs=-1)
