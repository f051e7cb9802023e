"""Running Generate calls on the chosen workers: admission with fail-over, streaming, cancellation.

Semantics: `open_streams` starts one Generate call per request and waits for each call's `start`
message, so that every error a worker reports before generating (unknown model, bad input, queue
full) becomes an HTTP error status rather than an in-stream error. A worker that answers UNAVAILABLE,
CANCELLED (shutting down) or RESOURCE_EXHAUSTED before `start` is skipped and the next candidate is
tried; UNAVAILABLE and CANCELLED also mark it down. After `start`, a failure ends the stream with the
mapped `OpenAIError`. Closing the iterator (client gone) cancels the gRPC calls, which makes the
workers free the sequences at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import grpc

from loraplane.gateway import request_log
from loraplane.gateway.errors import GENERIC_INTERNAL, OpenAIError, from_grpc, model_not_found, no_worker
from loraplane.gateway.routing import Miss, choose
from loraplane.gateway.workers import WorkerHandle, WorkerPool
from loraplane.inference.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)
# CANCELLED before `start` can only come from the worker (the gateway's own cancellation arrives as
# asyncio.CancelledError): grpc core cancels calls that race a worker's shutdown. Nothing was generated.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)
MAX_ATTEMPTS = 3
UNKNOWN_REFRESH_S = 0.5


class GenerationStream:
    """One admitted Generate call: `worker`, its `start` message, then chunks and usage by iteration."""

    def __init__(self, worker: WorkerHandle, call, start: pb.GenerateStart, pool: WorkerPool) -> None:
        self.worker, self.start, self._call, self._pool = worker, start, call, pool
        self._done = False

    async def __aiter__(self) -> AsyncIterator[pb.GenerateResponse]:
        try:
            while (message := await self._call.read()) is not grpc.aio.EOF:
                request_log.on_message(message)
                yield message
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._pool.mark_down(self.worker)
                raise OpenAIError(
                    503, "the inference worker serving this request became unavailable; retry the request"
                ) from exc
            raise from_grpc(exc) from exc
        finally:
            self.close()

    def close(self) -> None:
        """Cancel the call if still running (a no-op after it finished); idempotent."""
        if not self._done:
            self._done = True
            self.worker.in_flight -= 1
            self._call.cancel()


async def _pick(pool: WorkerPool, model: str, exclude: set[str]) -> WorkerHandle:
    choice = choose(pool.views(), model, slack=pool.config.affinity_slack, exclude=exclude)
    if choice is Miss.UNKNOWN and not exclude and await pool.refresh_if_older(UNKNOWN_REFRESH_S):
        # The model may have been added since the last refresh.
        choice = choose(pool.views(), model, slack=pool.config.affinity_slack, exclude=exclude)
    if choice is Miss.UNKNOWN:
        raise no_worker(model) if not pool.workers else model_not_found(model)
    if choice is Miss.NONE_HEALTHY:
        raise no_worker(model)
    return pool.workers[choice.worker_id]


async def open_stream(pool: WorkerPool, model: str, request: pb.GenerateRequest) -> GenerationStream:
    """Start `request` on the best worker for `model`, failing over before `start` (module docstring)."""
    exclude: set[str] = set()
    while True:
        worker = await _pick(pool, model, exclude)
        call = worker.stub.Generate(request, metadata=request_log.outgoing_metadata())
        worker.in_flight += 1
        try:
            first = await call.read()
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            worker.in_flight -= 1
            call.cancel()
            if not isinstance(exc, grpc.aio.AioRpcError):
                raise
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                pool.mark_down(worker)
            exclude.add(worker.worker_id)
            if exc.code() in RETRYABLE and len(exclude) < MAX_ATTEMPTS and len(exclude) < len(pool.workers):
                continue
            raise from_grpc(exc) from exc
        if first is grpc.aio.EOF or first.WhichOneof("response") != "start":
            worker.in_flight -= 1
            call.cancel()
            log.error("worker %s (%s) sent no start message", worker.worker_id, worker.endpoint)
            raise OpenAIError(500, GENERIC_INTERNAL)
        request_log.on_admitted(worker, request, first.start)
        return GenerationStream(worker, call, first.start, pool)


async def open_streams(
    pool: WorkerPool, model: str, requests: Sequence[pb.GenerateRequest]
) -> list[GenerationStream]:
    """Open every request's stream concurrently; on any failure the others are cancelled."""
    tasks = [asyncio.ensure_future(open_stream(pool, model, r)) for r in requests]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                (await task).close()
        raise


async def merged(streams: Sequence[GenerationStream]) -> AsyncIterator[tuple[int, pb.GenerateResponse]]:
    """(stream index, message) from all streams as they arrive; errors end the iteration by raising."""
    if len(streams) == 1:
        async for message in streams[0]:
            yield 0, message
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, stream: GenerationStream) -> None:
        try:
            async for message in stream:
                await queue.put((index, message))
        except BaseException as exc:  # forwarded to the consumer below
            await queue.put((index, exc))
        finally:
            await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            stream.close()
