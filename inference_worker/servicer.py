"""`loraplane.inference.v1.Inference` over the async engine: message conversion and admission only.

Domain errors raised here or by the engine become status codes in `inference_worker.grpc_errors`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import math
import struct
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from inference_worker.errors import EngineDeadError, EngineOverloadedError, InvalidRequestError
from inference_worker.sampling_params import SamplingParams
from inference_worker.served_models import ServedModels
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "abort": pb.FINISH_REASON_ABORT,
}
_FLOAT_FIELDS = (
    "temperature",
    "top_p",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)
_SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingParams) if f.init}


def _decimal(value: float) -> float:
    """The shortest decimal that rounds to the same float32 (0.9 arrives as 0.899999976; give 0.9 back),
    so gRPC callers sample exactly as Python callers of the offline API with the same literal."""
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


def sampling_params_from_proto(msg: pb.SamplingParams) -> SamplingParams:
    """Proto SamplingParams -> engine SamplingParams; unset optional fields keep the engine's defaults,
    except max_tokens, which unset means "up to the context length" (None), as the proto documents."""
    kwargs: dict[str, Any] = {"max_tokens": None}
    for descriptor, value in msg.ListFields():  # set optionals and non-empty repeated fields only
        name = descriptor.name
        if name in _FLOAT_FIELDS:
            kwargs[name] = _decimal(value)
        elif isinstance(value, (int, bool, str, float)):
            kwargs[name] = value
        else:
            kwargs[name] = list(value)
    unsupported = sorted(k for k in kwargs if k not in _SAMPLING_FIELDS)
    if unsupported:
        raise InvalidRequestError(f"{unsupported[0]} is not supported by this worker", param=unsupported[0])
    return SamplingParams(**kwargs)


def render_chat(tokenizer: Any, chat: pb.ChatInput) -> list[int]:
    """Render a chat with the tokenizer's chat template and tokenize it (the template adds BOS itself)."""
    if not chat.messages:
        raise InvalidRequestError("chat.messages is empty; give at least one message", param="messages")
    messages = [{"role": m.role, "content": m.content} for m in chat.messages]
    add_generation_prompt = chat.add_generation_prompt if chat.HasField("add_generation_prompt") else True
    if getattr(tokenizer, "chat_template", None) is None:
        raise InvalidRequestError("the model has no chat template; send text instead", param="messages")
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


def prompt_from_request(request: pb.GenerateRequest, tokenizer: Any) -> str | list[int]:
    """The engine prompt of a GenerateRequest: text as given, token ids as given, or a rendered chat."""
    kind = request.WhichOneof("input")
    if kind == "text" and request.text:
        return request.text
    if kind == "token_ids" and request.token_ids.ids:
        return list(request.token_ids.ids)
    if kind == "chat":
        return render_chat(tokenizer, request.chat)
    raise InvalidRequestError("the prompt is empty; set text, token_ids or chat", param="prompt")


def tokenized_prompt(prompt: str | list[int], tokenizer: Any) -> str | list[int]:
    """Token ids for the engine (tokenized here as the engine would, so the length can be checked once);
    text stays text when the worker runs without a tokenizer (the engine then rejects it)."""
    if isinstance(prompt, str) and tokenizer is not None:
        return list(tokenizer.encode(prompt))
    return prompt


def check_fits(prompt: str | list[int], params: SamplingParams, max_model_len: int) -> None:
    """vLLM's 400 for prompt + max_tokens past the context (a prompt too long alone is the engine's error).

    Semantics: unset max_tokens means "up to the context" and always fits.
    """
    if isinstance(prompt, str) or params.max_tokens is None or len(prompt) >= max_model_len:
        return
    if len(prompt) + params.max_tokens > max_model_len:
        raise InvalidRequestError(
            f"'max_tokens' is too large: {params.max_tokens}. This model's maximum context length is "
            f"{max_model_len} tokens and your request has {len(prompt)} input tokens "
            f"({params.max_tokens} > {max_model_len} - {len(prompt)}); lower max_tokens or shorten the "
            "prompt",
            param="max_tokens",
        )


def _token_logprobs(token_ids: Sequence[int], entries: Sequence[dict] | None) -> list[pb.TokenLogprob]:
    """Engine logprob dicts ({token_id: Logprob(logprob, rank, decoded_token)} per token) -> protos."""
    if not entries:
        return []
    result = []
    for token_id, entry in zip(token_ids, entries, strict=False):
        chosen = entry.get(token_id)
        ranked = sorted(entry.items(), key=lambda item: item[1].rank or 1 << 30)
        result.append(
            pb.TokenLogprob(
                token_id=token_id,
                token=(chosen.decoded_token or "") if chosen else "",
                logprob=chosen.logprob if chosen else float("-inf"),
                rank=(chosen.rank or 0) if chosen else 0,
                top_logprobs=[
                    pb.TopLogprob(
                        token_id=t, token=lp.decoded_token or "", logprob=lp.logprob, rank=lp.rank or 0
                    )
                    for t, lp in ranked
                ],
            )
        )
    return result


def prompt_logprobs_to_proto(output: Any, tokenizer: Any) -> list[pb.TokenLogprob]:
    """A RequestOutput's prompt logprobs as protos (empty when not asked). The first prompt token has no
    logprob (None in the engine): it is sent with its text, logprob NaN, rank 0 and no alternatives."""
    entries = getattr(output, "prompt_logprobs", None)
    if not entries:
        return []
    ids = list(output.prompt_token_ids)
    first_text = tokenizer.decode([ids[0]]) if tokenizer is not None else ""
    first = pb.TokenLogprob(token_id=ids[0], token=first_text, logprob=math.nan, rank=0)
    return [first, *_token_logprobs(ids[1:], entries[1:])]


def chunk_from_completion(completion: Any, send_finish: bool) -> pb.GenerateChunk | None:
    """One choice's new output as a chunk (with its finish reason when `send_finish`); None when there is
    nothing new to send."""
    token_ids = list(completion.token_ids_delta)
    finish = (
        FINISH_REASONS.get(completion.finish_reason or "abort", pb.FINISH_REASON_STOP) if send_finish else 0
    )
    if not token_ids and not completion.text_delta and not finish:
        return None
    logprobs = None
    if completion.logprobs and token_ids:
        logprobs = completion.logprobs[len(completion.logprobs) - len(token_ids) :]
    stop_reason = completion.stop_reason
    return pb.GenerateChunk(
        index=completion.index,
        token_ids=token_ids,
        text=completion.text_delta,
        logprobs=_token_logprobs(token_ids, logprobs),
        finish_reason=finish,
        stop_reason="" if stop_reason is None else str(stop_reason),
    )


def usage_from_output(output: Any) -> pb.Usage:
    prompt_tokens = len(output.prompt_token_ids)
    completion_tokens = sum(len(c.token_ids) for c in output.outputs)
    return pb.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        cached_prompt_tokens=int(getattr(output, "num_cached_tokens", 0) or 0),
    )


class WorkerDrainingError(EngineDeadError):
    """The worker is shutting down: it finishes the streams it has and admits no new ones."""


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """Generate, ListModels and Tokenize for one engine and its served models.

    Semantics: at most `max_in_flight` Generate calls are admitted at once; the next one fails at once
    with EngineOverloadedError (RESOURCE_EXHAUSTED). A call that is cancelled, or whose deadline passes,
    aborts its engine request, which frees its KV blocks at once. After `start_draining()` every new
    Generate fails with WorkerDrainingError (UNAVAILABLE, so clients retry elsewhere) while admitted
    streams run on; `wait_drained()` returns when none is left.
    """

    def __init__(self, max_in_flight: int) -> None:
        self.engine: Any = None
        self.models: ServedModels | None = None
        self.max_in_flight = max_in_flight
        self._in_flight: set[str] = set()
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def attach(self, engine: Any, models: ServedModels) -> None:
        """Start serving `engine` (the server registers the servicer before the model has loaded)."""
        self.engine, self.models = engine, models

    def _ready(self) -> ServedModels:
        if self.models is None:
            raise EngineDeadError("the worker is still loading its model; retry when its health is SERVING")
        return self.models

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
        lora_request = self._ready().resolve(request.model)
        params = sampling_params_from_proto(request.sampling_params)
        prompt = tokenized_prompt(prompt_from_request(request, self.engine.tokenizer), self.engine.tokenizer)
        check_fits(prompt, params, int(self.engine.max_model_len))
        request_id = self._admit(request.request_id)
        try:
            async for response in self._stream(request, prompt, params, request_id, lora_request):
                yield response
        finally:
            self._in_flight.discard(request_id)
            if not self._in_flight:
                self._idle.set()

    async def _stream(
        self, request: pb.GenerateRequest, prompt: Any, params: SamplingParams, request_id: str, lora: Any
    ) -> AsyncIterator[pb.GenerateResponse]:
        outputs = self.engine.generate(prompt, params, request_id, lora_request=lora)
        finished = False
        try:
            first = await anext(outputs, None)  # the engine validates the request before its first output
            if first is None:
                return
            yield pb.GenerateResponse(
                start=pb.GenerateStart(
                    request_id=request_id,
                    prompt_token_ids=list(first.prompt_token_ids),
                    prompt_logprobs=prompt_logprobs_to_proto(first, self.engine.tokenizer),
                    model=request.model or self.models.base_name,
                )
            )
            async for response in self._chunks(first, outputs):
                finished = finished or response.HasField("usage")
                yield response
        finally:
            if not finished:
                await self._abort(request_id, outputs)

    async def _chunks(self, first: Any, outputs: AsyncIterator[Any]) -> AsyncIterator[pb.GenerateResponse]:
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

    async def _abort(self, request_id: str, outputs: Any) -> None:
        """Free the request's sequences now (the call was cancelled, timed out or failed)."""
        logger.debug("aborting request %s", request_id)
        try:
            await outputs.aclose()
            aborted = self.engine.abort(request_id)
            if inspect.isawaitable(aborted):
                await aborted
        except Exception:
            logger.warning("abort of request %s failed", request_id, exc_info=True)

    def _admit(self, request_id: str) -> str:
        if len(self._in_flight) >= self.max_in_flight:
            raise EngineOverloadedError(
                f"the worker's queue is full ({len(self._in_flight)} requests in flight); retry later "
                "or on another worker"
            )
        if not request_id or request_id in self._in_flight:
            request_id = f"{request_id or 'gen'}-{uuid.uuid4().hex[:12]}"
        self._in_flight.add(request_id)
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
        tokenizer = self.engine.tokenizer
        kind = request.WhichOneof("input")
        if kind == "chat":
            token_ids = render_chat(tokenizer, request.chat)
            if request.HasField("add_special_tokens") and request.add_special_tokens:
                token_ids = list(tokenizer.build_inputs_with_special_tokens(token_ids))
        elif kind == "text":
            add_special = request.add_special_tokens if request.HasField("add_special_tokens") else True
            token_ids = list(tokenizer.encode(request.text, add_special_tokens=add_special))
        else:
            raise InvalidRequestError("nothing to tokenize; set text or chat", param="input")
        return pb.TokenizeResponse(
            token_ids=token_ids, count=len(token_ids), max_model_len=int(self.engine.max_model_len)
        )
