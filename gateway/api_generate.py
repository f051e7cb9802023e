"""POST /v1/completions and /v1/chat/completions: OpenAI JSON in, Generate calls out, JSON or SSE back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from loraplane.gateway.convert import chat_request, completion_prompts, completion_requests, new_request_id
from loraplane.gateway.errors import OpenAIError, bad_request
from loraplane.gateway.generation import GenerationStream, merged, open_streams
from loraplane.gateway.metrics import RequestTracker as Tracker
from loraplane.gateway.metrics import arrival_of
from loraplane.gateway.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from loraplane.gateway.responses import ChatFormatter, CompletionFormatter, Formatter
from loraplane.gateway.unsupported import refuse_unsupported

router = APIRouter()
WORKER_HEADER = "x-loraplane-worker"


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def _consume(streams: Sequence[GenerationStream], formatter: Formatter, tracker: Tracker) -> None:
    async for index, message in merged(streams):
        kind = message.WhichOneof("response")
        if kind == "chunk":
            formatter.on_chunk(index, message.chunk)
            tracker.on_chunk(len(message.chunk.token_ids))
        elif kind == "usage":
            formatter.usages.append(message.usage)


async def _events(streams, formatter: Formatter, first: list[dict], include_usage: bool, tracker: Tracker):
    usage_field = {"usage": None} if include_usage else {}
    try:
        for choice in first:
            yield sse({**formatter.envelope([choice], chunk=True), **usage_field})
        async for index, message in merged(streams):
            kind = message.WhichOneof("response")
            if kind == "chunk":
                tracker.on_chunk(len(message.chunk.token_ids))
                choice = formatter.on_chunk(index, message.chunk)
                yield sse({**formatter.envelope([choice], chunk=True), **usage_field})
            elif kind == "usage":
                formatter.usages.append(message.usage)
        if include_usage:
            yield sse(formatter.usage_chunk())
    except OpenAIError as exc:
        yield sse(exc.body())
    finally:
        for stream in streams:
            stream.close()
        tracker.finish(formatter.usages)
    yield "data: [DONE]\n\n"


async def _until_disconnect(request: Request, work) -> None:
    """Run `work`; if the client goes away first, cancel it (which cancels the gRPC calls)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await task


async def _respond(request: Request, streams, formatter: Formatter, first: list[dict], body) -> Response:
    state = request.app.state.gateway
    label = state.metrics.adapter_label(formatter.model, state.pool.is_base_model(formatter.model))
    tracker = Tracker(state.metrics, label, arrival_of(request), streamed=body.stream)
    headers = {WORKER_HEADER: streams[0].worker.worker_id} if state.config.served_by_header else {}
    endpoint = request.url.path
    state.metrics.requests.labels(endpoint, "200").inc()
    if body.stream:
        events: AsyncIterator[str] = _events(streams, formatter, first, body.include_usage, tracker)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        await _until_disconnect(request, _consume(streams, formatter, tracker))
    finally:
        for stream in streams:
            stream.close()
        tracker.finish(formatter.usages)
    return JSONResponse(formatter.final(), headers=headers)


def _explain_echo(error: OpenAIError, body: CompletionRequest) -> OpenAIError:
    """Echo of token ids, and echo with logprobs, ask the worker for prompt logprobs; a worker that
    cannot compute them refuses `prompt_logprobs`, which the client never sent: say what to change."""
    if not (body.echo and body.prompt_logprobs is None and "prompt_logprobs" in error.message):
        return error
    return OpenAIError(
        error.status,
        "echo of token-id prompts and echo with logprobs need the prompt's logprobs, which the serving "
        f"worker cannot compute ({error.message}); send a text prompt without logprobs, or drop echo",
        "echo",
    )


def _check_n(body: SamplingFields, request: Request) -> None:
    """`n` within the gateway's bound: each choice is a sequence the engine runs for the whole request;
    and no field the server cannot honour yet (loraplane.gateway.unsupported)."""
    refuse_unsupported(body)
    max_n = request.app.state.gateway.config.max_n
    if body.n > max_n:
        raise bad_request(f"n must be at most {max_n} (this gateway's --max-n), got {body.n}", "n")


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    _check_n(body, request)
    pool = request.app.state.gateway.pool
    request_id = new_request_id("cmpl")
    model = body.model or ""
    prompts = completion_prompts(body)
    try:
        streams = await open_streams(pool, model, completion_requests(body, model, request_id))
    except OpenAIError as exc:
        raise _explain_echo(exc, body) from exc
    served = model or streams[0].start.model
    formatter = CompletionFormatter(request_id, served, body.n, body.logprobs is not None, body.echo)
    formatter.prompt_logprobs = {} if body.prompt_logprobs is not None else None
    first = [c for i, s in enumerate(streams) for c in formatter.on_start(i, s.start, prompts[i])]
    return await _respond(request, streams, formatter, first if body.stream else [], body)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    _check_n(body, request)
    pool = request.app.state.gateway.pool
    request_id = new_request_id("chatcmpl")
    model = body.model or ""
    streams = await open_streams(pool, model, [chat_request(body, model, request_id)])
    formatter = ChatFormatter(request_id, model or streams[0].start.model, body.n, body.logprobs)
    formatter.top_logprobs = body.top_logprobs or 0
    first = formatter.opening_chunks() if body.stream else []
    return await _respond(request, streams, formatter, first, body)
