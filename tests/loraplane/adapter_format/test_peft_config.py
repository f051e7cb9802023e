"""adapter_config.json parsing and validation, on adapters written by peft itself.

Matching semantics (targets, rank/alpha patterns) are checked against peft in test_matching.py.
"""

from __future__ import annotations

import math

import pytest

from loraplane.adapter_format import (
    SUPPORTED_MODULES,
    AdapterLoadError,
    AdapterSourceNotFoundError,
    parse_peft_config,
    validate_adapter_dir,
)
from tests.inference_worker.lora.conftest import edit_config

Q0 = "model.layers.0.self_attn.q_proj"
V1 = "model.layers.1.self_attn.v_proj"
DOWN1 = "model.layers.1.mlp.down_proj"
BAD_HEADER = (16).to_bytes(8, "little") + b"{"


def test_peft_written_adapter_validates(make_adapter):
    config, version = validate_adapter_dir(make_adapter(r=4, lora_alpha=8), max_lora_rank=16)
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (4, 8, {"q_proj", "v_proj"})
    assert config.targets(Q0) and not config.targets(DOWN1)
    assert config.scaling_for(Q0) == 2.0
    assert len(version) == 64


def test_rslora_scaling_uses_sqrt_rank():
    config = parse_peft_config({"r": 16, "lora_alpha": 8, "use_rslora": True, "target_modules": ["q_proj"]})
    assert config.scaling_for(Q0) == pytest.approx(8 / math.sqrt(16))


def test_targeted_modules_lists_supported_modules_in_canonical_order():
    config = parse_peft_config({"target_modules": ["down_proj", "q_proj"], "layers_to_transform": [1]})
    assert config.targeted_modules(2) == ("q_proj", "down_proj")
    assert config.targeted_modules(1) == ()  # layer 1 is beyond the first layer
    assert parse_peft_config({"target_modules": "all-linear"}).targeted_modules(1) == SUPPORTED_MODULES


# (config changes, field the error must name)
REJECTIONS = [
    ({"use_dora": True}, "use_dora"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"bias": "all"}, "bias"),
    ({"bias": "lora_only"}, "bias"),
    ({"peft_type": "IA3"}, "peft_type"),
    ({"lora_bias": True}, "lora_bias"),
    ({"r": 64}, "r"),
    ({"r": 0}, "r"),
    ({"rank_pattern": {"q_proj": 32}}, "rank_pattern"),
    ({"lora_alpha": "big"}, "lora_alpha"),
    ({"target_modules": ["q_proj", "lm_head"]}, "target_modules"),
    ({"target_modules": ["embed_tokens"]}, "target_modules"),
    ({"target_modules": ["c_attn"]}, "target_modules"),
    ({"target_modules": ".*lm_head"}, "target_modules"),
    ({"target_modules": "(("}, "target_modules"),
    ({"target_modules": []}, "target_modules"),
    ({"alpha_pattern": {"q_proj": None}}, "alpha_pattern"),
    ({"layer_replication": [[0, 1]]}, "layer_replication"),
]


@pytest.mark.parametrize("changes, field", REJECTIONS)
def test_rejections_name_the_field(make_adapter, changes, field):
    adapter = edit_config(make_adapter(), **changes)
    with pytest.raises(AdapterLoadError) as info:
        validate_adapter_dir(adapter, max_lora_rank=16)
    assert info.value.field == field
    assert field.split("_")[0] in str(info.value).lower() or field == "modules_to_save"


@pytest.mark.parametrize(
    "damage, field",
    [
        (lambda d: (d / "adapter_model.safetensors").unlink(), "weights"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(BAD_HEADER), "weights"),
        (lambda d: _truncate(d / "adapter_model.safetensors"), "weights"),
        (lambda d: _append(d / "adapter_model.safetensors", b"junk"), "weights"),
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b""), "weights"),
        (lambda d: (d / "adapter_config.json").write_text("{not json"), "adapter_config"),
        (lambda d: (d / "adapter_config.json").unlink(), "source"),
    ],
)
def test_missing_or_corrupt_files(make_adapter, damage, field):
    adapter = make_adapter()
    damage(adapter)
    with pytest.raises(AdapterLoadError) as info:
        validate_adapter_dir(adapter)
    assert info.value.field == field


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])


def _append(path, data):
    path.write_bytes(path.read_bytes() + data)


def test_missing_directory_is_source_not_found(tmp_path):
    with pytest.raises(AdapterSourceNotFoundError):
        validate_adapter_dir(tmp_path / "nope")
