"""compose.yaml, deploy/kubernetes and `loraplane up` describe one topology: the same ports, the same
environment names (each one the code reads), the tokens required and shared the same way, an edge that
never routes the worker stream or registry writes; and the control plane, started exactly as compose
and the manifests start it, refuses a worker without the token."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import grpc
import pytest
import yaml

from loraplane import topology
from loraplane.control_plane import config as control_plane_config
from loraplane.gateway import config as gateway_config
from loraplane.gateway.envoy_config import compose_edge_config
from loraplane.inference_worker.service import config as worker_config
from loraplane.supervisor import SAFE_PATH
from tests.deploy.kustomize_build import build
from tests.deploy.test_kubernetes import FOLDERS, KUBERNETES, ROOT, TOKENS, by_kind, pod_specs
from tests.e2e.e2e_support import rogue_connect

TOKEN_VALUES = {"LORAPLANE_ADMIN_TOKEN": "test-admin", "LORAPLANE_WORKER_TOKEN": "test-worker"}
COMPONENTS = {name: f"loraplane-{name}" for name in ("control-plane", "worker", "gateway")}
# What each component reads from its environment, by the code's own constants.
KUBERNETES_EDGE = KUBERNETES / "base" / "edge" / "envoy.yaml"
ENVIRONMENT = {
    "control-plane": {
        control_plane_config.DEFAULT_ADMIN_TOKEN_ENV,
        control_plane_config.DEFAULT_WORKER_TOKEN_ENV,
    },
    "worker": {worker_config.ENV_CONTROL_PLANE, worker_config.ENV_WORKER_ID, worker_config.ENV_WORKER_TOKEN},
    "gateway": {gateway_config.ENV_CONTROL_PLANE, gateway_config.ENV_RUNTIME_LORA},
}


class _ComposeLoader(yaml.SafeLoader):
    """compose's YAML: `!reset` (an override that clears a key) reads as None."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def compose_services() -> dict:
    return yaml.load((ROOT / "compose.yaml").read_text(), _ComposeLoader)["services"]


def kubernetes_containers() -> dict[str, dict]:
    templates = pod_specs(build(FOLDERS["base"], TOKENS))
    return {component: templates[name]["spec"]["containers"][0] for component, name in COMPONENTS.items()}


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def port(address: str) -> int:
    return int(address.rpartition(":")[2])


def kubernetes_env(container: dict) -> dict[str, str]:
    """The container's environment with the test tokens and the ConfigMap's values filled in."""
    config = by_kind(build(FOLDERS["base"], TOKENS), "ConfigMap")["loraplane-config"]["data"]
    secrets = dict(line.split("=", 1) for line in TOKENS["tokens.env"].split())
    env = {}
    for item in container["env"]:
        ref = item.get("valueFrom", {})
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "configMapKeyRef" in ref:
            env[item["name"]] = config[ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            env[item["name"]] = secrets[ref["secretKeyRef"]["key"]]
    return env


def test_each_component_reads_the_same_environment_everywhere():
    services, containers = compose_services(), kubernetes_containers()
    for component, expected in ENVIRONMENT.items():
        in_compose = {name for name in services[component]["environment"] if name.startswith("LORAPLANE_")}
        names = [e["name"] for e in containers[component]["env"]]
        in_kubernetes = {name for name in names if name.startswith("LORAPLANE_")}
        assert in_compose == in_kubernetes == expected, component
    # `loraplane up` hands its children the worker token under the same name.
    assert topology.WORKER_TOKEN_ENV == worker_config.ENV_WORKER_TOKEN
    assert topology.WORKER_TOKEN_ENV == control_plane_config.DEFAULT_WORKER_TOKEN_ENV


def test_tokens_are_required_and_never_default_to_empty():
    for component, service in compose_services().items():
        for name, value in (service.get("environment") or {}).items():
            if name.endswith("_TOKEN"):
                assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", value), (component, name, value)
    for component, container in kubernetes_containers().items():
        for item in container["env"]:
            if item["name"].endswith("_TOKEN"):
                ref = item["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "loraplane-tokens" and not ref.get("optional"), (component, item)
    # The worker token goes to the control plane and the workers, nowhere else (not the gateway, the edge).
    services = compose_services()
    assert "TOKEN" not in str(services["gateway"]) + str(services["envoy"])


def test_ports_agree():
    services, containers = compose_services(), kubernetes_containers()
    k8s = build(FOLDERS["base"], TOKENS)
    config_map = by_kind(k8s, "ConfigMap")["loraplane-config"]["data"]
    control_plane = topology.CONTROL_PLANE_PORT
    assert port(flag(services["control-plane"]["command"], "--listen")) == control_plane
    assert port(flag(containers["control-plane"]["args"], "--listen")) == control_plane
    assert port(services["worker"]["environment"]["LORAPLANE_CONTROL_PLANE"]) == control_plane
    assert port(config_map["control-plane"]) == control_plane
    worker = port(worker_config.DEFAULT_LISTEN)
    assert port(flag(services["worker"]["command"], "--listen")) == worker
    assert port(flag(containers["worker"]["args"], "--listen")) == worker
    gateway = int(flag(services["gateway"]["command"], "--port"))
    assert int(flag(containers["gateway"]["args"], "--port")) == gateway
    edge = topology_default("port")
    assert services["envoy"]["ports"] == [f"${{LORAPLANE_PORT:-{edge}}}:{edge}"]
    edge_container = pod_specs(k8s)["loraplane-edge"]["spec"]["containers"][0]
    assert edge_container["ports"][0]["containerPort"] == edge
    for text in (compose_edge_config(), KUBERNETES_EDGE.read_text()):
        config = yaml.safe_load(text)
        listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
        assert listener["port_value"] == edge
        clusters = {c["name"]: cluster_ports(c) for c in config["static_resources"]["clusters"]}
        assert clusters == {"gateways": {gateway}, "workers": {worker}, "control_plane": {control_plane}}


def topology_default(name: str):
    import argparse

    parser = argparse.ArgumentParser()
    topology.add_model_arguments(parser)
    return parser.get_default(name)


def cluster_ports(cluster: dict) -> set[int]:
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return {e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints}


def test_health_checks_name_the_inference_service():
    compose_check = compose_services()["worker"]["healthcheck"]["test"]
    probe = kubernetes_containers()["worker"]["readinessProbe"]["grpc"]
    assert flag(compose_check, "--service") == probe["service"] == topology.INFERENCE_SERVICE


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_the_edge_routes_neither_the_worker_stream_nor_registry_writes(where):
    text = compose_edge_config() if where == "compose" else KUBERNETES_EDGE.read_text()
    hcm = yaml.safe_load(text)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    to_control_plane = [r["match"] for r in routes if r.get("route", {}).get("cluster") == "control_plane"]
    registry = "/loraplane.registry.v1.AdapterRegistry/"
    assert to_control_plane == [{"path": registry + "GetAdapter"}, {"path": registry + "ListAdapters"}]
    refused = {r["match"]["prefix"]: r["direct_response"]["status"] for r in routes if "direct_response" in r}
    assert refused == {registry: 403, "/loraplane.worker.v1.WorkerControl/": 403}


def control_plane_command(where: str, tmp_path) -> tuple[list[str], dict[str, str]]:
    """The control plane's argv and environment as compose / the manifests run it, on loopback-reachable
    port 0 and a temporary data dir (the listen host stays as deployed: beyond loopback)."""
    if where == "compose":
        service = compose_services()["control-plane"]
        argv = list(service["command"])
        env = {name: TOKEN_VALUES[name] for name in service["environment"]}
    else:
        container = kubernetes_containers()["control-plane"]
        env = kubernetes_env(container)
        argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]
    assert argv[:2] == ["loraplane", "control-plane"]
    argv[argv.index("--listen") + 1] = flag(argv, "--listen").rpartition(":")[0] + ":0"
    argv[argv.index("--data-dir") + 1] = str(tmp_path / "data")
    argv[argv.index("--adapter-root") + 1] = str(tmp_path)
    return [sys.executable, *SAFE_PATH, "-m", "loraplane", *argv[1:]], env


def start(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, int, str]:
    """Start the control plane; (process, port it listens on or 0 if it exited, its output so far)."""
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    proc = subprocess.Popen(argv, env=clean | env, **pipes)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if match := re.search(r"control plane listening on [\d.:]+:(\d+)", line):
            return proc, int(match.group(1)), "".join(lines)
    proc.wait()
    return proc, 0, "".join(lines)


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_the_deployed_control_plane_refuses_a_worker_without_the_token(where, tmp_path):
    argv, env = control_plane_command(where, tmp_path)
    assert flag(argv, "--listen").startswith("0.0.0.0:")
    proc, listening, output = start(argv, env)
    try:
        assert listening, output
        target = f"127.0.0.1:{listening}"
        assert rogue_connect(target) == grpc.StatusCode.UNAUTHENTICATED
        assert rogue_connect(target, token="wrong") == grpc.StatusCode.UNAUTHENTICATED
        # The fleet's own token joins: the refusal above is the token's doing.
        assert rogue_connect(target, "fleet", token=env["LORAPLANE_WORKER_TOKEN"]) == grpc.StatusCode.OK
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_the_deployed_control_plane_will_not_start_without_a_worker_token(where, tmp_path):
    argv, env = control_plane_command(where, tmp_path)
    env.pop("LORAPLANE_WORKER_TOKEN")
    proc, listening, output = start(argv, env)
    assert not listening and proc.returncode != 0
    assert "LORAPLANE_WORKER_TOKEN" in output or "worker token" in output


def test_the_cpu_variants_differ_from_the_gpu_fleet_only_in_device_image_and_gpu():
    services = compose_services()
    cpu = yaml.load((ROOT / "compose.cpu.yaml").read_text(), _ComposeLoader)["services"]["worker"]
    assert cpu["command"] == [*services["worker"]["command"], "--device", "cpu"]
    assert cpu["build"]["dockerfile"] == "Dockerfile" and cpu["deploy"] is None  # `!reset`: no GPU
    template = pod_specs(build(FOLDERS["cpu-demo"], TOKENS))["loraplane-worker"]
    kubernetes_cpu = template["spec"]["containers"][0]
    assert kubernetes_cpu["args"] == [*kubernetes_containers()["worker"]["args"], "--device", "cpu"]
