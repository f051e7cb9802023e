"""EngineClient: the async engine and the service tests' fake both keep the protocol, member by member.

A member's kind decides how the service calls it, so it must match exactly: a property (or plain
attribute) is read, a coroutine method is awaited, a plain method (or async generator) is called.
"""

from __future__ import annotations

import inspect

import pytest

from loraplane.inference_worker.async_engine import AsyncLLMEngine
from loraplane.inference_worker.engine_client import EngineClient
from tests.inference_worker.service.fake_engine import FakeEngine


def protocol_members() -> dict[str, object]:
    return {name: member for name, member in vars(EngineClient).items() if not name.startswith("_")}


def kind(member: object) -> str:
    if isinstance(member, property) or not callable(member):
        return "read"
    return "await" if inspect.iscoroutinefunction(member) else "call"


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_protocol_names_what_the_service_uses():
    assert set(protocol_members()) == {
        "model_name",
        "max_model_len",
        "tokenizer",
        "is_running",
        "start",
        "shutdown",
        "generate",
        "abort",
        "stats",
        "add_lora",
        "remove_lora",
        "pin_lora",
        "list_loras",
    }


@pytest.mark.parametrize("implementation", [AsyncLLMEngine, FakeEngine])
@pytest.mark.parametrize("name", sorted(protocol_members()))
def test_implementation_keeps_the_protocol(implementation, name):
    expected = protocol_members()[name]
    actual = inspect.getattr_static(implementation, name)
    assert kind(actual) == kind(expected), f"{implementation.__name__}.{name}"
    if kind(expected) != "read":
        assert parameters(actual) == parameters(expected), f"{implementation.__name__}.{name}"
    if name == "generate":
        assert inspect.isasyncgenfunction(actual)


async def test_a_fake_engine_is_an_engine_client_at_run_time():
    engine = FakeEngine()
    await engine.start()
    assert isinstance(engine, EngineClient) and engine.is_running
