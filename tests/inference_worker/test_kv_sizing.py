"""KV cache sizing: from max_num_seqs x max_model_len on CPU, or a byte budget, and the CPU defaults."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig

from loraplane.inference_worker.config import (
    CPU_MAX_MODEL_LEN,
    CPU_MAX_NUM_SEQS,
    CUDA_MAX_NUM_SEQS,
    EngineConfig,
    parse_bytes,
)
from loraplane.inference_worker.errors import ModelLoadError
from loraplane.inference_worker.model_loader import resolve_max_model_len
from loraplane.inference_worker.model_runner import ModelRunner

# 2 layers x 2 KV heads x head_dim 8, K and V: 64 values per token; 16-token blocks in fp32: 4 KiB a block.
HF_CONFIG = LlamaConfig(
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, vocab_size=64
)
BLOCK_BYTES = 2 * 2 * 2 * 8 * 16 * 4


def runner(max_model_len: int, dtype: torch.dtype = torch.float32, **config) -> ModelRunner:
    engine_config = EngineConfig(device="cpu", **config)
    return ModelRunner(
        engine_config, HF_CONFIG, nn.Module(), torch.device("cpu"), dtype, max_model_len, eos_token_ids={2}
    )


@pytest.mark.parametrize(
    ("max_num_seqs", "max_model_len", "blocks"),
    [(1, 16, 1), (4, 2048, 4 * 128), (3, 100, 19), (8, 2048, 4 * 128), (256, 64, 16)],
)
def test_cpu_cache_holds_up_to_four_sequences_of_max_model_len(max_num_seqs, max_model_len, blocks):
    r = runner(max_model_len, max_num_seqs=max_num_seqs)
    assert r.block_bytes() == BLOCK_BYTES
    assert r.num_blocks_to_allocate(2048) == blocks == -(-min(max_num_seqs, 4) * max_model_len // 16)


def test_half_precision_halves_the_block_not_the_block_count():
    r = runner(512, dtype=torch.bfloat16, max_num_seqs=2)
    assert r.block_bytes() == BLOCK_BYTES // 2 and r.num_blocks_to_allocate(2048) == 64


def test_a_byte_budget_buys_whole_blocks_up_to_what_the_sequences_can_use():
    assert runner(256, max_num_seqs=4, kv_cache_memory=40 * BLOCK_BYTES + 7).num_blocks_to_allocate(1) == 40
    # more memory than max_num_seqs full sequences can use is not allocated
    assert runner(256, max_num_seqs=2, kv_cache_memory=2**30).num_blocks_to_allocate(1) == 32
    assert (
        runner(256, max_num_seqs=4, cpu_kv_cache_gb=20 * BLOCK_BYTES / 2**30).num_blocks_to_allocate(1) == 20
    )


def test_a_budget_below_one_full_sequence_is_refused_with_the_fix():
    with pytest.raises(ModelLoadError, match=r"kv_cache_memory: .*max_model_len=1024 .* at most 256"):
        runner(1024, kv_cache_memory=16 * BLOCK_BYTES).num_blocks_to_allocate(1)


def test_num_kv_blocks_overrides_every_sizing():
    assert runner(1024, num_kv_blocks=3, kv_cache_memory=2**30).num_blocks_to_allocate(1) == 3


def test_max_num_seqs_defaults_by_device():
    assert EngineConfig(device="cpu").max_num_seqs == CPU_MAX_NUM_SEQS
    assert EngineConfig(device="cuda").max_num_seqs == CUDA_MAX_NUM_SEQS
    assert EngineConfig(device="cpu", max_num_seqs=32).max_num_seqs == 32
    expected = CUDA_MAX_NUM_SEQS if torch.cuda.is_available() else CPU_MAX_NUM_SEQS
    assert EngineConfig().max_num_seqs == expected


def test_cpu_caps_an_unset_max_model_len_but_not_a_given_one():
    long = LlamaConfig(max_position_embeddings=8192)
    assert resolve_max_model_len(None, long, torch.device("cpu")) == CPU_MAX_MODEL_LEN
    assert resolve_max_model_len(None, long, torch.device("cuda")) == 8192
    assert resolve_max_model_len(4096, long, torch.device("cpu")) == 4096


@pytest.mark.parametrize(
    ("text", "value"),
    [("1048576", 2**20), ("512MiB", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("2GB", 2 * 10**9), ("2G", 2**31)],
)
def test_byte_sizes_parse_like_vllm(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-5", "1.5.2GB", "3XB"])
def test_bad_byte_sizes_name_the_accepted_forms(text):
    with pytest.raises(ValueError, match="512MiB"):
        parse_bytes(text)


def test_bad_kv_cache_memory_names_the_option():
    with pytest.raises(ValueError, match="kv_cache_memory"):
        EngineConfig(device="cpu", kv_cache_memory=0)
