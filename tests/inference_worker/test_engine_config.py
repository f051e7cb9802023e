"""EngineConfig: torch-free, every bad value rejected at construction with the option's name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loraplane.inference_worker.config import CPU_LONG_PREFILL_TOKENS, EngineConfig


def test_importing_the_config_does_not_import_torch():
    code = (
        "import sys; from loraplane.inference_worker.config import EngineConfig; "
        "EngineConfig(enable_lora=True, dtype='bf16', device='cuda:1'); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"dtype": "int8"}, "dtype"),
        ({"device": "gpu"}, "device"),
        ({"device": "cuda:x"}, "device"),
        ({"load_format": "gguf"}, "load_format"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"block_size": -16}, "block_size"),
        ({"max_model_len": 0}, "max_model_len"),
        ({"max_num_batched_tokens": 0}, "max_num_batched_tokens"),
        ({"num_kv_blocks": 0}, "num_kv_blocks"),
        ({"max_num_seqs": 1.5}, "max_num_seqs"),
        ({"gpu_memory_utilization": 0.0}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"cpu_kv_cache_gb": 0}, "cpu_kv_cache_gb"),
        ({"enable_lora": True, "max_loras": 0}, "max_loras"),
        ({"enable_lora": True, "max_loras": 4, "max_cpu_loras": 2}, "max_cpu_loras"),
        ({"enable_lora": True, "lora_dtype": "int8"}, "lora_dtype"),
        ({"enable_lora": True, "lora_target_modules": ["lm_head"]}, "lora_target_modules"),
    ],
)
def test_bad_values_raise_value_error_naming_the_option(kwargs, option):
    with pytest.raises(ValueError, match=option):
        EngineConfig(**kwargs)


def test_lora_settings_are_checked_only_with_enable_lora():
    assert EngineConfig(max_loras=4, max_cpu_loras=2).max_cpu_loras == 2
    lora = EngineConfig(enable_lora=True, max_loras=2, max_lora_rank=8).lora_config()
    assert (lora.max_loras, lora.max_lora_rank, lora.max_cpu_loras) == (2, 8, 2)


def test_from_kwargs_rejects_unknown_options():
    with pytest.raises(TypeError, match="max_num_seq"):
        EngineConfig.from_kwargs(max_num_seq=4)
    assert EngineConfig.from_kwargs(model="m", dtype="half").dtype == "half"


@pytest.mark.parametrize(
    ("async_scheduling", "device_type", "expected"),
    [(None, "cuda", True), (None, "cpu", False), (False, "cuda", False), (True, "cpu", True)],
)
def test_async_scheduling_defaults_to_cuda_only(async_scheduling, device_type, expected):
    config = EngineConfig(async_scheduling=async_scheduling)
    assert config.uses_async_scheduling(device_type) is expected


def test_prefill_cap_defaults_by_device_and_can_be_set_or_turned_off():
    assert EngineConfig().prefill_cap("cpu") == CPU_LONG_PREFILL_TOKENS
    assert EngineConfig().prefill_cap("cuda") == 0
    assert EngineConfig(long_prefill_token_threshold=0).prefill_cap("cpu") == 0
    assert EngineConfig(long_prefill_token_threshold=512).prefill_cap("cuda") == 512
    with pytest.raises(ValueError, match="long_prefill_token_threshold"):
        EngineConfig(long_prefill_token_threshold=-1)
