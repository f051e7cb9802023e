"""Multi-LoRA through the engine: one mixed batch matches PeftModel per request, eviction, rejections,
prefix caching keyed by adapter version."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from loraplane.inference_worker import SamplingParams
from loraplane.inference_worker.errors import AdapterLoadError
from loraplane.inference_worker.lora import LoRARequest
from tests.inference_worker.conftest import make_llm
from tests.inference_worker.lora.conftest import ADAPTER_SPECS, edit_config, write_peft_adapter

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Roses are red, violets are"]
MAX_TOKENS = 8
GREEDY = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)


def load_hf(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32
    ).eval(), AutoTokenizer.from_pretrained(path)


def write_adapters(model, root, std=0.1):
    return {
        name: write_peft_adapter(model, root / name, seed=10 + i, std=std, **spec)
        for i, (name, spec) in enumerate(ADAPTER_SPECS.items())
    }


@pytest.fixture(scope="module")
def hf_base(tiny_llama_path):
    return load_hf(tiny_llama_path)


@pytest.fixture(scope="module")
def engine_adapters(hf_base, tmp_path_factory):
    return write_adapters(hf_base[0], tmp_path_factory.mktemp("engine-adapters"))


def peft_greedy(hf_base, adapter_dir, prompts, max_tokens=MAX_TOKENS):
    """Greedy tokens of PeftModel with `adapter_dir` alone (the base model when None), per prompt."""
    from peft import PeftModel

    base, tokenizer = hf_base
    model = base if adapter_dir is None else PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir)
    results = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
        results.append(out[0, ids.shape[1] :].tolist())
    return results


def token_ids(outputs):
    return [o.outputs[0].token_ids for o in outputs]


def test_one_mixed_batch_matches_peft_per_request(tiny_llama_path, hf_base, engine_adapters):
    llm = make_llm(tiny_llama_path, enable_lora=True, max_loras=len(engine_adapters), max_lora_rank=16)
    check_mixed_batch(llm, hf_base, engine_adapters)


@pytest.mark.slow
def test_smollm2_mixed_batch_matches_peft_per_request(demo_model_path, tmp_path):
    hf = load_hf(demo_model_path)
    adapters = write_adapters(hf[0], tmp_path, std=0.05)
    llm = make_llm(demo_model_path, enable_lora=True, max_loras=len(adapters), max_model_len=256)
    check_mixed_batch(llm, hf, adapters, PROMPTS[:2], max_tokens=6)


def check_mixed_batch(llm, hf_base, engine_adapters, prompts=PROMPTS, max_tokens=MAX_TOKENS):
    """ONE generate call mixing every adapter and base requests; each must equal PeftModel alone."""
    names = list(engine_adapters)
    requests = {
        name: LoRARequest(name, i + 1, str(path)) for i, (name, path) in enumerate(engine_adapters.items())
    }
    batch = [(prompt, name) for prompt in prompts for name in [None, *names]]
    lora = [None if name is None else requests[name] for _, name in batch]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    outputs = llm.generate([prompt for prompt, _ in batch], params, lora_request=lora)
    expected = {None: peft_greedy(hf_base, None, prompts, max_tokens)}
    expected |= {name: peft_greedy(hf_base, engine_adapters[name], prompts, max_tokens) for name in names}
    for (prompt, name), ids in zip(batch, token_ids(outputs), strict=True):
        assert ids == expected[name][prompts.index(prompt)], (name, prompt)
    differing = [name for name in names if expected[name] != expected[None]]
    assert len(differing) >= len(names) - 1, "adapters should change greedy outputs"


def test_eviction_rotation_stays_correct_and_pinned_stays_resident(tiny_llama_path, hf_base, tmp_path):
    model, _ = hf_base
    paths = [
        write_peft_adapter(model, tmp_path / f"rot{i}", seed=100 + i, r=4, lora_alpha=16) for i in range(10)
    ]
    requests = [LoRARequest(f"rot{i}", i + 1, str(p)) for i, p in enumerate(paths)]
    llm = make_llm(tiny_llama_path, enable_lora=True, max_loras=2, max_cpu_loras=3, max_lora_rank=8)
    for request in requests:
        llm.add_lora(request)
    assert llm.pin_lora("rot0")
    prompt = PROMPTS[:1]
    expected = [peft_greedy(hf_base, p, prompt, 6)[0] for p in paths]
    params = SamplingParams(temperature=0.0, max_tokens=6)
    for round_ in range(2):
        order = list(range(10)) if round_ == 0 else list(reversed(range(10)))
        outputs = llm.generate(prompt * 11, params, lora_request=[requests[i] for i in order] + [None])
        for i, ids in zip(order, token_ids(outputs), strict=False):
            assert ids == expected[i], f"rot{i} in round {round_}"
        tiers = {info.name: info.tier for info in llm.list_loras()}
        assert tiers["rot0"] in ("device", "host")
        assert sum(tier in ("device", "host") for tier in tiers.values()) <= 3 + 2
    assert llm.list_loras()[0].pinned


def test_rejected_adapters_get_their_error_and_the_engine_keeps_serving(
    tiny_llama_path, hf_base, engine_adapters, tmp_path
):
    llm = make_llm(tiny_llama_path, enable_lora=True, max_loras=2, max_lora_rank=8)
    good = LoRARequest("good", 1, str(engine_adapters["qv"]))
    llm.add_lora(good)
    bad = {
        "use_dora": dict(use_dora=True),
        "modules_to_save": dict(modules_to_save=["lm_head"]),
        "bias": dict(bias="lora_only"),
        "peft_type": dict(peft_type="PREFIX_TUNING"),
        "target_modules": dict(target_modules=["lm_head"]),
        "r": dict(r=16, rank_pattern={}),  # the mlp adapter's rank 16 exceeds max_lora_rank=8
    }
    for i, (field, changes) in enumerate(bad.items()):
        source = engine_adapters["mlp-layer1"] if field == "r" else engine_adapters["qv"]
        path = edit_config(shutil.copytree(source, tmp_path / field), **changes)
        with pytest.raises(AdapterLoadError) as info:
            llm.add_lora(LoRARequest(f"bad-{field}", 10 + i, str(path)))
        assert info.value.field == field
    outputs = llm.generate(PROMPTS, GREEDY, lora_request=good)
    assert token_ids(outputs) == peft_greedy(hf_base, engine_adapters["qv"], PROMPTS)
    assert [info.name for info in llm.list_loras()] == ["good"]


def test_prefix_cache_is_keyed_by_adapter_version(tiny_llama_path, hf_base, engine_adapters, tmp_path):
    prompt = ["Once upon a time, in a land far, far away, there lived a king who had three daughters and"]
    llm = make_llm(tiny_llama_path, enable_lora=True, max_loras=2, max_lora_rank=16, block_size=4)
    path = shutil.copytree(engine_adapters["qv"], tmp_path / "swap")
    first = LoRARequest("swap", 1, str(path))
    for lora, adapter_dir in [(None, None), (first, path), (None, None), (first, path)]:
        expected = peft_greedy(hf_base, adapter_dir, prompt)
        assert token_ids(llm.generate(prompt, GREEDY, lora_request=lora)) == expected
    hits = llm.engine.stats().prefix_cache_hits
    assert hits > 0  # repeated (adapter, prompt) pairs do hit the cache
    # Replace the adapter's files under the same name: the new version must not see the old KV.
    llm.remove_lora("swap")
    shutil.rmtree(path)
    write_peft_adapter(hf_base[0], path, seed=999, r=8, lora_alpha=16)
    expected = peft_greedy(hf_base, path, prompt)
    assert token_ids(llm.generate(prompt, GREEDY, lora_request=LoRARequest("swap", 2, str(path)))) == expected
