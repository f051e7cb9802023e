"""AsyncLLMEngine: the engine behind an asyncio API, for the worker's gRPC server.

The step loop runs in its own thread, so the event loop never blocks on a forward, and the step loop never
waits for the front end: it does no per-request work beyond the engine's own (`LLMEngine.step_updates`:
token ids and finish info, no text) and hands a step's updates to each event loop in one
`call_soon_threadsafe` call. On the loop, each update goes to its request's `RequestStream`
(`output_stream`), where the consumer detokenizes, applies stop strings and builds outputs when it pulls;
a consumer that falls behind gets one output with every token produced since (coalesced, never dropped).

A request whose outputs fail to process ends its stream with RequestFailedError and the loop goes on; any
other error in a step stops the loop for good: every stream ends with EngineDeadError and `is_running`
turns False (the worker service then exits so that a supervisor restarts it). Requests and aborts go to
the loop thread through a command queue.

`AsyncLLMEngine` implements `loraplane.inference_worker.engine_client.EngineClient`, the surface the
worker's gRPC service drives; its adapter methods are `LLMEngine`'s adapter API run off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import sys
import threading
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.errors import EngineDeadError, InvalidRequestError
from loraplane.inference_worker.llm_engine import LLMEngine
from loraplane.inference_worker.output_stream import ABORTED, RequestStream
from loraplane.inference_worker.outputs import EngineStats, RequestOutput
from loraplane.inference_worker.sampling_params import SamplingParams

if TYPE_CHECKING:
    from loraplane.inference_worker.engine_client import TokenizerLike
    from loraplane.inference_worker.lora import AdapterInfo, LoRARequest

logger = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.05
SWITCH_INTERVAL_S = 0.0005
"""The interpreter's thread switch interval while an engine runs (Python's default: 5 ms). The step loop
shares the GIL with the event loop; when it comes back from the device it waits for the GIL up to this
long while the event loop builds messages, on the critical path of every step (benchmarks/frontend_cpu.py,
10 ms stub steps, two paired runs on a busy 2-core machine: 4.6k and 2.9k output tok/s at 5 ms, 6.4k and
5.5k at 0.5 ms)."""
# The cause is in the worker's log only; the worker exits so that it is restarted (see service.server).
_DEAD = "the engine loop stopped on an internal error; the worker is restarting, retry on another worker"


class AsyncLLMEngine:
    """The engine behind asyncio (see the module doc); an `EngineClient`."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.engine: LLMEngine | None = None
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams: dict[str, RequestStream] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._dead: BaseException | None = None
        self._stats: EngineStats | None = None

    @classmethod
    def from_kwargs(cls, **kwargs) -> AsyncLLMEngine:
        return cls(EngineConfig.from_kwargs(**kwargs))

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model (in an executor) and start the step loop thread."""
        if self.engine is None:
            load = functools.partial(LLMEngine, self.config, detokenize=False)
            self.engine = await asyncio.get_running_loop().run_in_executor(None, load)
            self._stats = self.engine.stats()
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._loop, name="engine-step-loop", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        self._fail_all(EngineDeadError("the engine was shut down"))

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._dead is None

    @property
    def tokenizer(self) -> TokenizerLike | None:
        return self._require().tokenizer

    @property
    def model_name(self) -> str:
        return self._require().model_name

    @property
    def max_model_len(self) -> int:
        return self._require().max_model_len

    def _require(self) -> LLMEngine:
        if self._dead is not None:
            raise EngineDeadError(_DEAD)
        if self.engine is None:
            raise EngineDeadError("the engine is not started; await engine.start() first")
        return self.engine

    # ---- requests --------------------------------------------------------------------------------
    async def generate(
        self,
        prompt: str | list[int],
        sampling_params: SamplingParams | None,
        request_id: str,
        lora_request: LoRARequest | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Stream RequestOutput snapshots; each CompletionOutput carries `text_delta`/`token_ids_delta`.

        Raises InvalidRequestError / AdapterNotFoundError before the first yield for a bad request.
        Leaving the iterator early (break, cancellation) aborts the request and frees its KV blocks.
        """
        engine = self._require()
        if request_id in self._streams:
            raise InvalidRequestError(f"request_id {request_id!r} is already in use", param="request_id")
        state = engine.make_request(request_id, prompt, sampling_params, lora_request)
        stream = RequestStream(state, engine.tokenizer, asyncio.get_running_loop())
        self._streams[request_id] = stream
        self._submit(("add", state))
        try:
            while True:
                output = await stream.next()
                if output is None:  # aborted
                    return
                yield output
                if output.finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not stream.engine_finished:  # left early, or finished here on a stop string
                self._submit(("abort", request_id))

    async def abort(self, request_id: str) -> None:
        """Stop a request now and free its KV blocks; its stream ends."""
        self._submit(("abort", request_id))
        stream = self._streams.get(request_id)
        if stream is not None:
            stream.push(ABORTED)

    def stats(self) -> EngineStats:
        self._require()
        return self._stats

    # ---- adapters --------------------------------------------------------------------------------
    async def add_lora(self, lora_request: LoRARequest) -> bool:
        """Load an adapter in the LoRA manager's background loader, awaiting it without holding a thread."""
        await asyncio.wrap_future(self._require().require_lora().add(lora_request))
        return True

    async def remove_lora(self, name: str) -> bool:
        return await asyncio.to_thread(self._require().remove_lora, name)

    async def pin_lora(self, name: str) -> bool:
        return await asyncio.to_thread(self._require().pin_lora, name)

    def list_loras(self) -> list[AdapterInfo]:
        return self._require().list_loras()

    # ---- the loop thread -------------------------------------------------------------------------
    def _submit(self, command: tuple) -> None:
        self._commands.put(command)
        self._wake.set()

    def _loop(self) -> None:
        engine = self.engine
        try:
            while not self._stopping:
                handover: list = self._apply_commands(engine)
                if not engine.has_unfinished_requests():
                    self._hand_over(handover)
                    self._wake.wait(_IDLE_WAIT_S)
                    self._wake.clear()
                    continue
                handover += engine.step_updates()
                handover += [(failure.request_id, failure.error) for failure in engine.take_failures()]
                self._stats = engine.stats()
                self._hand_over(handover)
        except BaseException as exc:  # noqa: BLE001 - any failure kills the loop; callers must hear of it
            logger.exception("engine step loop died")
            self._dead = exc
            self._fail_all(EngineDeadError(_DEAD))

    def _apply_commands(self, engine: LLMEngine) -> list[tuple[str, BaseException]]:
        """Apply queued adds and aborts; the adds the engine refused, with their errors."""
        refused = []
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                return refused
            if kind == "add":
                try:
                    engine.enqueue(arg)
                except InvalidRequestError as exc:
                    refused.append((arg.request_id, exc))
            else:
                engine.abort(arg)
            self._stats = engine.stats()

    def _hand_over(self, items: list) -> None:
        """One step's updates and errors to the streams' event loops: one call per loop, not per request."""
        if not items:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for item in items:
            stream = self._streams.get(item[0] if isinstance(item, tuple) else item.request_id)
            if stream is not None:
                by_loop.setdefault(stream.loop, []).append(item)
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._dispatch, batch)
            except RuntimeError:
                logger.debug("event loop of %d streams is closed", len(batch))

    def _dispatch(self, batch: list) -> None:
        """On the event loop: each update or error to its request's stream (gone when it was closed)."""
        streams = self._streams
        for item in batch:
            request_id, payload = item if isinstance(item, tuple) else (item.request_id, item)
            stream = streams.get(request_id)
            if stream is not None:
                stream.push(payload)

    def _fail_all(self, exc: BaseException) -> None:
        self._hand_over([(request_id, exc) for request_id in list(self._streams)])
