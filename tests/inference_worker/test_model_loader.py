"""model_loader: device, dtype and context-length resolution, and `load_model` feeding the engine."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from loraplane.inference_worker.config import DTYPE_ALIASES, EngineConfig
from loraplane.inference_worker.errors import ModelLoadError
from loraplane.inference_worker.layers.cpu_layout import bf16_supported
from loraplane.inference_worker.llm_engine import LLMEngine
from loraplane.inference_worker.model_loader import (
    load_model,
    resolve_device,
    resolve_dtype,
    resolve_max_model_len,
)


def test_every_dtype_name_is_a_torch_dtype():
    cpu = torch.device("cpu")
    for name in DTYPE_ALIASES:
        assert isinstance(resolve_dtype(name, LlamaConfig(), cpu), torch.dtype)
    assert resolve_dtype("half", LlamaConfig(), cpu) is torch.float16


CPU_AUTO = torch.bfloat16 if bf16_supported() else torch.float32


@pytest.mark.parametrize(
    ("checkpoint", "device", "expected"),
    [
        (torch.float16, "cpu", CPU_AUTO),
        (torch.float32, "cpu", CPU_AUTO),
        (torch.float16, "cuda", torch.float16),
        (torch.float32, "cuda", torch.bfloat16),
        (None, "cuda", torch.bfloat16),
    ],
)
def test_auto_dtype_is_bf16_on_cpus_with_bf16_kernels_else_fp32_and_half_on_cuda(
    checkpoint, device, expected
):
    hf_config = LlamaConfig(dtype=checkpoint)
    assert resolve_dtype("auto", hf_config, torch.device(device)) is expected


def test_device_auto_follows_cuda_availability():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_max_model_len_is_capped_by_positions_and_sliding_window():
    assert resolve_max_model_len(None, LlamaConfig(max_position_embeddings=256)) == 256
    assert resolve_max_model_len(64, LlamaConfig(max_position_embeddings=256)) == 64
    windowed = LlamaConfig(max_position_embeddings=256, sliding_window=128)
    assert resolve_max_model_len(None, windowed) == 128
    with pytest.raises(ModelLoadError, match="exceeds the model's limit of 256"):
        resolve_max_model_len(512, LlamaConfig(max_position_embeddings=256))


def test_the_engine_is_built_from_a_loaded_model(tiny_llama_path):
    config = EngineConfig(model=tiny_llama_path, device="cpu", dtype="float32", cpu_kv_cache_gb=0.01)
    loaded = load_model(config)
    assert (loaded.path, loaded.name, loaded.max_model_len) == (tiny_llama_path, tiny_llama_path, 256)
    assert loaded.tokenizer is not None and 2 in loaded.eos_token_ids
    engine = LLMEngine(config, loaded)
    assert engine.runner.model is loaded.model and engine.tokenizer is loaded.tokenizer
