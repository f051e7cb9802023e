"""Engine test fixtures: tiny random Llama/Qwen2 checkpoints and session-scoped engines (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch

from loraplane.inference_worker.testing import TINY, write_tiny_model

PROMPTS = [
    "Hello",
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far, far away, there lived a",
    "1, 2, 3, 4,",
    "What is the meaning of life? Answer in one sentence.",
    "SELECT name FROM",
    "The quick brown fox",
    "A",
    "Translate to French: good morning",
    "import torch\nimport numpy as np\n",
    "List three colors:",
    "Water boils at",
    "The opposite of hot is",
    "In 1969, the first man on the moon was",
    "My favourite food is pizza because it is cheesy, warm, and",
    "Q: 2 + 2 = ?\nA:",
    "The sun rises in the",
    "Rust and Python are two programming languages that",
    "Dear Sir or Madam,",
    "Roses are red, violets are",
    "Once upon a time",
]


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory, demo_model_path) -> str:
    """Tiny random Llama with llama3 rope scaling and tied embeddings (the demo tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    rope = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    config = LlamaConfig(vocab_size=49152, tie_word_embeddings=True, rope_parameters=rope, **TINY)
    return write_tiny_model(LlamaForCausalLM, config, tmp_path_factory.mktemp("tiny-llama"), demo_model_path)


@pytest.fixture(scope="session")
def tiny_qwen2_path(tmp_path_factory, demo_model_path) -> str:
    """Tiny random Qwen2 (qkv bias, untied LM head) with the demo tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=49152, tie_word_embeddings=False, **TINY)
    return write_tiny_model(Qwen2ForCausalLM, config, tmp_path_factory.mktemp("tiny-qwen2"), demo_model_path)


def make_llm(path: str, **kwargs):
    from loraplane.inference_worker import LLM

    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("dtype", "float32")
    kwargs.setdefault("cpu_kv_cache_gb", 0.05)
    return LLM(path, **kwargs)


@pytest.fixture(scope="session")
def smol_llm(demo_model_path):
    return make_llm(demo_model_path, cpu_kv_cache_gb=0.25, max_model_len=512)


@pytest.fixture(scope="session")
def tiny_llama_llm(tiny_llama_path):
    return make_llm(tiny_llama_path)


@pytest.fixture(scope="session")
def tiny_qwen2_llm(tiny_qwen2_path):
    return make_llm(tiny_qwen2_path)


@pytest.fixture(scope="session")
def hf_reference():
    """Greedy HF `generate` per prompt (no padding), cached per (model path, prompt, max_new_tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models: dict[str, tuple] = {}
    cache: dict[tuple, tuple[list[int], torch.Tensor]] = {}

    def run(path: str, prompt: str, max_new_tokens: int) -> tuple[list[int], torch.Tensor]:
        key = (path, prompt, max_new_tokens)
        if key not in cache:
            if path not in models:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
                models[path] = (model, AutoTokenizer.from_pretrained(path))
            model, tok = models[path]
            ids = tok(prompt, return_tensors="pt").input_ids
            with torch.no_grad():
                out = model.generate(
                    ids,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    output_logits=True,
                    return_dict_in_generate=True,
                )
            cache[key] = (out.sequences[0, ids.shape[1] :].tolist(), torch.cat(out.logits).float())
        return cache[key]

    return run
