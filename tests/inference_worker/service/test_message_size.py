"""The worker's gRPC server refuses messages over `--max-receive-bytes` (RESOURCE_EXHAUSTED from grpc
core, before any handler runs), and the gateway answers such a refusal with 413, not 429 or 500; bytes
that are not the method's message get INVALID_ARGUMENT, not UNKNOWN.

The worker is the real `WorkerServer` with its real server options; only the engine is the scripted fake
(the model is not loaded), so the limit under test is exactly the one `loraplane worker` serves with.
"""

from __future__ import annotations

import argparse

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from worker_process import collect, generate_request, inference_stub

from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway
from loraplane.grpc_options import MAX_MESSAGE_BYTES
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference_worker.service import cli
from loraplane.inference_worker.service.config import WorkerServiceConfig
from loraplane.inference_worker.service.served_models import ServedModels
from loraplane.inference_worker.service.server import WorkerServer
from tests.inference_worker.service.fake_engine import FakeEngine

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
async def worker():
    """A WorkerServer with a 64 KiB receive limit, serving a fake engine on loopback."""
    server = WorkerServer(WorkerServiceConfig(listen="127.0.0.1:0", max_receive_bytes=LIMIT))
    engine = FakeEngine()
    server.servicer.attach(engine, ServedModels(engine, engine.model_name, "/models/fake", enable_lora=False))
    server.port = server.server.add_insecure_port(server.config.listen)
    await server.server.start()
    await server.health.set("", health_pb2.HealthCheckResponse.SERVING)
    yield server
    await server.server.stop(0)


async def test_a_message_over_the_limit_gets_resource_exhausted(worker):
    channel, stub = inference_stub(worker.endpoint)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Tokenize(pb.TokenizeRequest(text="x" * (LIMIT + 1)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in info.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await collect(stub.Generate(generate_request("x" * (LIMIT + 1))))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await stub.ListModels(pb.ListModelsRequest())  # the server serves on


@pytest.mark.parametrize(
    "method",
    ["/loraplane.inference.v1.Inference/Tokenize", "/loraplane.inference.v1.Inference/Generate"],
)
async def test_undecodable_request_bytes_are_invalid_argument(worker, method):
    async with grpc.aio.insecure_channel(worker.endpoint) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(method)(b"\xff\xff\xff")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "could not be parsed" in info.value.details()


async def test_the_gateway_answers_a_prompt_over_the_workers_limit_with_413(worker):
    gateway = BackgroundGateway(GatewayConfig(host="127.0.0.1", port=0, workers=(worker.endpoint,)))
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=f"{gateway.url}/v1", timeout=30) as client:
            body = {"model": "fake-base", "prompt": "word " * LIMIT, "max_tokens": 1}
            reply = await client.post("/completions", json=body)
    finally:
        await gateway.stop()
    assert reply.status_code == 413, reply.text
    error = reply.json()["error"]
    assert error["type"] == "RequestTooLargeError" and "too large" in error["message"], error


def test_the_limit_is_a_documented_flag():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.config_from_args(parser.parse_args([])).max_receive_bytes == MAX_MESSAGE_BYTES
    assert (
        cli.config_from_args(parser.parse_args(["--max-receive-bytes", str(LIMIT)])).max_receive_bytes
        == LIMIT
    )
    with pytest.raises(ValueError, match="max_receive_bytes"):
        WorkerServiceConfig(max_receive_bytes=10)
    assert "--max-receive-bytes" in parser.format_help() and "RESOURCE_EXHAUSTED" in parser.format_help()
