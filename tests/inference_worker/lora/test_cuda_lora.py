"""Multi-LoRA on CUDA: Triton shrink/expand inside captured decode graphs, against PeftModel per request."""

from __future__ import annotations

import copy

import pytest
import torch

from loraplane.inference_worker import LLM, SamplingParams
from loraplane.inference_worker.lora import LoRARequest
from loraplane.inference_worker.testing import SMALL_LLAMA, write_random_model
from tests.inference_worker.lora.conftest import ADAPTER_SPECS, write_peft_adapter

pytestmark = pytest.mark.gpu

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def cuda_base_and_adapters(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("cuda-lora")
    base = write_random_model(LlamaForCausalLM, LlamaConfig(**SMALL_LLAMA), root / "base", device="cpu")
    adapters = {
        name: write_peft_adapter(base, root / name, seed=i, std=0.05, **spec)
        for i, (name, spec) in enumerate(ADAPTER_SPECS.items())
    }
    return base.to("cuda"), str(root / "base"), adapters


def peft_greedy(base, adapter_dir, prompts):
    from peft import PeftModel

    model = base if adapter_dir is None else PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir)
    results = []
    for prompt in prompts:
        ids = torch.tensor([prompt], device="cuda")
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False, min_new_tokens=MAX_TOKENS)
        results.append(out[0, ids.shape[1] :].tolist())
    return results


def test_mixed_batch_in_cuda_graphs_matches_peft(cuda_base_and_adapters):
    base, path, adapters = cuda_base_and_adapters
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 1000, (int(n),), generator=gen).tolist() for n in (5, 17, 40)]
    llm = LLM(
        path,
        device="cuda",
        dtype="float32",
        skip_tokenizer_init=True,
        max_num_seqs=32,
        gpu_memory_utilization=0.3,
        enable_lora=True,
        max_loras=len(adapters),
        max_lora_rank=16,
    )
    assert llm.engine.runner.graphs is not None and llm.engine.runner.graphs.graphs
    requests = {name: LoRARequest(name, i + 1, str(p)) for i, (name, p) in enumerate(adapters.items())}
    batch = [(i, name) for i in range(len(prompts)) for name in [None, *requests]]
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    expected = {name: peft_greedy(base, adapters.get(name), prompts) for name in [None, *requests]}
    # Two rounds: the second runs the same captured graphs with slots already assigned differently.
    for order in (batch, list(reversed(batch))):
        outputs = llm.generate(
            [prompts[i] for i, _ in order],
            params,
            lora_request=[None if name is None else requests[name] for _, name in order],
        )
        for (i, name), out in zip(order, outputs, strict=True):
            assert out.outputs[0].token_ids == expected[name][i], (name, i)
