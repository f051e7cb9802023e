"""Deterministic outputs on CPU: two identical runs of a mixed batch (base + two adapters) give the same
tokens and logprobs, and with `batch_invariant` a request alone and inside a batch of 64 others gives
the same tokens and bit-identical logprobs (without the option the logprobs differ on CPU: oneDNN/MKL
pick their GEMM kernels by the row count)."""

from __future__ import annotations

import pytest

from loraplane.inference_worker import SamplingParams
from loraplane.inference_worker.lora import LoRARequest
from loraplane.kernels.cpu_gemm import panel_kernels
from tests.inference_worker.conftest import make_llm
from tests.inference_worker.lora.conftest import write_peft_adapter

PROMPTS = [f"Request {i}: the number {7 * i} is" for i in range(65)]  # under one KV block each
GREEDY = SamplingParams(temperature=0.0, max_tokens=8, logprobs=0)


@pytest.fixture(scope="module")
def adapters(tiny_llama_path, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    root = tmp_path_factory.mktemp("determinism-adapters")
    return [
        None,
        LoRARequest(
            "all", 1, str(write_peft_adapter(base, root / "all", seed=1, target_modules="all-linear"))
        ),
        LoRARequest("qv", 2, str(write_peft_adapter(base, root / "qv", seed=2, r=4))),
    ]


def engine(path: str, **kwargs):
    # prefix caching off and room for every prompt in one step: both runs see the same batches
    return make_llm(
        path,
        enable_lora=True,
        max_loras=2,
        max_num_seqs=len(PROMPTS),
        max_num_batched_tokens=2048,
        enable_prefix_caching=False,
        **kwargs,
    )


def results(outputs):
    return [(o.outputs[0].token_ids, o.outputs[0].cumulative_logprob) for o in outputs]


def test_two_identical_mixed_runs_give_identical_tokens(tiny_llama_path, adapters):
    llm = engine(tiny_llama_path)
    loras = [adapters[i % 3] for i in range(16)]
    first = results(llm.generate(PROMPTS[:16], GREEDY, lora_request=loras))
    second = results(llm.generate(PROMPTS[:16], GREEDY, lora_request=loras))
    assert first == second


@pytest.mark.skipif(panel_kernels() is None, reason="batch-invariant CPU GEMMs need the AVX-512 panel kernel")
def test_batch_invariant_request_alone_equals_request_in_batch_of_64(tiny_llama_path, adapters):
    llm = engine(tiny_llama_path, batch_invariant=True)
    loras = [adapters[i % 3] for i in range(len(PROMPTS))]
    batch = results(llm.generate(PROMPTS, GREEDY, lora_request=loras))
    for i in (0, 1, 2, 40):  # base, each adapter, and one deep in the batch
        alone = results(llm.generate([PROMPTS[i]], GREEDY, lora_request=loras[i]))
        assert alone == [batch[i]], f"request {i} (adapter {loras[i] and loras[i].lora_name})"


def test_batch_invariant_refuses_what_cpu_cannot_make_invariant(tiny_llama_path):
    with pytest.raises(ValueError, match="batch_invariant on CPU needs fp32"):
        make_llm(tiny_llama_path, dtype="bfloat16", batch_invariant=True)


def test_batch_invariant_comes_from_the_environment(monkeypatch):
    from loraplane.inference_worker.config import EngineConfig

    monkeypatch.setenv("LORAPLANE_BATCH_INVARIANT", "1")
    assert EngineConfig(device="cpu").batch_invariant
    assert not EngineConfig(device="cpu", batch_invariant=False).batch_invariant
    monkeypatch.setenv("LORAPLANE_BATCH_INVARIANT", "maybe")
    with pytest.raises(ValueError, match="LORAPLANE_BATCH_INVARIANT"):
        EngineConfig(device="cpu")
