"""gRPC client of the control plane's AdapterRegistry, as the gateway uses it.

Semantics: plain Python values in and out; protobuf stays inside this module. Failures raise
`grpc.aio.AioRpcError`, which callers turn into OpenAI errors with `loraplane.gateway.errors.from_grpc`.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraplane.common.v1 import residency_pb2 as residency
from loraplane.grpc_options import client_options
from loraplane.registry.v1 import registry_pb2 as pb
from loraplane.registry.v1 import registry_pb2_grpc
from loraplane.tls import PLAINTEXT, TLSConfig, aio_channel

# The residency states of an adapter a worker can serve, by display name ("device", "host", ...).
_SERVING_STATES = frozenset(
    {
        residency.RESIDENCY_STATE_DEVICE,
        residency.RESIDENCY_STATE_HOST,
        residency.RESIDENCY_STATE_DISK,
        residency.RESIDENCY_STATE_LOADING,
    }
)
_STATE_NAMES = {
    v: residency.ResidencyState.Name(v).removeprefix("RESIDENCY_STATE_").lower() for v in _SERVING_STATES
}


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as ListWorkers reports it; `adapters` maps adapter name -> state ("device", "host", ...)."""

    worker_id: str
    endpoint: str
    base_model: str
    ready: bool
    load: int
    adapters: dict[str, str]


@dataclass(frozen=True)
class CreateResult:
    """What CreateAdapter answered: the workers that loaded, rejected, or have not answered yet."""

    version: str
    loaded: tuple[str, ...]
    failed: tuple[str, ...]
    pending: tuple[str, ...]
    message: str
    failure_reasons: tuple[str, ...]


class RegistryClient:
    """Calls AdapterRegistry over one channel.

    Create and delete send `authorization: Bearer <token>`: the call's `token` when given (the gateway
    forwards its caller's), else the client's `admin_token` (the CLI's own); none when both are unset.
    The channel speaks TLS when `tls` is enabled (loraplane.tls)."""

    def __init__(
        self,
        address: str,
        admin_token: str | None = None,
        timeout_s: float = 10.0,
        tls: TLSConfig = PLAINTEXT,
    ) -> None:
        self._channel = aio_channel(address, tls, client_options())
        self._stub = registry_pb2_grpc.AdapterRegistryStub(self._channel)
        self._admin_token = admin_token
        self._timeout_s = timeout_s

    async def close(self) -> None:
        await self._channel.close()

    async def list_workers(self) -> list[WorkerInfo]:
        reply = await self._stub.ListWorkers(pb.ListWorkersRequest(), timeout=self._timeout_s)
        return [_worker_info(w) for w in reply.workers]

    def _metadata(self, token: str | None) -> tuple[tuple[str, str], ...]:
        token = token or self._admin_token
        return (("authorization", f"Bearer {token}"),) if token else ()

    async def create_adapter(
        self,
        name: str,
        path: str,
        base_model_name: str | None = None,
        replace: bool = False,
        token: str | None = None,
    ) -> CreateResult:
        adapter = pb.Adapter(
            name=name, source=pb.AdapterSource(path=path), base_model_name=base_model_name or ""
        )
        request = pb.CreateAdapterRequest(adapter=adapter, replace=replace)
        reply = await self._stub.CreateAdapter(
            request, metadata=self._metadata(token), timeout=max(self._timeout_s, 120.0)
        )
        reasons = tuple(
            r.error for r in reply.adapter.residency if r.state == residency.RESIDENCY_STATE_FAILED
        )
        return CreateResult(
            version=reply.adapter.version,
            loaded=tuple(reply.loaded_workers),
            failed=tuple(reply.failed_workers),
            pending=tuple(reply.pending_workers),
            message=reply.message,
            failure_reasons=reasons,
        )

    async def delete_adapter(self, name: str, token: str | None = None) -> None:
        await self._stub.DeleteAdapter(
            pb.DeleteAdapterRequest(name=name),
            metadata=self._metadata(token),
            timeout=max(self._timeout_s, 60.0),
        )


def _worker_info(worker: pb.Worker) -> WorkerInfo:
    adapters = {a.name: _STATE_NAMES[a.state] for a in worker.adapters if a.state in _SERVING_STATES}
    return WorkerInfo(
        worker_id=worker.worker_id,
        endpoint=worker.endpoint,
        base_model=worker.base_model_name,
        ready=worker.state == pb.WORKER_STATE_READY,
        load=worker.num_running + worker.num_waiting,
        adapters=adapters,
    )
