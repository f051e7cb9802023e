"""LoRAConfig and LoRARequest validation."""

from __future__ import annotations

import pytest

from loraplane.inference_worker.errors import InvalidRequestError
from loraplane.inference_worker.lora import LoRAConfig, LoRARequest


def test_defaults_follow_vllm():
    config = LoRAConfig()
    assert (config.max_loras, config.max_lora_rank, config.max_cpu_loras, config.lora_dtype) == (
        4,
        16,
        4,
        "auto",
    )
    assert LoRAConfig(max_loras=2, max_cpu_loras=0).max_cpu_loras == 2


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"max_loras": 0}, "max_loras"),
        ({"max_lora_rank": -1}, "max_lora_rank"),
        ({"max_loras": 4, "max_cpu_loras": 2}, "max_cpu_loras"),
        ({"lora_dtype": "int8"}, "lora_dtype"),
    ],
)
def test_invalid_config_names_the_param(kwargs, param):
    with pytest.raises(InvalidRequestError) as info:
        LoRAConfig(**kwargs)
    assert info.value.param == param


def test_request_is_vllm_compatible():
    request = LoRARequest("sql", 1, "/adapters/sql")
    assert (request.name, request.path, request.adapter_id, request.base_model_name) == (
        "sql",
        "/adapters/sql",
        1,
        None,
    )
    assert request == LoRARequest("sql", 2, "/elsewhere") and hash(request) == hash(
        LoRARequest("sql", 3, "/x")
    )


@pytest.mark.parametrize(
    "args, param",
    [(("", 1, "/p"), "lora_name"), (("a", 0, "/p"), "lora_int_id"), (("a", 1, ""), "lora_path")],
)
def test_invalid_request_names_the_param(args, param):
    with pytest.raises(InvalidRequestError) as info:
        LoRARequest(*args)
    assert info.value.param == param


def test_engine_config_passes_lora_target_modules_as_a_tuple():
    from loraplane.inference_worker.config import EngineConfig

    assert EngineConfig.from_kwargs(lora_target_modules=["q_proj", "o_proj"]).lora_target_modules == (
        "q_proj",
        "o_proj",
    )
    assert EngineConfig().lora_target_modules is None


def test_lora_package_imports_no_torch():
    """LoRARequest and LoRAConfig (what the service builds from flags) load without torch."""
    import subprocess
    import sys

    code = (
        "import sys; from loraplane.inference_worker.lora import LoRAConfig, LoRARequest, adapter_version;"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
