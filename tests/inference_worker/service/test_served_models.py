"""ServedModels over an EngineClient (the scripted fake): pinned loads, replaces and unloads reach the
engine through the protocol's coroutines, and requests resolve to the active version only."""

from __future__ import annotations

import pytest

from loraplane.inference_worker import errors
from loraplane.inference_worker.service.served_models import AdapterTarget, Residency, ServedModels
from tests.inference_worker.service.fake_engine import FakeEngine


@pytest.fixture
def served() -> tuple[FakeEngine, ServedModels]:
    engine = FakeEngine()
    return engine, ServedModels(engine, engine.model_name, "/models/fake", enable_lora=True)


async def test_pinned_load_is_pinned_in_the_engine_and_reported(served):
    engine, models = served
    await models.load(AdapterTarget("sql", "/adapters/sql", pinned=True))
    assert models.resolve("sql").lora_name == "sql" and models.resolve("") is None
    assert engine.adapters["sql"].pinned
    version = engine.adapters["sql"].version
    assert models.residency() == [Residency("sql", version, "host", True)]


async def test_replace_switches_to_the_new_version_and_drops_the_old(served):
    engine, models = served
    await models.load(AdapterTarget("sql", "/adapters/v1"))
    await models.load(AdapterTarget("sql", "/adapters/v2"))
    internal = models.resolve("sql").lora_name
    assert internal.startswith("sql@") and list(engine.adapters) == [internal]
    assert models.adapters()[0].root == "/adapters/v2"


async def test_unload_stops_resolving_and_removes_from_the_engine(served):
    engine, models = served
    await models.load(AdapterTarget("sql", "/adapters/sql"))
    await models.unload("sql")
    assert not engine.adapters
    with pytest.raises(errors.ModelNotFoundError, match="not served"):
        models.resolve("sql")
    with pytest.raises(errors.AdapterNotFoundError):
        await models.unload("sql")


async def test_an_adapter_named_like_the_base_model_is_refused(served):
    engine, models = served
    with pytest.raises(errors.AdapterLoadError, match="base model name") as caught:
        await models.load(AdapterTarget(engine.model_name, "/adapters/sql"))
    assert caught.value.field == "name" and not engine.adapters
    assert models.resolve(engine.model_name) is None  # the name still reaches the base model
