"""Closed by default, through the real processes: `loraplane up --workers 1 --envoy --expose-admin` on
0.0.0.0 with TLS everywhere (certificates made here), reached from this machine at 127.0.0.1 and at its
own non-loopback address.

One topology serves every assertion (the demo model loads once): tokens made by `up` and kept 0600 in
the data dir; registry writes without the admin token refused over REST through Envoy (401), gRPC
direct and gRPC through Envoy (UNAUTHENTICATED), and accepted with it; WorkerControl without the worker
token refused directly and never published on the edge; a completion over TLS; clients without the CA,
or without a client certificate where mutual TLS is on, refused.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from loraplane.inference.v1 import inference_pb2 as inf
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.registry.v1 import registry_pb2 as reg
from loraplane.registry.v1 import registry_pb2_grpc
from loraplane.supervisor import free_port
from loraplane.tls import PLAINTEXT, TLSConfig, channel
from loraplane.worker.v1 import worker_pb2 as wk
from loraplane.worker.v1 import worker_pb2_grpc
from tests.e2e.e2e_support import UpProcess, control_plane_address, grpc_status, write_random_adapter
from tests.security.tls_certs import CertFiles, make_certs

BASE_MODEL = "SmolLM2-135M-Instruct"


def own_address() -> str | None:
    """This machine's first non-loopback IPv4 address (where its default route leaves), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.254.254.254", 9))  # UDP: picks the route's source address, sends nothing
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback else address


@dataclass
class Fleet:
    up: UpProcess
    data_dir: Path
    adapters: Path
    certs: CertFiles
    port: int
    control_plane: str

    @property
    def mtls(self) -> TLSConfig:
        return TLSConfig(cert=self.certs.cert, key=self.certs.key, ca=self.certs.ca)

    @property
    def verify(self) -> ssl.SSLContext:
        """What an HTTPS client that trusts the test CA verifies with."""
        return ssl.create_default_context(cafile=str(self.certs.ca))

    def token(self, name: str) -> str:
        return (self.data_dir / name).read_text().strip()

    def bearer(self, name: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(name)}"),)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, demo_model_path) -> Fleet:
    root = tmp_path_factory.mktemp("closed")
    hosts = ["127.0.0.1", "localhost", *([own_address()] if own_address() else [])]
    certs = make_certs(root / "certs", hosts)
    adapters = root / "adapters"
    write_random_adapter(Path(demo_model_path), adapters / "startup", seed=0)
    port = free_port()
    argv = ["up", "--workers", "1", "--envoy", "--expose-admin", "--host", "0.0.0.0", "--port", str(port)]
    argv += ["--data-dir", str(root / "data"), "--adapter-root", str(adapters), *certs.flags()]
    argv += ["--max-num-seqs", "4", "--max-model-len", "512", "--enable-lora", "--max-loras", "2"]
    argv += ["--lora-modules", f"startup={adapters / 'startup'}"]
    with pytest.MonkeyPatch.context() as env:  # the tokens must come from `up` itself
        env.delenv("LORAPLANE_ADMIN_TOKEN", raising=False)
        env.delenv("LORAPLANE_WORKER_TOKEN", raising=False)
        up = UpProcess(argv, root / "up.log")
    try:
        up.ready(timeout_s=600)
        cp = control_plane_address(up.log_path.read_text())
        yield Fleet(up, root / "data", adapters, certs, port, cp)
    finally:
        up.stop()


EDGE_HOSTS = ["127.0.0.1", "own-address"]


@pytest.fixture(params=EDGE_HOSTS)
def edge(request, fleet) -> str:
    """HOST:PORT of the edge, at loopback or at this machine's own address."""
    host = request.param
    if host == "own-address":
        host = own_address()
        if host is None:
            pytest.skip("this machine has no non-loopback IPv4 address")
    return f"{host}:{fleet.port}"


def test_up_makes_the_tokens_once_and_keeps_them_private(fleet):
    log = fleet.up.log_path.read_text()
    for name in ("admin-token", "worker-token"):
        assert stat.S_IMODE((fleet.data_dir / name).stat().st_mode) == 0o600
        assert len(fleet.token(name)) >= 32
    assert log.count(fleet.token("admin-token")) == 1  # shown once, at creation
    assert fleet.token("worker-token") not in log
    for pid in fleet.up.pids.values():  # tokens travel in the environment, never in argv
        cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        assert fleet.token("admin-token") not in cmdline and fleet.token("worker-token") not in cmdline


def test_rest_registry_writes_through_the_edge_need_the_admin_token(fleet, edge):
    url, verify = f"https://{edge}", fleet.verify
    name = f"rest-{edge.split(':')[0].replace('.', '-')}"
    body = {"adapter": {"name": name, "source": {"path": str(fleet.adapters / "startup")}}}
    admin = {"authorization": f"Bearer {fleet.token('admin-token')}"}
    for headers in ({}, {"authorization": "Bearer wrong"}):
        assert httpx.post(f"{url}/v1/adapters", json=body, headers=headers, verify=verify).status_code == 401
        assert httpx.delete(f"{url}/v1/adapters/startup", headers=headers, verify=verify).status_code == 401
    created = httpx.post(f"{url}/v1/adapters", json=body, headers=admin, verify=verify, timeout=120)
    assert created.status_code == 200, created.text
    assert httpx.get(f"{url}/v1/adapters/{name}", verify=verify).json()["adapter"]["name"] == name
    assert httpx.delete(f"{url}/v1/adapters/{name}", headers=admin, verify=verify).status_code == 200


def test_grpc_registry_writes_need_the_admin_token_direct_and_through_the_edge(fleet, edge):
    stub = registry_pb2_grpc.AdapterRegistryStub
    name = f"grpc-{edge.split(':')[0].replace('.', '-')}"
    source = reg.AdapterSource(path=str(fleet.adapters / "startup"))
    create = reg.CreateAdapterRequest(adapter=reg.Adapter(name=name, source=source))
    delete = reg.DeleteAdapterRequest(name=name)
    admin = fleet.bearer("admin-token")
    calls = {
        "create": lambda c, m: stub(c).CreateAdapter(create, metadata=m, timeout=120),
        "delete": lambda c, m: stub(c).DeleteAdapter(delete, metadata=m, timeout=60),
    }
    for target in (fleet.control_plane, edge):
        for call in calls.values():
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                refused = grpc_status(target, lambda c, f=call, m=metadata: f(c, m), fleet.mtls)
                assert refused == grpc.StatusCode.UNAUTHENTICATED
        for call in calls.values():  # create, then delete, with the token
            assert grpc_status(target, lambda c, f=call: f(c, admin), fleet.mtls) == grpc.StatusCode.OK


def _connect(metadata) -> Callable[[grpc.Channel], object]:
    # A base model no gateway routes to, so the accepted stranger below never receives a request.
    hello = wk.Hello(worker_id="stranger", base_model_name="not-served", endpoint="127.0.0.1:9")
    return lambda c: next(
        worker_pb2_grpc.WorkerControlStub(c).Connect(
            iter([wk.ConnectRequest(hello=hello)]), metadata=metadata, timeout=10
        )
    )


def test_worker_control_needs_the_worker_token_and_is_never_on_the_edge(fleet, edge):
    member = fleet.bearer("worker-token")
    for metadata in ((), (("authorization", "Bearer wrong"),), fleet.bearer("admin-token")):
        assert (
            grpc_status(fleet.control_plane, _connect(metadata), fleet.mtls)
            == grpc.StatusCode.UNAUTHENTICATED
        )
    assert grpc_status(fleet.control_plane, _connect(member), fleet.mtls) == grpc.StatusCode.OK
    for metadata in ((), member):
        assert grpc_status(edge, _connect(metadata), fleet.mtls) == grpc.StatusCode.PERMISSION_DENIED


def test_completion_over_tls_and_generate_through_the_edge(fleet, edge):
    body = {"model": "startup", "prompt": "Hello", "max_tokens": 2}
    reply = httpx.post(f"https://{edge}/v1/completions", json=body, verify=fleet.verify, timeout=60)
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 2
    request = inf.GenerateRequest(
        model=BASE_MODEL, text="Hi", sampling_params=inf.SamplingParams(max_tokens=2)
    )
    with channel(edge, TLSConfig(ca=fleet.certs.ca)) as chan:  # the edge asks no client certificate
        messages = list(inference_pb2_grpc.InferenceStub(chan).Generate(request, timeout=60))
    assert messages[-1].usage.completion_tokens == 2


def test_clients_without_the_ca_or_a_client_certificate_are_refused(fleet, edge):
    with pytest.raises(httpx.ConnectError):  # the system roots do not know the test CA
        httpx.get(f"https://{edge}/v1/models")
    with pytest.raises(httpx.TransportError):  # plaintext HTTP to a TLS listener
        httpx.get(f"http://{edge}/v1/models")
    listing = lambda c: registry_pb2_grpc.AdapterRegistryStub(c).ListAdapters(
        reg.ListAdaptersRequest(), timeout=5
    )
    stranger = TLSConfig(ca=fleet.certs.ca)  # trusts the servers, but has no client certificate
    for tls in (PLAINTEXT, stranger):  # mutual TLS on the control plane
        assert grpc_status(fleet.control_plane, listing, tls) == grpc.StatusCode.UNAVAILABLE
    assert grpc_status(fleet.control_plane, listing, fleet.mtls) == grpc.StatusCode.OK
    assert grpc_status(edge, listing, PLAINTEXT) == grpc.StatusCode.UNAVAILABLE
