"""A scripted `EngineClient` for the service's in-process tests: no model, no torch forward.

`generate` streams `script` (each snapshot stamped with the request id); `gate`, when set, holds every
stream before its first snapshot; `failure` is raised by the next `generate`. Every stream that ends,
and every `abort`, appends its request id to `aborted`. Adapters are bookkeeping only: `add_lora`
registers the request under a version derived from its path, on the "host" tier. `serving` runs a
servicer over a fake engine on a loopback gRPC server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator

import grpc

from loraplane.grpc_options import client_options
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.inference.v1.inference_pb2_grpc import InferenceStub
from loraplane.inference_worker.errors import AdapterAlreadyLoadedError, AdapterNotFoundError
from loraplane.inference_worker.lora import AdapterInfo, LoRARequest
from loraplane.inference_worker.outputs import EngineStats, RequestOutput
from loraplane.inference_worker.sampling_params import SamplingParams
from loraplane.inference_worker.service.interceptors import error_interceptor
from loraplane.inference_worker.service.served_models import ServedModels
from loraplane.inference_worker.service.servicer import InferenceServicer


class FakeEngine:
    """An `EngineClient` (loraplane.inference_worker.engine_client) whose outputs are scripted."""

    model_name = "fake-base"
    max_model_len = 128
    tokenizer = None  # text prompts go to the engine as given

    def __init__(self) -> None:
        self.script: list[RequestOutput] = []
        self.gate: asyncio.Event | None = None
        self.aborted: list[str] = []
        self.failure: Exception | None = None
        self.adapters: dict[str, AdapterInfo] = {}
        self.running = False

    @property
    def is_running(self) -> bool:
        return self.running

    async def start(self) -> None:
        self.running = True

    async def shutdown(self) -> None:
        self.running = False

    async def generate(
        self,
        prompt: str | list[int],
        sampling_params: SamplingParams | None,
        request_id: str,
        lora_request: LoRARequest | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        if self.failure is not None:
            raise self.failure
        try:
            if self.gate is not None:
                await self.gate.wait()
            for output in self.script:
                yield dataclasses.replace(output, request_id=request_id)
                await asyncio.sleep(0)
        finally:
            self.aborted.append(request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 0.0, 64, 64, 0, 0)

    async def add_lora(self, lora_request: LoRARequest) -> bool:
        if lora_request.lora_name in self.adapters:
            raise AdapterAlreadyLoadedError(f"adapter {lora_request.lora_name!r} is already loaded")
        name, path = lora_request.lora_name, lora_request.lora_path
        version = hashlib.sha256(path.encode()).hexdigest()
        self.adapters[name] = AdapterInfo(
            name, lora_request.lora_int_id, path, version, None, rank=8, tier="host", pinned=False
        )
        return True

    async def remove_lora(self, name: str) -> bool:
        return self.adapters.pop(name, None) is not None

    async def pin_lora(self, name: str) -> bool:
        if name not in self.adapters:
            raise AdapterNotFoundError(f"adapter {name!r} is not loaded")
        self.adapters[name] = dataclasses.replace(self.adapters[name], pinned=True)
        return True

    def list_loras(self) -> list[AdapterInfo]:
        return list(self.adapters.values())


@contextlib.asynccontextmanager
async def serving(engine: FakeEngine, servicer: InferenceServicer) -> AsyncIterator[InferenceStub]:
    """`servicer` over `engine` on a real grpc.aio server on loopback, with the worker's error mapping;
    yields a stub connected to it."""
    servicer.attach(engine, ServedModels(engine, engine.model_name, "/models/fake", enable_lora=False))
    server = grpc.aio.server(interceptors=[error_interceptor()])
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options()) as channel:
            yield inference_pb2_grpc.InferenceStub(channel)
    finally:
        await server.stop(0)
