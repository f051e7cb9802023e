"""adapter_config.json parsing and validation, on adapters written by peft itself."""

from __future__ import annotations

import math
import sys

import pytest
from loraplane.inference_worker.errors import AdapterLoadError, AdapterSourceNotFoundError
from loraplane.inference_worker.lora.peft_config import parse_peft_config, validate_adapter_dir

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


# (rank_pattern, alpha_pattern, key, expected rank, expected alpha): PEFT's get_pattern_key semantics.
PATTERN_CASES = [
    ({"q_proj": 4}, {}, Q0, 4, 16),
    ({"q_proj": 4}, {}, V1, 8, 16),
    ({"layers.1.self_attn.v_proj": 2}, {"v_proj": 3}, V1, 2, 3),
    ({r"layers\.0\..*q_proj": 2}, {}, Q0, 2, 16),
    ({"proj": 2}, {}, Q0, 8, 16),  # a pattern matches whole dotted components only
    ({"_proj": 2}, {}, Q0, 8, 16),
    ({"q_proj": 4, "self_attn.q_proj": 2}, {}, Q0, 4, 16),  # first match in file order wins
    ({}, {"model.layers.1.mlp.down_proj": 1}, DOWN1, 8, 1),
]


@pytest.mark.parametrize("rank_pattern, alpha_pattern, key, rank, alpha", PATTERN_CASES)
def test_rank_and_alpha_patterns_follow_peft(rank_pattern, alpha_pattern, key, rank, alpha):
    from peft.utils.other import get_pattern_key

    raw = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}
    config = parse_peft_config({**raw, "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern})
    assert config.rank_for(key) == rank == rank_pattern.get(get_pattern_key(rank_pattern.keys(), key), 8)
    assert config.alpha_for(key) == alpha == alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), key), 16)


# target_modules / exclude_modules / layers_to_transform against PEFT's check_target_module_exists.
TARGET_CASES = [
    {"target_modules": ["q_proj", "v_proj"]},
    {"target_modules": "all-linear"},
    {"target_modules": r".*\.layers\.1\..*(down|up)_proj"},
    {"target_modules": ["self_attn.o_proj"]},
    {"target_modules": ["q_proj", "down_proj"], "exclude_modules": ["model.layers.0.self_attn.q_proj"]},
    {"target_modules": ["q_proj", "down_proj"], "layers_to_transform": [1]},
    {"target_modules": ["q_proj"], "layers_to_transform": 0, "layers_pattern": "layers"},
]


@pytest.mark.parametrize("raw", TARGET_CASES)
def test_target_matching_follows_peft(raw):
    from loraplane.inference_worker.lora.modules import supported_keys
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    ours = parse_peft_config({"r": 4, **raw})
    theirs = LoraConfig(r=4, **raw)
    if theirs.target_modules == "all-linear":
        theirs.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    for key in supported_keys(2):
        assert ours.targets(key) == bool(check_target_module_exists(theirs, key)), key


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
        (
            lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{"),
            "weights",
        ),
        (lambda d: _truncate(d / "adapter_model.safetensors"), "weights"),
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


def test_missing_directory_is_source_not_found(tmp_path):
    with pytest.raises(AdapterSourceNotFoundError):
        validate_adapter_dir(tmp_path / "nope")


def test_validation_modules_do_not_import_torch():
    """The control plane's imports (config validation, versions, resolution) stay torch-free.

    The parent package is stubbed so only loraplane.inference_worker.lora's own imports are measured."""
    import importlib.util
    import subprocess

    package_dir = importlib.util.find_spec("loraplane.inference_worker").submodule_search_locations[0]
    code = (
        "import sys, types; pkg = types.ModuleType('loraplane.inference_worker');"
        f"pkg.__path__ = [{package_dir!r}]; sys.modules['loraplane.inference_worker'] = pkg;"
        "import loraplane.inference_worker.lora.peft_config, loraplane.inference_worker.lora.resolve;"
        "import loraplane.inference_worker.lora;"
        "from loraplane.inference_worker.lora import LoRARequest, LoRAConfig, adapter_version;"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
