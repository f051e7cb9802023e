"""LLMEngine's adapter API (add/remove/pin/list_loras): one check, one error without enable_lora."""

from __future__ import annotations

import pytest

from loraplane.inference_worker.errors import AdapterNotFoundError, InvalidRequestError
from loraplane.inference_worker.llm_engine import LORA_DISABLED
from loraplane.inference_worker.lora import LoRARequest
from tests.inference_worker.conftest import make_llm
from tests.inference_worker.lora.conftest import write_peft_adapter

ADAPTER_CALLS = [
    ("add_lora", (LoRARequest("a", 1, "/nowhere"),)),
    ("remove_lora", ("a",)),
    ("remove_lora", (1,)),
    ("pin_lora", ("a",)),
    ("list_loras", ()),
]


@pytest.mark.parametrize(("method", "args"), ADAPTER_CALLS)
def test_adapter_calls_without_enable_lora_give_the_one_error(tiny_llama_llm, method, args):
    for target in (tiny_llama_llm, tiny_llama_llm.engine):
        with pytest.raises(InvalidRequestError, match="enable_lora=True") as info:
            getattr(target, method)(*args)
        assert str(info.value) == LORA_DISABLED and info.value.param == "lora_request"


def test_a_request_with_an_adapter_gets_the_same_error(tiny_llama_llm):
    with pytest.raises(InvalidRequestError) as info:
        tiny_llama_llm.engine.add_request("r", "hi", lora_request=LoRARequest("a", 1, "/nowhere"))
    assert str(info.value) == LORA_DISABLED
    assert not tiny_llama_llm.engine.has_unfinished_requests()


@pytest.fixture(scope="module")
def adapter_paths(tiny_llama_path, tmp_path_factory):
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(tiny_llama_path)
    root = tmp_path_factory.mktemp("adapters")
    return [write_peft_adapter(base, root / f"a{seed}", seed=seed, r=4, lora_alpha=8) for seed in (1, 2)]


def test_list_loras_reflects_add_pin_and_remove(tiny_llama_path, adapter_paths):
    engine = make_llm(tiny_llama_path, enable_lora=True, max_loras=2, max_cpu_loras=3, max_lora_rank=8).engine
    assert engine.list_loras() == []
    assert engine.add_lora(LoRARequest("sql", 7, str(adapter_paths[0])))
    assert engine.add_lora(LoRARequest("chat", 8, str(adapter_paths[1])))
    assert sorted((info.name, info.int_id) for info in engine.list_loras()) == [("chat", 8), ("sql", 7)]
    assert engine.pin_lora(7)
    assert {info.name: info.pinned for info in engine.list_loras()} == {"sql": True, "chat": False}
    assert engine.remove_lora(7)
    assert [info.name for info in engine.list_loras()] == ["chat"]
    assert engine.remove_lora("chat") and engine.list_loras() == []
    assert not engine.remove_lora("chat")
    with pytest.raises(AdapterNotFoundError, match="lora_int_id 7"):
        engine.remove_lora(7)
    with pytest.raises(AdapterNotFoundError):
        engine.pin_lora("sql")
