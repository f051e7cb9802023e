"""AsyncLLMEngine: the engine behind an asyncio API, for the worker's gRPC server.

The step loop runs in its own thread, so the event loop never blocks on a forward. A request whose
outputs fail to process ends its stream with RequestFailedError and the loop goes on; any other error
in a step stops the loop for good: every stream ends with EngineDeadError and `is_running` turns False
(the worker service then exits so that a supervisor restarts it). Requests and aborts
go to the loop thread through a command queue; outputs come back with `call_soon_threadsafe` into one
asyncio queue per request. A consumer that falls behind gets the latest snapshot with the deltas
since the previous one it saw (text deltas never split a UTF-8 character).

`AsyncLLMEngine` implements `loraplane.inference_worker.engine_client.EngineClient`, the surface the
worker's gRPC service drives; its adapter methods are `LLMEngine`'s adapter API run off the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.errors import EngineDeadError, InvalidRequestError
from loraplane.inference_worker.llm_engine import LLMEngine
from loraplane.inference_worker.outputs import EngineStats, RequestOutput
from loraplane.inference_worker.sampling_params import SamplingParams

if TYPE_CHECKING:
    from loraplane.inference_worker.engine_client import TokenizerLike
    from loraplane.inference_worker.lora import AdapterInfo, LoRARequest

logger = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.05
# The cause is in the worker's log only; the worker exits so that it is restarted (see service.server).
_DEAD = "the engine loop stopped on an internal error; the worker is restarting, retry on another worker"
_ABORTED = object()  # queued to a stream by abort(): the stream ends without another snapshot


class AsyncLLMEngine:
    """The engine behind asyncio (see the module doc); an `EngineClient`."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.engine: LLMEngine | None = None
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
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
            self.engine = await asyncio.get_running_loop().run_in_executor(None, LLMEngine, self.config)
            self._stats = self.engine.stats()
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
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (loop, outputs)
        self._submit(("add", state))
        seen_text: dict[int, int] = {}
        seen_tokens: dict[int, int] = {}
        finished = False
        try:
            while not finished:
                item = await outputs.get()
                while not outputs.empty() and isinstance(item, RequestOutput):
                    item = outputs.get_nowait()
                if item is _ABORTED:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield _with_deltas(item, seen_text, seen_tokens)
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self._submit(("abort", request_id))

    async def abort(self, request_id: str) -> None:
        """Stop a request now and free its KV blocks; its stream ends."""
        self._submit(("abort", request_id))
        stream = self._streams.get(request_id)
        if stream is not None:
            stream[1].put_nowait(_ABORTED)

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
                self._apply_commands(engine)
                if not engine.has_unfinished_requests():
                    self._wake.wait(_IDLE_WAIT_S)
                    self._wake.clear()
                    continue
                for out in engine.step():
                    self._deliver(out.request_id, out)
                for failure in engine.take_failures():  # failed alone; the loop goes on
                    self._deliver(failure.request_id, failure.error)
                self._stats = engine.stats()
        except BaseException as exc:  # noqa: BLE001 - any failure kills the loop; callers must hear of it
            logger.exception("engine step loop died")
            self._dead = exc
            self._fail_all(EngineDeadError(_DEAD))

    def _apply_commands(self, engine: LLMEngine) -> None:
        while True:
            try:
                kind, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                try:
                    engine.enqueue(arg)
                except InvalidRequestError as exc:
                    self._deliver(arg.request_id, exc)
            else:
                engine.abort(arg)
            self._stats = engine.stats()

    def _deliver(self, request_id: str, item) -> None:
        stream = self._streams.get(request_id)
        if stream is None:
            return
        loop, outputs = stream
        try:
            loop.call_soon_threadsafe(outputs.put_nowait, item)
        except RuntimeError:
            logger.debug("event loop of request %s is closed", request_id)

    def _fail_all(self, exc: BaseException) -> None:
        for request_id in list(self._streams):
            self._deliver(request_id, exc)


def _with_deltas(out: RequestOutput, seen_text: dict[int, int], seen_tokens: dict[int, int]) -> RequestOutput:
    completions = []
    for c in out.outputs:
        text_start, token_start = seen_text.get(c.index, 0), seen_tokens.get(c.index, 0)
        completions.append(
            dataclasses.replace(c, text_delta=c.text[text_start:], token_ids_delta=c.token_ids[token_start:])
        )
        seen_text[c.index], seen_tokens[c.index] = len(c.text), len(c.token_ids)
    return dataclasses.replace(out, outputs=completions)
