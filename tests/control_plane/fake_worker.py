"""A fake inference worker that speaks the real WorkerControl stream protocol (no model, no torch).

Reusable by any test that needs workers registered with a control plane:

    worker = FakeWorker("127.0.0.1:PORT", "w0", base_model="tiny")
    await worker.start(); await worker.wait_until(lambda w: "my-lora" in w.adapters); await worker.stop()

Behaviour: answers Sync by holding exactly the listed adapters; LoadAdapter loads (or, with stage_only,
stages; with activate, switches the name to the staged version); UnloadAdapter drops the name (or only
a staged version). With `check_files`, it reads adapter_config.json from the spec's source and rejects
ranks above `max_lora_rank` (RANK_TOO_LARGE) and a base_model_name_or_path other than its base model
(BASE_MODEL_MISMATCH). It reconnects with backoff when the stream breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import grpc

from loraplane.common.v1 import residency_pb2 as residency
from loraplane.grpc_options import client_options
from loraplane.worker.v1 import worker_pb2 as wk
from loraplane.worker.v1 import worker_pb2_grpc

# Reconnect quickly after a control-plane restart (transport backoff, not the stream-level one).
_RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]


class FakeWorker:
    def __init__(
        self,
        target: str,
        worker_id: str,
        base_model: str = "tiny-llama",
        *,
        max_lora_rank: int = 16,
        check_files: bool = True,
        reject: dict[str, tuple[int, str]] | None = None,
        load_delay_s: float = 0.0,
        heartbeat_interval_s: float | None = None,
        token: str = "",
    ) -> None:
        self.target = target
        self.worker_id = worker_id
        self.base_model = base_model
        self.max_lora_rank = max_lora_rank
        self.check_files = check_files
        self.reject = dict(reject or {})
        self.load_delay_s = load_delay_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.token = token
        self.adapters: dict[str, str] = {}  # name -> active version
        self.staged: dict[str, str] = {}  # name -> staged version
        self.received: list[wk.ConnectResponse] = []
        self.send_heartbeats = True
        self.num_connects = 0
        self.connected = asyncio.Event()
        self.last_error: grpc.aio.AioRpcError | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected.clear()

    async def wait_until(self, predicate: Callable[[FakeWorker], bool], timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), timeout)

    def kinds(self) -> list[str]:
        return [message.WhichOneof("message") for message in self.received]

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                await self._session()
                backoff = 0.05
            except grpc.aio.AioRpcError as exc:
                self.last_error = exc
            except asyncio.InvalidStateError:
                pass  # the stream finished while a write was in flight
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _session(self) -> None:
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else None
        options = [*client_options(), *_RECONNECT_OPTIONS]
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            call = worker_pb2_grpc.WorkerControlStub(channel).Connect(metadata=metadata, wait_for_ready=True)
            lock = asyncio.Lock()
            try:
                await self._write(call, lock, wk.ConnectRequest(hello=self._hello()))
            except grpc.aio.AioRpcError:
                # A write racing the server's refusal fails as a transport error; the call's status says why.
                code, details = await call.code(), await call.details()
                raise grpc.aio.AioRpcError(code, None, None, details) from None
            self.num_connects += 1
            beats: asyncio.Task | None = None
            try:
                async for response in call:
                    self.received.append(response)
                    self.connected.set()
                    if beats is None:
                        interval = self.heartbeat_interval_s or response.heartbeat_interval_s or 5
                        beats = asyncio.create_task(self._heartbeats(call, lock, interval))
                    result = await self._handle(response)
                    await self._write(call, lock, wk.ConnectRequest(command_result=result))
                    await self._notify()
            finally:
                if beats is not None:
                    beats.cancel()
                    with contextlib.suppress(
                        asyncio.CancelledError, asyncio.InvalidStateError, grpc.RpcError
                    ):
                        await beats

    async def _write(self, call, lock: asyncio.Lock, message: wk.ConnectRequest) -> None:
        async with lock:
            await call.write(message)

    async def _heartbeats(self, call, lock: asyncio.Lock, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.send_heartbeats:
                heartbeat = wk.Heartbeat(num_running=1, kv_usage=0.25, resident_adapters=self._resident())
                await self._write(call, lock, wk.ConnectRequest(heartbeat=heartbeat))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _hello(self) -> wk.Hello:
        capacity = wk.Capacity(
            max_loras=4, max_lora_rank=self.max_lora_rank, max_cpu_loras=8, enable_lora=True
        )
        return wk.Hello(
            worker_id=self.worker_id,
            base_model_name=self.base_model,
            endpoint=f"127.0.0.1:0/{self.worker_id}",
            capacity=capacity,
            resident_adapters=self._resident(),
        )

    def _resident(self) -> list[wk.ResidentAdapter]:
        items = [(n, v) for n, v in self.adapters.items()] + [(n, v) for n, v in self.staged.items()]
        return [wk.ResidentAdapter(name=n, version=v, state=residency.RESIDENCY_STATE_HOST) for n, v in items]

    async def _handle(self, response: wk.ConnectResponse) -> wk.CommandResult:
        kind = response.WhichOneof("message")
        if kind == "sync":
            return await self._sync(response.sync)
        if kind == "load_adapter":
            return await self._load(response.load_adapter)
        unload = response.unload_adapter
        if unload.version and self.staged.get(unload.name) == unload.version:
            del self.staged[unload.name]
        elif self.adapters.pop(unload.name, None) is None:
            return self._result(
                unload.command_id, wk.COMMAND_ERROR_CODE_NOT_FOUND, f"{unload.name} not loaded"
            )
        return self._result(unload.command_id)

    async def _sync(self, sync: wk.Sync) -> wk.CommandResult:
        wanted = {spec.name: spec for spec in sync.adapters}
        errors = []
        for name in list(self.adapters):
            if name not in wanted:
                del self.adapters[name]
        for spec in sync.adapters:
            code, message = await self._check(spec)
            if code:
                errors.append(wk.AdapterError(name=spec.name, error_code=code, error_message=message))
            else:
                self.adapters[spec.name] = spec.version
        result = self._result(sync.command_id)
        result.adapter_errors.extend(errors)
        return result

    async def _load(self, load: wk.LoadAdapter) -> wk.CommandResult:
        spec = load.adapter
        code, message = await self._check(spec)
        if code:
            return self._result(load.command_id, code, message)
        if load.stage_only:
            self.staged[spec.name] = spec.version
        elif load.activate:
            self.staged.pop(spec.name, None)
            self.adapters[spec.name] = spec.version
        else:
            self.adapters[spec.name] = spec.version
        return self._result(load.command_id)

    async def _check(self, spec: wk.AdapterSpec) -> tuple[int, str]:
        if self.load_delay_s:
            await asyncio.sleep(self.load_delay_s)
        if spec.name in self.reject:
            return self.reject[spec.name]
        if not self.check_files:
            return 0, ""
        config_file = Path(spec.source) / "adapter_config.json"
        if not config_file.is_file():
            return wk.COMMAND_ERROR_CODE_SOURCE_NOT_FOUND, f"{config_file} not found"
        config = json.loads(config_file.read_text())
        if config.get("r", 8) > self.max_lora_rank:
            return (
                wk.COMMAND_ERROR_CODE_RANK_TOO_LARGE,
                f"rank {config['r']} > max_lora_rank {self.max_lora_rank}",
            )
        base = config.get("base_model_name_or_path")
        if base and base != self.base_model:
            return (
                wk.COMMAND_ERROR_CODE_BASE_MODEL_MISMATCH,
                f"trained for {base}, this worker serves {self.base_model}",
            )
        return 0, ""

    def _result(self, command_id: str, code: int = 0, message: str = "") -> wk.CommandResult:
        return wk.CommandResult(
            command_id=command_id,
            ok=code == 0,
            error_code=code,
            error_message=message,
            resident_adapters=self._resident(),
        )
