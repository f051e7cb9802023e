"""`loraplane.inference.v1.Inference` over an `EngineClient`: admission and streaming only.

Message conversion lives in `loraplane.inference_worker.service.convert`; domain errors raised here or by the
engine become status codes in `loraplane.inference_worker.service.interceptors`. Work that grows with the
prompt (tokenizing, rendering chat templates, detokenizing prompt logprobs) runs in a small thread pool:
on the event loop, a prompt of megabytes would stall every other call, health checks and the
control-plane heartbeats for seconds, and the control plane would mark the worker down.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc

from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.inference_worker.engine_client import EngineClient
from loraplane.inference_worker.errors import EngineDeadError, EngineOverloadedError
from loraplane.inference_worker.lora import LoRARequest
from loraplane.inference_worker.outputs import RequestOutput
from loraplane.inference_worker.request_validation import check_n
from loraplane.inference_worker.sampling_params import SamplingParams
from loraplane.inference_worker.service.convert import (
    check_fits,
    chunk_from_completion,
    detokenize_ids,
    engine_prompt,
    generate_start,
    sampling_params_from_proto,
    tokenize_input,
    usage_from_output,
)
from loraplane.inference_worker.service.served_models import ServedModels

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
TOKENIZER_THREADS = 2
"""Threads that tokenize prompts for the servicer. vLLM's API server uses one; a second keeps short prompts
moving while one of megabytes is tokenized, and HF fast tokenizers release the GIL, so the event loop
runs on meanwhile. More would take CPU from the engine."""
_T = TypeVar("_T")


class WorkerDrainingError(EngineDeadError):
    """The worker is shutting down: it finishes the streams it has and admits no new ones."""


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """Generate, ListModels and Tokenize for one engine and its served models.

    Semantics: at most `max_in_flight` sequences are admitted at once, a call counting its `n`; the next
    call that does not fit fails at once with EngineOverloadedError (RESOURCE_EXHAUSTED), and a call with
    `n` above `max_n` (the engine's max_num_seqs) with InvalidRequestError (INVALID_ARGUMENT). An
    admitted call's prompt is tokenized in a pool of `tokenizer_threads` threads (queued calls wait
    there, counted as in flight); so is Tokenize's input. A call that is cancelled, or whose deadline
    passes, aborts its engine request, which frees its KV blocks at once. After `start_draining()` every
    new Generate fails with WorkerDrainingError (UNAVAILABLE, so clients retry elsewhere) while admitted
    streams run on; `wait_drained()` returns when none is left.
    """

    def __init__(
        self, max_in_flight: int, tokenizer_threads: int = TOKENIZER_THREADS, max_n: int | None = None
    ) -> None:
        self.engine: EngineClient | None = None
        self.models: ServedModels | None = None
        self.max_in_flight = max_in_flight
        self.max_n = max_n or max_in_flight
        self._tokenizer_pool = ThreadPoolExecutor(tokenizer_threads, thread_name_prefix="worker-tokenize")
        self._in_flight: dict[str, int] = {}  # request id -> its sequences (n)
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def attach(self, engine: EngineClient, models: ServedModels) -> None:
        """Start serving `engine` (the server registers the servicer before the model has loaded)."""
        self.engine, self.models = engine, models

    def _ready(self) -> ServedModels:
        if self.models is None:
            raise EngineDeadError("the worker is still loading its model; retry when its health is SERVING")
        return self.models

    async def _off_loop(self, function: Callable[..., _T], *args: object) -> _T:
        """`function(*args)` in the tokenizer pool (see the module doc)."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_pool, function, *args)

    @property
    def num_in_flight(self) -> int:
        return len(self._in_flight)

    def start_draining(self) -> None:
        """Refuse every new Generate from now on (see class doc)."""
        self._draining = True

    async def wait_drained(self, timeout: float) -> bool:
        """Wait until no admitted Generate is running, at most `timeout` seconds; True when none is."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateResponse]:
        if self._draining:
            raise WorkerDrainingError("the worker is shutting down; send the request to another worker")
        self._ready().resolve(request.model)  # an unknown model fails before its prompt is tokenized
        params = sampling_params_from_proto(request.sampling_params)
        request_id = self._admit(request.request_id, params.n)
        try:
            prompt = await self._off_loop(engine_prompt, request, self.engine.tokenizer)
            # Resolved again: the adapter may have been unloaded or replaced while the prompt was
            # tokenized, and the engine must never get a request for an adapter it no longer holds.
            lora_request = self.models.resolve(request.model)
            check_fits(prompt, params, int(self.engine.max_model_len))
            async for response in self._stream(request, prompt, params, request_id, lora_request):
                yield response
        finally:
            self._in_flight.pop(request_id, None)
            if not self._in_flight:
                self._idle.set()

    async def _stream(
        self,
        request: pb.GenerateRequest,
        prompt: str | list[int],
        params: SamplingParams,
        request_id: str,
        lora: LoRARequest | None,
    ) -> AsyncIterator[pb.GenerateResponse]:
        outputs = self.engine.generate(prompt, params, request_id, lora_request=lora)
        finished = False
        try:
            first = await anext(outputs, None)  # the engine validates the request before its first output
            if first is None:
                return
            model = request.model or self.models.base_name
            start = await self._off_loop(generate_start, first, request_id, model, self.engine.tokenizer)
            yield pb.GenerateResponse(start=start)
            async for response in self._chunks(first, outputs):
                finished = finished or response.HasField("usage")
                yield response
        finally:
            if not finished:
                await self._abort(request_id, outputs)

    async def _chunks(
        self, first: RequestOutput, outputs: AsyncIterator[RequestOutput]
    ) -> AsyncIterator[pb.GenerateResponse]:
        output = first
        done: set[int] = set()  # choices whose finish reason was sent
        while True:
            for completion in output.outputs:
                send_finish = completion.index not in done and (
                    completion.finish_reason is not None or output.finished
                )
                if send_finish:
                    done.add(completion.index)
                chunk = chunk_from_completion(completion, send_finish)
                if chunk is not None:
                    yield pb.GenerateResponse(chunk=chunk)
            if output.finished:
                yield pb.GenerateResponse(usage=usage_from_output(output))
                return
            try:
                output = await anext(outputs)
            except StopAsyncIteration:
                return

    async def _abort(self, request_id: str, outputs: AsyncGenerator[RequestOutput, None]) -> None:
        """Free the request's sequences now (the call was cancelled, timed out or failed)."""
        logger.debug("aborting request %s", request_id)
        try:
            await outputs.aclose()
            await self.engine.abort(request_id)
        except Exception:
            logger.warning("abort of request %s failed", request_id, exc_info=True)

    def _admit(self, request_id: str, num_seqs: int) -> str:
        check_n(num_seqs, self.max_n)
        in_flight = sum(self._in_flight.values())
        if in_flight + num_seqs > self.max_in_flight:
            raise EngineOverloadedError(
                f"the worker's queue is full ({in_flight} of {self.max_in_flight} sequences in flight); "
                "retry later or on another worker"
            )
        if not request_id or request_id in self._in_flight:
            request_id = f"{request_id or 'gen'}-{uuid.uuid4().hex[:12]}"
        self._in_flight[request_id] = num_seqs
        self._idle.clear()
        return request_id

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext):
        models = self._ready()
        max_model_len = int(self.engine.max_model_len)
        cards = [
            pb.ModelCard(
                id=models.base_name,
                root=models.base_root,
                max_model_len=max_model_len,
                created=models.created,
                owned_by="loraplane",
            )
        ]
        # vLLM: an adapter's parent is its base_model_name when that is a served base model, else the
        # (first) served base model; a worker serves one base model, so it is always that one.
        for adapter in models.adapters():
            cards.append(
                pb.ModelCard(
                    id=adapter.name,
                    parent=models.base_name,
                    root=adapter.root,
                    max_model_len=max_model_len,
                    created=adapter.created,
                    version=adapter.version,
                    owned_by="loraplane",
                )
            )
        return pb.ListModelsResponse(models=cards)

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext):
        self._ready().resolve(request.model)
        token_ids = await self._off_loop(tokenize_input, request, self.engine.tokenizer)
        strs = self.engine.tokenizer.convert_ids_to_tokens(token_ids) if request.return_token_strs else []
        return pb.TokenizeResponse(
            token_ids=token_ids,
            count=len(token_ids),
            max_model_len=int(self.engine.max_model_len),
            token_strs=strs,
        )

    async def Detokenize(self, request: pb.DetokenizeRequest, context: grpc.aio.ServicerContext):
        self._ready().resolve(request.model)
        text = await self._off_loop(detokenize_ids, list(request.token_ids), self.engine.tokenizer)
        return pb.DetokenizeResponse(text=text)
