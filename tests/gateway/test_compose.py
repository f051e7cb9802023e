"""compose.yaml: the four services, health checks, environment configuration, only Envoy publishing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_services_and_healthchecks(compose):
    services = compose["services"]
    assert set(services) == {"control-plane", "worker", "gateway", "envoy"}
    assert all(s.get("healthcheck", {}).get("test") for s in services.values())


def test_only_envoy_publishes_ports(compose):
    published = {name for name, s in compose["services"].items() if s.get("ports")}
    assert published == {"envoy"}
    assert compose["services"]["envoy"]["image"].startswith("envoyproxy/envoy:v1.40")


def test_worker_reserves_a_gpu(compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_configuration_through_environment(compose):
    services = compose["services"]
    for name in ("worker", "gateway"):
        assert services[name]["environment"]["LORAPLANE_CONTROL_PLANE"] == "control-plane:50051"
    assert "LORAPLANE_ALLOW_RUNTIME_LORA_UPDATING" in services["gateway"]["environment"]


def test_worker_token_is_required_and_shared(compose):
    services = compose["services"]
    for name in ("control-plane", "worker"):
        assert services[name]["environment"]["LORAPLANE_WORKER_TOKEN"].startswith(
            "${LORAPLANE_WORKER_TOKEN:?"
        )
    assert "LORAPLANE_WORKER_TOKEN" not in str(services["gateway"]) + str(services["envoy"])


def test_mounted_envoy_files_exist(compose):
    for volume in compose["services"]["envoy"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).is_file()


def test_docker_compose_config_when_available():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        pytest.skip("docker compose is not installed")
    env = {**os.environ, "LORAPLANE_WORKER_TOKEN": "compose-test-token", "LORAPLANE_ADMIN_TOKEN": "admin"}
    result = subprocess.run(
        [docker, "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    unset = {k: v for k, v in env.items() if k != "LORAPLANE_WORKER_TOKEN"}
    refused = subprocess.run(
        [docker, "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True, env=unset
    )
    assert refused.returncode != 0 and "LORAPLANE_WORKER_TOKEN" in refused.stderr
