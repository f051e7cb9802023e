"""The worker's request lines from a real WorkerServer (gRPC on loopback, a scripted engine): the caller's
x-request-id, the worker id and the adapter on every line, a refused call named by its error, and the
process-wide --disable-log-requests the `loraplane` command exports."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import grpc
import pytest

from loraplane import observability
from loraplane.grpc_options import client_options
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.outputs import CompletionOutput, RequestOutput
from loraplane.inference_worker.service import server as server_module
from loraplane.inference_worker.service.config import WorkerServiceConfig
from loraplane.observability import JsonFormatter, ObservabilityConfig
from tests.inference_worker.service.fake_engine import FakeEngine

WORKER_ID = "worker-log-test"


@contextlib.asynccontextmanager
async def _worker(monkeypatch, observability_config: ObservabilityConfig | None):
    engine = FakeEngine()
    completion = CompletionOutput(0, "ab", [1, 2], finish_reason="stop")
    completion.text_delta, completion.token_ids_delta = "ab", [1, 2]
    engine.script = [RequestOutput("r", None, [9, 9, 9, 9], [completion], finished=True)]
    monkeypatch.setattr(server_module, "build_engine", lambda config: engine)
    config = WorkerServiceConfig(
        listen="127.0.0.1:0", worker_id=WORKER_ID, engine=EngineConfig(model="/models/fake")
    )
    worker = server_module.WorkerServer(config, observability_config)
    await worker.start()
    try:
        async with grpc.aio.insecure_channel(worker.endpoint, options=client_options()) as channel:
            yield inference_pb2_grpc.InferenceStub(channel)
    finally:
        await worker.stop()


@pytest.fixture
def json_log():
    stream, handler, root = io.StringIO(), logging.StreamHandler(), logging.getLogger()
    handler.setStream(stream)
    handler.setFormatter(JsonFormatter())
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lambda: [
        line
        for line in map(json.loads, stream.getvalue().splitlines())
        if line["logger"].endswith(".requests")
    ]
    root.removeHandler(handler)
    root.setLevel(level)


async def _generate(stub, model: str = "", request_id: str = "w-1") -> list[pb.GenerateResponse]:
    request = pb.GenerateRequest(request_id="engine-id", model=model, text="some prompt")
    request.sampling_params.max_tokens = 2
    return [r async for r in stub.Generate(request, metadata=[("x-request-id", request_id)])]


async def test_request_lines_carry_the_callers_id_and_the_worker(monkeypatch, json_log):
    async with _worker(monkeypatch, ObservabilityConfig()) as stub:
        await _generate(stub)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _generate(stub, model="no-such-adapter", request_id="w-2")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    received, finished, refusal = json_log()
    assert received["message"].startswith("received request engine-id: adapter=None prompt_tokens=4")
    assert finished["message"].startswith("finished request engine-id:")
    for line in (received, finished):
        assert (line["request_id"], line["worker"], line["model"]) == (
            "w-1",
            WORKER_ID,
            FakeEngine.model_name,
        )
    assert finished["output_tokens"] == 2 and finished["finish_reason"] == "stop"
    assert refusal["request_id"] == "w-2" and refusal["adapter"] == "no-such-adapter"
    assert refusal["message"] == "refused request engine-id: ModelNotFoundError"


async def test_the_exported_disable_log_requests_silences_a_worker(monkeypatch, json_log):
    monkeypatch.setenv(observability.ENV_DISABLE_LOG_REQUESTS, "1")
    async with _worker(monkeypatch, None) as stub:  # None: as the `loraplane` command exported it
        assert len(await _generate(stub)) >= 3
    assert json_log() == []
