"""SlotWeights: base shapes from the wrapped projections, staging an adapter, filling and refilling a slot."""

from __future__ import annotations

import torch
from loraplane.inference_worker.lora import LoRAConfig
from loraplane.inference_worker.lora.slot_weights import SlotWeights

from loraplane.adapter_format import load_peft_config
from tests.inference_worker.lora.test_manager import fused_model

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
