"""LoRAManager: per-token mixed-adapter projections match PEFT, caches, pinning, rejections."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from torch import nn

from loraplane.inference_worker.context import Context, set_context
from loraplane.inference_worker.errors import (
    AdapterAlreadyLoadedError,
    AdapterLoadError,
    AdapterNotFoundError,
)
from loraplane.inference_worker.lora import LoRAConfig, LoRAManager, LoRARequest
from tests.inference_worker.lora.conftest import (
    ADAPTER_SPECS,
    edit_config,
    tiny_llama_config,
    write_peft_adapter,
)

PROJECTIONS = {  # engine module -> HF modules stacked along its output
    "self_attn.qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    "self_attn.o_proj": ["self_attn.o_proj"],
    "mlp.gate_up_proj": ["mlp.gate_proj", "mlp.up_proj"],
    "mlp.down_proj": ["mlp.down_proj"],
}


class ContractLinear(nn.Module):
    """The engine's linear-layer contract: in_features, output_sizes, lora_names, weight, forward."""

    def __init__(self, weights: list[torch.Tensor], names: list[str]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.cat(weights), requires_grad=False)
        self.bias = None
        self.in_features = weights[0].shape[1]
        self.output_sizes = [w.shape[0] for w in weights]
        self.lora_names = names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()


def fused_model(hf_model) -> nn.Module:
    """A model shaped like the engine's (model.model.layers[i].self_attn.qkv_proj, ...) from HF weights."""
    layers = nn.ModuleList()
    for hf_layer in hf_model.model.layers:
        layer = nn.Module()
        layer.self_attn, layer.mlp = nn.Module(), nn.Module()
        for fused, parts in PROJECTIONS.items():
            weights = [hf_layer.get_submodule(p).weight.detach().clone() for p in parts]
            parent, attr = fused.split(".")
            setattr(getattr(layer, parent), attr, ContractLinear(weights, [p.split(".")[1] for p in parts]))
        layers.append(layer)
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = layers
    return model


def make_manager(hf_model, **config) -> tuple[LoRAManager, nn.Module]:
    model = fused_model(hf_model)
    return LoRAManager(LoRAConfig(**config), model, "cpu", torch.float32, max_num_tokens=64), model


def add(manager, name, path, int_id=1):
    return manager.add(LoRARequest(name, int_id, str(path))).result(timeout=30)


@pytest.fixture(scope="module")
def peft_model(tiny_llama, tiny_adapters):
    from peft import PeftModel

    names = list(tiny_adapters)
    model = PeftModel.from_pretrained(
        copy.deepcopy(tiny_llama), tiny_adapters[names[0]], adapter_name=names[0]
    )
    for name in names[1:]:
        model.load_adapter(tiny_adapters[name], adapter_name=name)
    return model.eval()


def test_mixed_batch_projections_match_peft_per_token(tiny_llama, tiny_adapters, peft_model):
    names = list(tiny_adapters)
    manager, model = make_manager(tiny_llama, max_loras=len(names), max_lora_rank=16)
    versions = [add(manager, name, tiny_adapters[name], i + 1).version for i, name in enumerate(names)]
    slot_of = manager.activate(set(versions))
    token_adapters = [None, *names, None, *reversed(names)]
    token_slots = torch.tensor(
        [-1 if n is None else slot_of[versions[names.index(n)]] for n in token_adapters]
    )
    manager.meta.prepare(token_slots, manager.slot_rank)
    x = torch.randn(
        len(token_adapters), tiny_llama.config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    x_mlp = torch.randn(len(token_adapters), tiny_llama.config.intermediate_size)
    base = peft_model.base_model.model.model
    for layer_index, layer in enumerate(model.model.layers):
        for fused, parts in PROJECTIONS.items():
            inputs = x_mlp if fused == "mlp.down_proj" else x
            with set_context(Context(lora_meta=manager.meta)):
                ours = layer.get_submodule(fused)(inputs)
            expected = peft_rows(peft_model, base.layers[layer_index], parts, inputs, token_adapters)
            torch.testing.assert_close(
                ours, expected, rtol=1e-5, atol=1e-5, msg=f"layer {layer_index} {fused}"
            )


def peft_rows(peft_model, hf_layer, parts, inputs, token_adapters):
    rows = []
    for t, name in enumerate(token_adapters):
        if name is None:
            with peft_model.disable_adapter():
                rows.append(torch.cat([hf_layer.get_submodule(p)(inputs[t : t + 1]) for p in parts], dim=-1))
        else:
            peft_model.set_adapter(name)
            rows.append(torch.cat([hf_layer.get_submodule(p)(inputs[t : t + 1]) for p in parts], dim=-1))
    return torch.cat(rows)


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_eviction_rotation_keeps_pinned_and_reloads_in_background(tiny_llama, tmp_path):
    manager, _ = make_manager(tiny_llama, max_loras=2, max_cpu_loras=3, max_lora_rank=8)
    paths = [write_peft_adapter(tiny_llama, tmp_path / f"a{i}", seed=i, r=4) for i in range(10)]
    infos = [add(manager, f"a{i}", p, i + 1) for i, p in enumerate(paths)]
    assert manager.pin("a0")
    for step in range(30):
        info = infos[step % 10]
        if not manager.is_ready(info.version):
            assert manager.lookup(info.name).tier in ("loading", "host")
            wait_until(lambda v=info.version: manager.is_ready(v))
        batch = {info.version, infos[0].version}
        slot_of = manager.activate(batch)
        assert set(slot_of) == batch and len(set(slot_of.values())) == len(batch)
        tiers = {i.name: i.tier for i in manager.list()}
        assert tiers["a0"] == "device" and manager.lookup("a0").pinned
        assert sum(t in ("device", "host") for t in tiers.values()) <= 3 + 2
    assert manager.lookup("a0").tier == "device"


def test_slot_contents_follow_the_adapter_after_eviction(tiny_llama, tiny_adapters):
    """Re-activating an adapter into a different slot gives the same per-token output."""
    manager, model = make_manager(tiny_llama, max_loras=1, max_cpu_loras=2, max_lora_rank=16)
    qv, rs = add(manager, "qv", tiny_adapters["qv"]), add(manager, "rs", tiny_adapters["all-rslora"], 2)
    qkv = model.model.layers[0].self_attn.qkv_proj
    x = torch.randn(3, tiny_llama.config.hidden_size)

    def run(version):
        slot = manager.activate({version})[version]
        manager.meta.prepare(torch.full((3,), slot), manager.slot_rank)
        with set_context(Context(lora_meta=manager.meta)):
            return qkv(x)

    first = run(qv.version)
    other = run(rs.version)
    assert not torch.allclose(first, other)
    torch.testing.assert_close(run(qv.version), first)


def test_rank8_adapter_in_rank16_slot_zero_pads_and_reports_rank(tiny_llama, tiny_adapters):
    manager, model = make_manager(tiny_llama, max_loras=2, max_lora_rank=16)
    info = add(manager, "qv", tiny_adapters["qv"])
    slot = manager.activate({info.version})[info.version]
    assert info.rank == 8 and int(manager.slot_rank[slot]) == 8
    qkv = model.model.layers[0].self_attn.qkv_proj
    assert qkv.lora_a[0][slot, 8:].abs().sum() == 0 and qkv.lora_a[1][slot].abs().sum() == 0  # k untargeted


def test_add_is_idempotent_and_conflicts_are_reported(tiny_llama, tiny_adapters, make_adapter):
    manager, _ = make_manager(tiny_llama)
    first = add(manager, "qv", tiny_adapters["qv"])
    assert add(manager, "qv", tiny_adapters["qv"]) == first
    with pytest.raises(AdapterAlreadyLoadedError):
        add(manager, "qv", make_adapter("changed", seed=42))
    assert manager.remove("qv") and not manager.remove("qv")
    with pytest.raises(AdapterNotFoundError):
        manager.lookup("qv")
    assert manager.is_ready(first.version)  # in-flight requests on a removed adapter still run


def test_same_files_under_two_names_share_a_version(tiny_llama, tiny_adapters):
    manager, _ = make_manager(tiny_llama)
    a, b = add(manager, "one", tiny_adapters["qv"]), add(manager, "two", tiny_adapters["qv"], 2)
    assert a.version == b.version and b.rank == 8


def _wrong_hidden_size(tmp_path):
    from transformers import LlamaForCausalLM

    other = LlamaForCausalLM(tiny_llama_config(hidden_size=48, num_attention_heads=4))
    return write_peft_adapter(other, tmp_path / "other-base")


# (how to make the adapter, field the AdapterLoadError names)
REJECTED = [
    (lambda make, tmp: edit_config(make("dora"), use_dora=True), "use_dora"),
    (lambda make, tmp: edit_config(make("mts"), modules_to_save=["lm_head"]), "modules_to_save"),
    (lambda make, tmp: edit_config(make("bias"), bias="all"), "bias"),
    (lambda make, tmp: edit_config(make("ia3"), peft_type="IA3"), "peft_type"),
    (lambda make, tmp: make("big", r=32, lora_alpha=32), "r"),
    (lambda make, tmp: edit_config(make("unknown"), target_modules=["c_attn"]), "target_modules"),
    (lambda make, tmp: edit_config(make("lie", r=4), r=8), "r"),
    (lambda make, tmp: _wrong_hidden_size(tmp), "shape"),
    (lambda make, tmp: (make("nofile") / "adapter_model.safetensors").unlink() or tmp / "nofile", "weights"),
]


def test_each_rejection_names_its_field_and_others_keep_working(
    tiny_llama, tiny_adapters, make_adapter, tmp_path
):
    manager, _ = make_manager(tiny_llama, max_lora_rank=16)
    good = add(manager, "good", tiny_adapters["qv"])
    for i, (build, field) in enumerate(REJECTED):
        future = manager.add(LoRARequest(f"bad{i}", 100 + i, str(build(make_adapter, tmp_path))))
        error = future.exception(timeout=30)
        assert isinstance(error, AdapterLoadError) and error.field == field, (field, error)
    assert [i.name for i in manager.list()] == ["good"]
    assert manager.activate({good.version}) == {good.version: 0}


def test_adapter_specs_cover_the_features():
    specs = ADAPTER_SPECS.values()
    assert {s["r"] for s in specs} >= {2, 4, 8, 16}
    assert any(s.get("use_rslora") for s in specs) and any(s.get("rank_pattern") for s in specs)
    assert any(s.get("alpha_pattern") for s in specs) and any(
        isinstance(s["target_modules"], str) for s in specs
    )


def test_remove_while_loading_discards_the_load(tiny_llama, tiny_adapters, monkeypatch):
    import threading

    manager, _ = make_manager(tiny_llama)
    release = threading.Event()
    original = manager._load
    monkeypatch.setattr(manager, "_load", lambda *args: release.wait(10) and original(*args))
    future = manager.add(LoRARequest("slow", 1, str(tiny_adapters["qv"])))
    assert [info.tier for info in manager.list()] == ["loading"]
    assert manager.remove("slow")
    release.set()
    with pytest.raises(AdapterNotFoundError, match="removed while it was loading"):
        future.result(timeout=30)
    assert manager.list() == []


QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


def test_target_modules_wrap_only_those_projections(tiny_llama, tiny_adapters):
    from loraplane.inference_worker.lora.layers import LoRALinear

    manager, model = make_manager(tiny_llama, max_loras=2, target_modules=QKVO)
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, LoRALinear) and isinstance(layer.self_attn.o_proj, LoRALinear)
    assert not isinstance(layer.mlp.gate_up_proj, LoRALinear) and not isinstance(
        layer.mlp.down_proj, LoRALinear
    )
    full, _ = make_manager(tiny_llama, max_loras=2)
    for m in (manager, full):
        add(m, "qv", tiny_adapters["qv"])
        m.activate({m.lookup("qv").version})
    for ours, reference in zip(manager.layers[1], full.layers[1][:2], strict=True):
        for a, b in zip(ours.lora_b, reference.lora_b, strict=True):
            assert torch.equal(a, b)


def test_adapter_outside_target_modules_is_rejected_naming_the_module(tiny_llama, tiny_adapters):
    manager, _ = make_manager(tiny_llama, target_modules=QKVO)
    with pytest.raises(AdapterLoadError, match="gate_proj") as info:
        add(manager, "mlp", tiny_adapters["mlp-layer1"])
    assert info.value.field == "target_modules"
    assert add(manager, "regex", tiny_adapters["regex"]).name == "regex"  # the engine keeps serving


@pytest.mark.parametrize("bad", [("q_proj", "lm_head"), ()])
def test_target_modules_config_is_validated(bad):
    from loraplane.inference_worker.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError) as info:
        LoRAConfig(target_modules=bad)
    assert info.value.param == "lora_target_modules"
    assert LoRAConfig(target_modules=["o_proj", "q_proj", "q_proj"]).target_modules == ("q_proj", "o_proj")
