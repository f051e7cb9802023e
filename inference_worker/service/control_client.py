"""The worker's side of `loraplane.worker.v1.WorkerControl`: one long-lived command stream.

The worker dials the control plane, sends Hello, then applies Sync/LoadAdapter/UnloadAdapter to its
served models and answers each with a CommandResult; heartbeats report load and residency. When the
stream breaks, the worker keeps serving and reconnects with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from loraplane import __version__
from loraplane.common.v1 import residency_pb2
from loraplane.grpc_options import client_options
from loraplane.inference_worker import errors
from loraplane.inference_worker.service.served_models import AdapterTarget, ServedModels
from loraplane.tls import PLAINTEXT, TLSConfig, aio_channel
from loraplane.worker.v1 import worker_pb2 as pb
from loraplane.worker.v1 import worker_pb2_grpc

logger = logging.getLogger(__name__)

# The engine's tier names (LoRAManager's AdapterInfo.tier) -> the contract's residency state.
RESIDENCY_BY_TIER = {
    "device": residency_pb2.RESIDENCY_STATE_DEVICE,
    "host": residency_pb2.RESIDENCY_STATE_HOST,
    "disk": residency_pb2.RESIDENCY_STATE_DISK,
    "loading": residency_pb2.RESIDENCY_STATE_LOADING,
}
_RANK_FIELDS = {"r", "rank_pattern"}
_BASE_MODEL_FIELDS = {"base_model", "base_model_name", "base_model_name_or_path", "shape", "shapes"}


@dataclass(frozen=True)
class WorkerIdentity:
    """What a Hello says about the worker besides its adapters."""

    worker_id: str
    base_model_name: str
    endpoint: str
    max_loras: int
    max_lora_rank: int
    max_cpu_loras: int
    max_num_seqs: int
    max_model_len: int
    num_kv_blocks: int
    enable_lora: bool
    device: str = ""  # "cuda" or "cpu": what the residency tiers mean on this worker


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: `initial_s` doubling up to `max_s`, each scaled by a random factor in [0.5, 1.5)."""

    initial_s: float = 0.5
    max_s: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * 2**attempt) * random.uniform(0.5, 1.5)


def error_code_for(exc: BaseException) -> int:
    """The CommandErrorCode for an exception raised while applying a command."""
    if isinstance(exc, errors.AdapterSourceNotFoundError):
        return pb.COMMAND_ERROR_CODE_SOURCE_NOT_FOUND
    if isinstance(exc, errors.AdapterLoadError):
        if exc.field == "version":
            return pb.COMMAND_ERROR_CODE_VERSION_MISMATCH
        if exc.field in _RANK_FIELDS:
            return pb.COMMAND_ERROR_CODE_RANK_TOO_LARGE
        if exc.field in _BASE_MODEL_FIELDS:
            return pb.COMMAND_ERROR_CODE_BASE_MODEL_MISMATCH
        return pb.COMMAND_ERROR_CODE_INVALID_ADAPTER
    if isinstance(exc, errors.AdapterNotFoundError):
        return pb.COMMAND_ERROR_CODE_NOT_FOUND
    if isinstance(exc, errors.EngineOverloadedError) or (
        isinstance(exc, errors.InvalidRequestError) and exc.param == "enable_lora"
    ):
        return pb.COMMAND_ERROR_CODE_CAPACITY
    if isinstance(exc, errors.InvalidRequestError):
        return pb.COMMAND_ERROR_CODE_INVALID_ADAPTER
    return pb.COMMAND_ERROR_CODE_INTERNAL


def _message(exc: BaseException) -> str:
    if isinstance(exc, errors.DOMAIN_ERRORS):
        return str(exc)
    return f"internal error ({type(exc).__name__}: {exc}); see the worker's log"


def target_from_spec(spec: pb.AdapterSpec) -> AdapterTarget:
    return AdapterTarget(
        name=spec.name,
        source=spec.source,
        version=spec.version,
        base_model_name=spec.base_model_name or None,
        pinned=spec.pinned,
    )


class ControlPlaneClient:
    """Holds the command stream to the control plane at `target` for the worker's whole life.

    Semantics: `run()` loops until cancelled: connect, Hello, serve commands and heartbeats; on any
    stream error wait `Backoff.delay(attempt)` and reconnect (the attempt count resets after a session
    that received a message). Commands run as separate tasks so a slow adapter load never delays reading
    the stream or the heartbeats; loads of one adapter stay in order (ServedModels serializes per name).
    `draining()` is read for each heartbeat; `send_heartbeat_now()` wakes the heartbeat loop.
    """

    def __init__(
        self,
        target: str,
        identity: WorkerIdentity,
        models: ServedModels,
        stats: Callable[[], Any],
        draining: Callable[[], bool],
        heartbeat_interval_s: float = 5.0,
        backoff: Backoff | None = None,
        token: str = "",
        tls: TLSConfig = PLAINTEXT,
    ) -> None:
        self.target = target
        self.identity = identity
        self.models = models
        self.stats = stats
        self.draining = draining
        self.heartbeat_interval_s = heartbeat_interval_s
        self.backoff = backoff or Backoff()
        self.tls = tls
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    def send_heartbeat_now(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        attempt = 0
        while True:
            try:
                got_message = await self._session()
            except grpc.aio.AioRpcError as exc:
                got_message = False
                logger.warning("control plane %s: stream broke (%s)", self.target, _rpc_error_text(exc))
            except Exception:
                got_message = False
                logger.exception("control plane %s: session failed", self.target)
            finally:
                self.connected.clear()
            attempt = 0 if got_message else attempt + 1
            delay = self.backoff.delay(attempt)
            logger.info("reconnecting to the control plane %s in %.1fs", self.target, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> bool:
        """One stream's life; returns whether any message arrived (a healthy session)."""
        async with aio_channel(self.target, self.tls, client_options()) as channel:
            call = worker_pb2_grpc.WorkerControlStub(channel).Connect(
                metadata=self.metadata, wait_for_ready=True
            )
            await self._write(call, pb.ConnectRequest(hello=self._hello()))
            heartbeats = asyncio.create_task(self._heartbeats(call))
            got_message = False
            try:
                async for response in call:
                    if not got_message:
                        logger.info("connected to the control plane %s", self.target)
                        self.connected.set()
                    got_message = True
                    self._handle(call, response)
            finally:
                heartbeats.cancel()
                for task in list(self._tasks):
                    task.cancel()
            logger.warning("control plane %s closed the stream", self.target)
            return got_message

    def _hello(self) -> pb.Hello:
        i = self.identity
        capacity = pb.Capacity(
            max_loras=i.max_loras,
            max_lora_rank=i.max_lora_rank,
            max_cpu_loras=i.max_cpu_loras,
            max_num_seqs=i.max_num_seqs,
            max_model_len=i.max_model_len,
            num_kv_blocks=i.num_kv_blocks,
            enable_lora=i.enable_lora,
        )
        return pb.Hello(
            worker_id=i.worker_id,
            base_model_name=i.base_model_name,
            endpoint=i.endpoint,
            capacity=capacity,
            resident_adapters=self._resident(),
            software_version=__version__,
            device=i.device,
        )

    def _resident(self) -> list[pb.ResidentAdapter]:
        return [
            pb.ResidentAdapter(
                name=r.name,
                version=r.version,
                state=RESIDENCY_BY_TIER.get(r.tier, residency_pb2.RESIDENCY_STATE_UNSPECIFIED),
                pinned=r.pinned,
            )
            for r in self.models.residency()
        ]

    def heartbeat(self) -> pb.Heartbeat:
        stats = self.stats()
        time = Timestamp()
        time.GetCurrentTime()
        return pb.Heartbeat(
            time=time,
            num_waiting=stats.num_waiting,
            num_running=stats.num_running,
            kv_usage=stats.kv_usage,
            resident_adapters=self._resident(),
            draining=self.draining(),
        )

    async def _heartbeats(self, call: Any) -> None:
        """Send a heartbeat every interval (or when woken); ends quietly when the stream breaks, which
        the reading side reports."""
        try:
            while True:
                await self._write(call, pb.ConnectRequest(heartbeat=self.heartbeat()))
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.heartbeat_interval_s)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            logger.debug("heartbeats stopped: %s", exc)

    def _handle(self, call: Any, response: pb.ConnectResponse) -> None:
        if response.heartbeat_interval_s > 0:
            self.heartbeat_interval_s = float(response.heartbeat_interval_s)
        kind = response.WhichOneof("message")
        if kind is None:
            return
        task = asyncio.create_task(self._apply(call, kind, getattr(response, kind)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, call: Any, kind: str, command: Any) -> None:
        logger.info("control plane command %s %s", kind, command.command_id)
        result = pb.CommandResult(command_id=command.command_id, ok=True)
        try:
            if kind == "sync":
                failures = await self.models.reconcile(target_from_spec(s) for s in command.adapters)
                for name, exc in sorted(failures.items()):
                    result.adapter_errors.add(
                        name=name, error_code=error_code_for(exc), error_message=_message(exc)
                    )
                if failures:
                    codes = {error_code_for(exc) for exc in failures.values()}
                    result.ok = False
                    result.error_code = codes.pop() if len(codes) == 1 else pb.COMMAND_ERROR_CODE_INTERNAL
                    result.error_message = f"{len(failures)} adapter(s) failed: {', '.join(sorted(failures))}"
            elif kind == "load_adapter":
                target = target_from_spec(command.adapter)
                await self.models.load(target, stage_only=command.stage_only, activate=command.activate)
            else:
                await self.models.unload(command.name, command.version)
        except Exception as exc:
            if not isinstance(exc, errors.DOMAIN_ERRORS):
                logger.exception("control plane command %s failed", command.command_id)
            result.ok, result.error_code, result.error_message = False, error_code_for(exc), _message(exc)
        result.resident_adapters.extend(self._resident())
        try:
            await self._write(call, pb.ConnectRequest(command_result=result))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            logger.warning("result of %s not sent: the stream broke (%s)", command.command_id, exc)

    async def _write(self, call: Any, message: pb.ConnectRequest) -> None:
        async with self._write_lock:  # one write at a time on a stream
            await call.write(message)


def _rpc_error_text(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)
