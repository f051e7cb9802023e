"""A gateway and a worker (the real servicer and interceptors over a scripted engine) on loopback in the
test process, with request logs and tracing as configured, and what they logged."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.inference_worker.outputs import CompletionOutput, RequestOutput
from loraplane.inference_worker.service.interceptors import error_interceptor
from loraplane.inference_worker.service.request_log import RequestObserver
from loraplane.inference_worker.service.served_models import AdapterTarget, ServedModels
from loraplane.inference_worker.service.servicer import InferenceServicer
from loraplane.observability import JsonFormatter, ObservabilityConfig
from tests.inference_worker.service.fake_engine import FakeEngine

ADAPTER = "sql-lora"
WORKER_ID = "worker-t"
PROMPT_TOKEN_IDS = [5, 6, 7]
OUTPUT_TOKENS = 3


def script() -> list[RequestOutput]:
    """Three tokens, one per output, the last ending the request with "length"."""
    outputs = []
    for position in range(OUTPUT_TOKENS):
        last = position == OUTPUT_TOKENS - 1
        completion = CompletionOutput(0, "x" * (position + 1), list(range(position + 1)))
        completion.text_delta, completion.token_ids_delta = "x", [position]
        completion.finish_reason = "length" if last else None
        outputs.append(RequestOutput("r", None, PROMPT_TOKEN_IDS, [completion], finished=last))
    return outputs


@dataclass
class ObservedStack:
    gateway: BackgroundGateway
    log: io.StringIO

    @property
    def url(self) -> str:
        return self.gateway.url

    def records(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far, parsed (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in self.log.getvalue().splitlines()]

    def request_lines(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["logger"].endswith(".requests")]


@contextlib.asynccontextmanager
async def observed_stack(
    config: ObservabilityConfig, tracer_provider: Any = None
) -> AsyncIterator[ObservedStack]:
    """Worker and gateway sharing `config` and `tracer_provider`; the log collects JSON lines."""
    engine = FakeEngine()
    engine.script = script()
    await engine.start()
    models = ServedModels(engine, engine.model_name, "/models/fake", enable_lora=True)
    await models.load(AdapterTarget(ADAPTER, f"/adapters/{ADAPTER}"))
    servicer = InferenceServicer(max_in_flight=8)
    servicer.attach(engine, models)
    observer = RequestObserver(WORKER_ID, config, lambda: engine.model_name, tracer_provider)
    server = grpc.aio.server(interceptors=[error_interceptor(), observer])
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gateway_config = GatewayConfig(host="127.0.0.1", port=0, workers=(f"127.0.0.1:{port}",))
    gateway = BackgroundGateway(gateway_config, observability=config, tracer_provider=tracer_provider)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        await gateway.start()
        yield ObservedStack(gateway, log)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        await gateway.stop()
        await server.stop(0)
