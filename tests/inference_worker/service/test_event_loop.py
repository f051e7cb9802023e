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

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from loraplane.inference_worker.service.control_client import ControlPlaneClient, WorkerIdentity
from loraplane.inference_worker.service.interceptors import error_interceptor
from loraplane.inference_worker.service.served_models import ServedModels
from loraplane.inference_worker.service.servicer import InferenceServicer
from worker_process import collect, inference_stub

from loraplane.grpc_options import server_options
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc
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


@pytest.fixture
async def worker(demo_tokenizer, fake_cp):
    """(engine, stubs, control client): the servicer, health and a control-plane client on one loop."""
    engine = FakeEngine()
    engine.tokenizer = TimedTokenizer(demo_tokenizer)
    models = ServedModels(engine, engine.model_name, "/models/fake", enable_lora=False)
    servicer = InferenceServicer(max_in_flight=4)
    servicer.attach(engine, models)
    server = grpc.aio.server(interceptors=[error_interceptor()], options=server_options())
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    identity = WorkerIdentity("w-loop", engine.model_name, f"127.0.0.1:{port}", 0, 0, 0, 4, 128, 64, False)
    control = ControlPlaneClient(fake_cp.target, identity, models, engine.stats, lambda: False)
    control_task = asyncio.create_task(control.run())
    await fake_cp.wait_for(lambda: any(h.worker_id == "w-loop" for h in fake_cp.hellos))
    channel, stub = inference_stub(f"127.0.0.1:{port}")
    health_stub = health_pb2_grpc.HealthStub(channel)
    async with channel:
        yield engine, stub, health_stub, control
    control_task.cancel()
    await server.stop(0)


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
    engine, stub, health_stub, control = worker
    tokenizer = engine.tokenizer
    big = asyncio.ensure_future(big_call(stub, kind))
    assert await asyncio.to_thread(tokenizer.started.wait, 60)
    beats = len(fake_cp.heartbeats)
    control.send_heartbeat_now()
    check = await health_stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
    models = await stub.ListModels(pb.ListModelsRequest(), timeout=60)
    await fake_cp.wait_for(lambda: len(fake_cp.heartbeats) > beats, timeout=60)
    answered_while_tokenizing = not tokenizer.done.is_set()
    await asyncio.wait([big])
    assert answered_while_tokenizing, "health, ListModels or a heartbeat waited for the tokenizer"
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    assert [card.id for card in models.models] == [engine.model_name]
    await big  # the big call's own checks
