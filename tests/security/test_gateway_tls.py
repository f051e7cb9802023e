"""The gateway over TLS without a model: HTTPS on its port (vLLM's --ssl-certfile/--ssl-keyfile) and mutual
TLS on its gRPC channel to a worker (the fake worker of loraplane.gateway.testing, serving with --tls-*)."""

from __future__ import annotations

import argparse
import ssl

import httpx
import pytest

from loraplane.gateway import cli
from loraplane.gateway.config import GatewayConfig
from loraplane.gateway.server import BackgroundGateway
from loraplane.gateway.testing import start_fake_worker
from loraplane.tls import TLSConfig
from tests.security.tls_certs import make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"), ["127.0.0.1", "localhost"])


async def _gateway(worker_port: int, channel_tls: TLSConfig, https: TLSConfig) -> BackgroundGateway:
    config = GatewayConfig(
        host="127.0.0.1", port=0, workers=(f"127.0.0.1:{worker_port}",), tls=channel_tls, https=https
    )
    gateway = BackgroundGateway(config)
    await gateway.start()
    return gateway


async def test_completion_over_https_through_a_mutual_tls_worker_channel(certs):
    mtls = TLSConfig(cert=certs.cert, key=certs.key, ca=certs.ca)
    server, _, port = await start_fake_worker(tls=mtls)
    gateway = await _gateway(port, mtls, TLSConfig(cert=certs.cert, key=certs.key))
    url = f"https://127.0.0.1:{gateway.port}/v1/completions"
    body = {"model": "fake-base", "prompt": "hello there", "max_tokens": 3}
    try:
        trusted = ssl.create_default_context(cafile=str(certs.ca))
        async with httpx.AsyncClient(verify=trusted) as client:
            reply = await client.post(url, json=body)
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3
        async with httpx.AsyncClient() as stranger:  # the system roots do not know the test CA
            with pytest.raises(httpx.ConnectError):
                await stranger.post(url, json=body)
    finally:
        await gateway.stop()
        await server.stop(None)


async def test_a_gateway_without_a_client_certificate_cannot_reach_a_mutual_tls_worker(certs):
    server, _, port = await start_fake_worker(tls=TLSConfig(cert=certs.cert, key=certs.key, ca=certs.ca))
    gateway = await _gateway(port, TLSConfig(ca=certs.ca), TLSConfig())
    try:
        body = {"model": "fake-base", "prompt": "hi", "max_tokens": 1}
        async with httpx.AsyncClient() as client:  # the handshake fails: the worker is never reached
            reply = await client.post(f"{gateway.url}/v1/completions", json=body)
            models = (await client.get(f"{gateway.url}/v1/models")).json()["data"]
        assert reply.status_code in (404, 503) and models == [], reply.text
    finally:
        await gateway.stop()
        await server.stop(None)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ssl-certfile", "cert"], "--ssl-certfile and --ssl-keyfile go together"),
        (
            ["--ssl-certfile", "missing.pem", "--ssl-keyfile", "key"],
            "--ssl-certfile missing.pem: no such file",
        ),
        (["--tls-ca", "missing.pem"], "--tls-ca missing.pem: no such file"),
    ],
)
def test_gateway_tls_flags_are_checked_before_it_starts(certs, capsys, flags, message):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    replace = {"cert": str(certs.cert), "key": str(certs.key)}
    args = parser.parse_args(["--worker", "127.0.0.1:1", *(replace.get(f, f) for f in flags)])
    assert cli.run(args) == 2
    assert message in capsys.readouterr().err
