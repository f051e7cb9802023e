"""SlotWeights: base shapes from the wrapped projections, staging an adapter, filling and refilling a slot;
adapter weights checked like untrusted input (dtype, finite values, headers, links out of the folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loraplane.adapter_format import AdapterLoadError, load_peft_config
from loraplane.inference_worker.lora import LoRAConfig
from loraplane.inference_worker.lora.slot_weights import SlotWeights
from tests.inference_worker.lora.test_manager import fused_model
from tests.loraplane.adapter_format.bad_files import MALFORMED_HEADERS, WEIGHTS, link_outside

MLP_IN = ("gate_proj", "up_proj")


def _slot_weights(tiny_llama, **config) -> SlotWeights:
    return SlotWeights(LoRAConfig(**config), fused_model(tiny_llama), "cpu", torch.float32, max_num_tokens=16)


def _load(slots: SlotWeights, adapter) -> object:
    config = load_peft_config(adapter, slots.max_lora_rank, slots.shapes.num_layers)
    return slots.load(adapter, config, version="v")


def test_shapes_come_from_the_wrapped_projections(tiny_llama):
    slots = _slot_weights(tiny_llama, max_loras=2, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
    assert slots.shapes.num_layers == 2
    assert slots.shapes.modules == {
        "q_proj": (32, 32),
        "k_proj": (32, 16),
        "v_proj": (32, 16),
        "o_proj": (32, 32),
    }
    assert [m.lora_names for m in slots.layers[0]] == [["q_proj", "k_proj", "v_proj"], ["o_proj"]]


def test_fill_copies_the_factors_and_zeroes_what_the_adapter_does_not_target(tiny_llama, tiny_adapters):
    slots = _slot_weights(tiny_llama, max_loras=2, max_lora_rank=16)
    weights = _load(slots, tiny_adapters["mlp-layer1"])  # gate_proj and up_proj of layer 1, rank 16
    slots.fill(1, weights)
    assert slots.slot_rank.tolist() == [0, 16]
    for layer_index, modules in enumerate(slots.layers):
        for module in modules:
            for i, name in enumerate(module.lora_names):
                factors = weights.modules.get((layer_index, name))
                expected_b = torch.zeros_like(module.lora_b[i][1]) if factors is None else factors[1]
                assert torch.equal(module.lora_b[i][1], expected_b), (layer_index, name)
                assert not module.lora_b[i][0].any()  # other slots untouched
    slots.fill(1, _load(slots, tiny_adapters["qv"]))  # a refill leaves nothing of the previous adapter
    assert slots.slot_rank.tolist() == [0, 8]
    mlp = [m.lora_b[i][1] for m in slots.layers[1] for i, n in enumerate(m.lora_names) if n in MLP_IN]
    assert len(mlp) == 2 and not any(b.any() for b in mlp)


def _copy(adapter, tmp_path):
    return Path(shutil.copytree(adapter, tmp_path / "adapter"))


def _edit_tensor(adapter, change) -> str:
    """Apply `change` to the first lora_B tensor of the adapter's weights; returns the tensor's key."""
    tensors = load_file(adapter / WEIGHTS)
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key] = change(tensors[key])
    save_file(tensors, adapter / WEIGHTS)
    return key


BAD_VALUES = {
    "nan": (lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), "NaN or Inf"),
    "inf": (lambda t: t.index_fill(0, torch.tensor([1]), float("-inf")), "NaN or Inf"),
    "int32": (lambda t: (t * 100).to(torch.int32), "dtype int32"),
    "int8": (lambda t: t.to(torch.int8), "dtype int8"),
    "bool": (lambda t: t > 0, "dtype bool"),
}


@pytest.mark.parametrize("change, words", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_non_finite_and_non_float_weights_are_refused_naming_the_tensor(
    tiny_llama, tiny_adapters, tmp_path, change, words
):
    adapter = _copy(tiny_adapters["qv"], tmp_path)
    key = _edit_tensor(adapter, change)
    with pytest.raises(AdapterLoadError, match=words) as caught:
        _load(_slot_weights(tiny_llama), adapter)
    assert key in str(caught.value) and caught.value.field == "weights"


def test_weights_that_overflow_the_serving_dtype_are_refused(tiny_llama, tiny_adapters, tmp_path):
    adapter = _copy(tiny_adapters["qv"], tmp_path)
    _edit_tensor(adapter, lambda t: t * 1e6)  # finite in float32, inf in float16 once scaled
    slots = SlotWeights(LoRAConfig(), fused_model(tiny_llama), "cpu", torch.float16, max_num_tokens=16)
    with pytest.raises(AdapterLoadError, match="overflows torch.float16"):
        _load(slots, adapter)


@pytest.mark.parametrize("data", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
def test_malformed_safetensors_headers_are_adapter_load_errors(tiny_llama, tiny_adapters, tmp_path, data):
    adapter = _copy(tiny_adapters["qv"], tmp_path)
    (adapter / WEIGHTS).write_bytes(data)
    with pytest.raises(AdapterLoadError, match="cannot read adapter weights") as caught:
        _load(_slot_weights(tiny_llama), adapter)
    assert caught.value.field == "weights"


def test_weights_linked_from_outside_the_adapter_are_not_read(tiny_llama, tiny_adapters, tmp_path):
    adapter = _copy(tiny_adapters["qv"], tmp_path)
    config = load_peft_config(adapter)
    link_outside(adapter, WEIGHTS, tmp_path / "elsewhere")
    with pytest.raises(AdapterLoadError, match=f"{WEIGHTS} is a link to a file outside"):
        _slot_weights(tiny_llama).load(adapter, config, version="v")
