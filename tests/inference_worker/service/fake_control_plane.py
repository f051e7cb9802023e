"""A fake control plane serving the real WorkerControl stream in the test's event loop (no registry).

    cp = FakeControlPlane(desired=[spec, ...]); await cp.start()
    hello = await cp.wait_hello(); result = await cp.command(ConnectResponse(load_adapter=...))
    await cp.wait_heartbeat(lambda hb: hb.num_running == 0)

It answers each Hello with a Sync of `desired` and `heartbeat_interval_s=1`, records every message the
worker sends, and lets a test push commands and await the matching CommandResult.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

import grpc

from loraplane.grpc_options import server_options
from loraplane.worker.v1 import worker_pb2 as wk
from loraplane.worker.v1 import worker_pb2_grpc


class FakeControlPlane(worker_pb2_grpc.WorkerControlServicer):
    def __init__(self, desired: list[wk.AdapterSpec] | None = None) -> None:
        self.desired = list(desired or [])
        self.hellos: list[wk.Hello] = []
        self.heartbeats: list[wk.Heartbeat] = []
        self.results: dict[str, wk.CommandResult] = {}
        self.streams_ended = 0  # Connect streams that ended (the worker closed it or went away)
        self.port = 0
        self._ids = itertools.count(1)
        self._outbox: asyncio.Queue | None = None
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self._server = grpc.aio.server(options=server_options())
        worker_pb2_grpc.add_WorkerControlServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        await self._server.start()
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def Connect(self, request_iterator, context):
        first = await anext(request_iterator)
        assert first.WhichOneof("message") == "hello", first
        outbox: asyncio.Queue = asyncio.Queue()
        self._outbox = outbox
        await self._record(lambda: self.hellos.append(first.hello))
        reader = asyncio.create_task(self._read(request_iterator))
        try:
            sync = wk.Sync(command_id=f"sync-{next(self._ids)}", adapters=self.desired)
            yield wk.ConnectResponse(sync=sync, heartbeat_interval_s=1)
            while True:
                yield await outbox.get()
        finally:
            reader.cancel()
            self.streams_ended += 1

    async def _read(self, request_iterator) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for message in request_iterator:
                kind = message.WhichOneof("message")
                if kind == "heartbeat":
                    await self._record(lambda m=message: self.heartbeats.append(m.heartbeat))
                elif kind == "command_result":
                    result = message.command_result
                    await self._record(lambda r=result: self.results.__setitem__(r.command_id, r))

    async def _record(self, change: Callable[[], None]) -> None:
        async with self._changed:
            change()
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 30.0) -> object:
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_hello(self, count: int = 1, timeout: float = 60.0) -> wk.Hello:
        await self.wait_for(lambda: len(self.hellos) >= count, timeout)
        return self.hellos[count - 1]

    async def wait_heartbeat(
        self, predicate: Callable[[wk.Heartbeat], bool], timeout: float = 30.0
    ) -> wk.Heartbeat:
        """The first heartbeat arriving from now on that satisfies `predicate`."""
        start = len(self.heartbeats)
        await self.wait_for(lambda: any(predicate(hb) for hb in self.heartbeats[start:]), timeout)
        return next(hb for hb in self.heartbeats[start:] if predicate(hb))

    async def command(self, response: wk.ConnectResponse, timeout: float = 60.0) -> wk.CommandResult:
        """Push a LoadAdapter/UnloadAdapter/Sync and return the worker's CommandResult."""
        kind = response.WhichOneof("message")
        command_id = f"{kind}-{next(self._ids)}"
        getattr(response, kind).command_id = command_id
        assert self._outbox is not None, "no worker connected"
        await self._outbox.put(response)
        await self.wait_for(lambda: command_id in self.results, timeout)
        return self.results[command_id]
