"""Our target and pattern matching gives peft's answers (the reason it may be a torch-free transcription).

Every case is parsed by `parse_peft_config` and handed to peft's own `LoraConfig`; both must agree on
every module name of a real (tiny) Llama model, and on the rank and alpha of every projection.
"""

from __future__ import annotations

import pytest

from loraplane.adapter_format import AdapterLoadError, matching, parse_peft_config
from tests.inference_worker.lora.conftest import tiny_llama_config

NUM_LAYERS = 3

# adapter_config.json fields: target_modules / exclude_modules / layers_to_transform / layers_pattern.
TARGET_CASES = {
    "list": {"target_modules": ["q_proj", "v_proj"]},
    "all-linear": {"target_modules": "all-linear"},
    "regex": {"target_modules": r".*\.layers\.1\..*(down|up)_proj"},
    "regex-alternation": {"target_modules": r"model\.layers\.\d+\.self_attn\.(q|k|v)_proj"},
    "dotted-suffix": {"target_modules": ["self_attn.o_proj"]},
    "layer-suffix": {"target_modules": ["layers.2.mlp.down_proj", "k_proj"]},
    "full-key": {"target_modules": ["model.layers.0.self_attn.q_proj"]},
    "full-key-ignores-layers": {
        "target_modules": ["model.layers.0.self_attn.q_proj"],
        "layers_to_transform": [1],
    },
    "exclude-key": {
        "target_modules": ["q_proj", "down_proj"],
        "exclude_modules": ["model.layers.0.self_attn.q_proj"],
    },
    "exclude-suffix": {"target_modules": "all-linear", "exclude_modules": ["mlp.up_proj", "k_proj"]},
    "exclude-regex": {"target_modules": ["q_proj", "o_proj"], "exclude_modules": r".*\.layers\.[02]\..*"},
    "layers": {"target_modules": ["q_proj", "down_proj"], "layers_to_transform": [1]},
    "layers-int-pattern": {
        "target_modules": ["q_proj"],
        "layers_to_transform": 0,
        "layers_pattern": "layers",
    },
    "layers-pattern-list": {
        "target_modules": ["gate_proj", "v_proj"],
        "layers_to_transform": [0, 2],
        "layers_pattern": ["layers"],
    },
    "layers-empty": {"target_modules": ["o_proj"], "layers_to_transform": []},
}

# rank_pattern / alpha_pattern: PEFT's get_pattern_key semantics (dotted suffixes, regexes, file order).
PATTERN_CASES = {
    "name": ({"q_proj": 4}, {}),
    "suffix-and-name": ({"layers.1.self_attn.v_proj": 2}, {"v_proj": 3}),
    "regex": ({r"layers\.0\..*q_proj": 2}, {r"(gate|up)_proj": 5}),
    "partial-names-do-not-match": ({"proj": 2, "_proj": 3}, {}),
    "first-in-file-order-wins": ({"q_proj": 4, "self_attn.q_proj": 2}, {}),
    "full-key": ({}, {"model.layers.1.mlp.down_proj": 1}),
}


@pytest.fixture(scope="module")
def llama_module_names():
    """Every module name of a tiny Llama causal LM, as PEFT matches them (lm_head, norms, ... included)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama_config(num_hidden_layers=NUM_LAYERS))
    return model, [name for name, _ in model.named_modules() if name]


def _peft_config(raw, model):
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    # peft expands "all-linear" against the model (every linear layer but the output head).
    return _maybe_include_all_linear_layers(LoraConfig(r=4, **raw), model)


@pytest.mark.parametrize("raw", TARGET_CASES.values(), ids=TARGET_CASES.keys())
def test_targets_match_peft_on_every_module(raw, llama_module_names):
    from peft.tuners.tuners_utils import check_target_module_exists

    model, names = llama_module_names
    ours, theirs = parse_peft_config({"r": 4, **raw}), _peft_config(raw, model)
    assert [n for n in names if ours.targets(n)] == [
        n for n in names if check_target_module_exists(theirs, n)
    ]
    assert any(ours.targets(n) for n in names)


@pytest.mark.parametrize("rank_pattern, alpha_pattern", PATTERN_CASES.values(), ids=PATTERN_CASES.keys())
def test_rank_and_alpha_patterns_match_peft(rank_pattern, alpha_pattern, llama_module_names):
    from peft.utils.other import get_pattern_key

    _, names = llama_module_names
    raw = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}
    ours = parse_peft_config({**raw, "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern})
    for name in names:
        assert ours.rank_for(name) == rank_pattern.get(get_pattern_key(rank_pattern.keys(), name), 8), name
        assert ours.alpha_for(name) == alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), name), 16), (
            name
        )
        for patterns in (rank_pattern, alpha_pattern):
            assert matching.get_pattern_key(patterns, name) == get_pattern_key(patterns.keys(), name)


# (rank_pattern, alpha_pattern, key, rank, alpha): the semantics spelled out, independent of peft.
SPELLED_OUT = [
    ({"q_proj": 4}, {}, "model.layers.0.self_attn.q_proj", 4, 16),
    ({"q_proj": 4}, {}, "model.layers.1.self_attn.v_proj", 8, 16),
    ({"layers.1.self_attn.v_proj": 2}, {"v_proj": 3}, "model.layers.1.self_attn.v_proj", 2, 3),
    ({"proj": 2}, {}, "model.layers.0.self_attn.q_proj", 8, 16),  # whole dotted components only
    ({"q_proj": 4, "self_attn.q_proj": 2}, {}, "model.layers.0.self_attn.q_proj", 4, 16),
]


@pytest.mark.parametrize("rank_pattern, alpha_pattern, key, rank, alpha", SPELLED_OUT)
def test_pattern_semantics(rank_pattern, alpha_pattern, key, rank, alpha):
    raw = {"r": 8, "lora_alpha": 16, "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern}
    config = parse_peft_config(raw)
    assert (config.rank_for(key), config.alpha_for(key)) == (rank, alpha)


# A config is untrusted input: "(.|.)*Z" backtracks exponentially in the key length under Python's re
# (hours per module name); it must be answered at once, accepted or refused.
CATASTROPHIC = "(.|.)*Z"
CATASTROPHIC_CONFIGS = {
    "target_modules": {"target_modules": CATASTROPHIC},
    "exclude_modules": {"target_modules": ["q_proj"], "exclude_modules": CATASTROPHIC},
    "rank_pattern": {"target_modules": ["q_proj"], "rank_pattern": {CATASTROPHIC: 2}},
    "alpha_pattern": {"target_modules": ["q_proj"], "alpha_pattern": {CATASTROPHIC: 2}},
    "layers_pattern": {
        "target_modules": ["q_proj"],
        "layers_to_transform": [1],
        "layers_pattern": CATASTROPHIC,
    },
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("field, raw", CATASTROPHIC_CONFIGS.items(), ids=CATASTROPHIC_CONFIGS.keys())
def test_catastrophic_pattern_is_answered_without_hanging(field, raw):
    key = "model.layers.1.self_attn.q_proj"
    try:
        config = parse_peft_config({"r": 4, **raw})
    except AdapterLoadError as exc:
        assert exc.field == field
        return
    config.targets(key), config.rank_for(key), config.alpha_for(key)


REFUSED_PATTERNS = {
    "backreference": r"(q)\1_proj",
    "lookahead": r"(?!k)q_proj",
    "lookbehind": r"(?<=self_attn\.)q_proj",
    "too-long": "|".join(["q_proj"] * 200),
    "too-large-program": r"\w{1000}" * 4 + "|q_proj",
}


@pytest.mark.parametrize("pattern", REFUSED_PATTERNS.values(), ids=REFUSED_PATTERNS.keys())
@pytest.mark.parametrize("field", ["target_modules", "exclude_modules", "rank_pattern", "alpha_pattern"])
def test_patterns_re2_cannot_run_are_refused_naming_the_field(field, pattern):
    raw = {"target_modules": ["q_proj"], field: pattern}
    if field.endswith("_pattern"):
        raw[field] = {pattern: 2}
    with pytest.raises(AdapterLoadError, match=field) as caught:
        parse_peft_config(raw)
    assert caught.value.field == field
