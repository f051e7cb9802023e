"""Nothing slow runs on the worker's event loop: while a prompt of several MB is tokenized (Generate with
text or chat, Tokenize), the same server still answers health checks and ListModels and the control-plane
client still sends heartbeats. Before this held, tokenizing a 10 MB body blocked the loop for many
seconds, heartbeats stopped and the control plane marked the worker down.

The tokenizer is the demo model's real one; the server is a real grpc.aio server in the test's loop with
a scripted engine. The check is an ordering, not a wall-clock bound: every probe must be answered while
the big prompt's `encode` is still running.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from worker_process import collect, inference_stub

from loraplane.grpc_options import server_options
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.inference_worker.service.control_client import ControlPlaneClient, WorkerIdentity
from loraplane.inference_worker.service.interceptors import error_interceptor
from loraplane.inference_worker.service.served_models import AdapterTarget, ServedModels
from loraplane.inference_worker.service.servicer import InferenceServicer
from tests.inference_worker.service.fake_engine import FakeEngine

BIG_PROMPT = "The quick brown fox jumps over the lazy dog, again and again. " * 32_000  # 2 MB, 450k tokens


class TimedTokenizer:
    """The real tokenizer, noting when `encode` starts and returns (threading events: any thread may call)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self.started = threading.Event()
        self.done = threading.Event()

    def encode(self, *args, **kwargs):
        self.started.set()
        try:
            return self._tokenizer.encode(*args, **kwargs)
        finally:
            self.done.set()

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)


@pytest.fixture(scope="module")
def demo_tokenizer(demo_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_path)


@dataclass
class Worker:
    engine: FakeEngine
    models: ServedModels
    stub: inference_pb2_grpc.InferenceStub
    health: health_pb2_grpc.HealthStub
    control: ControlPlaneClient


@pytest.fixture
async def worker(demo_tokenizer, fake_cp):
    """The servicer, health and a control-plane client on one loop, over a fake engine with the real
    tokenizer."""
    engine = FakeEngine()
    engine.tokenizer = TimedTokenizer(demo_tokenizer)
    models = ServedModels(engine, engine.model_name, "/models/fake", enable_lora=True)
    servicer = InferenceServicer(max_in_flight=4)
    servicer.attach(engine, models)
    server = grpc.aio.server(interceptors=[error_interceptor()], options=server_options())
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    identity = WorkerIdentity("w-loop", engine.model_name, f"127.0.0.1:{port}", 0, 0, 0, 4, 128, 64, False)
    control = ControlPlaneClient(fake_cp.target, identity, models, engine.stats, lambda: False)
    results = len(fake_cp.results)
    control_task = asyncio.create_task(control.run())
    await fake_cp.wait_for(lambda: len(fake_cp.results) > results)  # its Sync is applied
    channel, stub = inference_stub(f"127.0.0.1:{port}")
    async with channel:
        yield Worker(engine, models, stub, health_pb2_grpc.HealthStub(channel), control)
    control_task.cancel()
    await server.stop(0)


async def read_all(call) -> list[pb.GenerateResponse]:
    return [message async for message in call]


async def big_call(stub, kind: str) -> None:
    """Send BIG_PROMPT as `kind`: Tokenize counts its tokens; Generate refuses it as longer than the
    context, after tokenizing it (and before the engine sees it)."""
    if kind == "tokenize":
        reply = await stub.Tokenize(pb.TokenizeRequest(text=BIG_PROMPT))
        assert reply.count > 400_000
        return
    if kind == "generate-text":
        request = pb.GenerateRequest(text=BIG_PROMPT)
    else:
        request = pb.GenerateRequest(
            chat=pb.ChatInput(messages=[pb.ChatMessage(role="user", content=BIG_PROMPT)])
        )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub.Generate(request))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_model_len" in info.value.details()


@pytest.mark.parametrize("kind", ["tokenize", "generate-text", "generate-chat"])
async def test_other_calls_and_heartbeats_are_answered_while_a_big_prompt_tokenizes(worker, fake_cp, kind):
    tokenizer = worker.engine.tokenizer
    big = asyncio.ensure_future(big_call(worker.stub, kind))
    assert await asyncio.to_thread(tokenizer.started.wait, 60)
    beats = len(fake_cp.heartbeats)
    worker.control.send_heartbeat_now()
    check = await worker.health.Check(health_pb2.HealthCheckRequest(), timeout=60)
    models = await worker.stub.ListModels(pb.ListModelsRequest(), timeout=60)
    await fake_cp.wait_for(lambda: len(fake_cp.heartbeats) > beats, timeout=60)
    answered_while_tokenizing = not tokenizer.done.is_set()
    await asyncio.wait([big])
    assert answered_while_tokenizing, "health, ListModels or a heartbeat waited for the tokenizer"
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    assert [card.id for card in models.models] == [worker.engine.model_name]
    await big  # the big call's own checks


async def test_an_adapter_unloaded_while_its_prompt_tokenizes_is_not_found(worker):
    """The prompt is tokenized off the loop, so the adapter may be unloaded meanwhile: the request must
    then fail, not reach the engine with the unloaded adapter (which would load it again, on the loop)."""
    engine = worker.engine
    engine.max_model_len = 1_000_000  # the big prompt fits: only the adapter can stop it
    await worker.models.load(AdapterTarget("gone-lora", "/adapters/gone-lora"))
    requested = []
    generate = engine.generate
    engine.generate = lambda prompt, params, request_id, lora_request=None: (
        requested.append(lora_request) or generate(prompt, params, request_id, lora_request)
    )
    request = pb.GenerateRequest(model="gone-lora", text=BIG_PROMPT)
    call = asyncio.ensure_future(read_all(worker.stub.Generate(request)))
    assert await asyncio.to_thread(engine.tokenizer.started.wait, 60)
    await worker.models.unload("gone-lora")
    unloaded_while_tokenizing = not engine.tokenizer.done.is_set()
    outcome = (await asyncio.gather(call, return_exceptions=True))[0]
    assert unloaded_while_tokenizing
    assert requested == [], "the engine got a request for an unloaded adapter"
    assert isinstance(outcome, grpc.aio.AioRpcError) and outcome.code() == grpc.StatusCode.NOT_FOUND, outcome
    assert "gone-lora" in outcome.details()
