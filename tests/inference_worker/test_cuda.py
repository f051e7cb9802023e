"""The CUDA path (Triton paged attention, CUDA graphs per decode bucket) against HF on the same GPU."""

from __future__ import annotations

import pytest
import torch

from loraplane.inference_worker import LLM, SamplingParams
from loraplane.inference_worker.testing import SMALL_LLAMA, write_random_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_tiny_llama(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("cuda-tiny-llama")
    model = write_random_model(LlamaForCausalLM, LlamaConfig(**SMALL_LLAMA), path, device="cuda")
    return model, str(path)


def test_greedy_matches_hf_with_cuda_graphs(cuda_tiny_llama):
    hf, path = cuda_tiny_llama
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 80, (24,), generator=gen).tolist()
    prompts = [torch.randint(3, 1000, (n,), generator=gen).tolist() for n in lengths]
    llm = LLM(
        path,
        device="cuda",
        dtype="float32",
        skip_tokenizer_init=True,
        max_num_seqs=32,
        gpu_memory_utilization=0.3,
    )
    assert llm.engine.runner.graphs is not None and llm.engine.runner.graphs.graphs
    outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True))
    for prompt, out in zip(prompts, outputs, strict=True):
        ref = hf.generate(
            torch.tensor([prompt], device="cuda"), max_new_tokens=16, min_new_tokens=16, do_sample=False
        )
        assert out.outputs[0].token_ids == ref[0, len(prompt) :].tolist()
