"""deploy/kubernetes: every object valid against the Kubernetes schemas (kubernetes-validate, offline,
strict), every reference resolving, the edge config rendered from the one template."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest

from loraplane.supervisor import SAFE_PATH
from tests.deploy.kustomize_build import build

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
FOLDERS = {"base": KUBERNETES / "base", "cpu-demo": KUBERNETES / "overlays" / "cpu-demo"}
TOKENS = {"tokens.env": "admin-token=test-admin\nworker-token=test-worker\n"}
# The oldest release with GA gRPC probes, and the newest whose schemas the package bundles.
VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


def objects(folder: str) -> list[dict]:
    return build(FOLDERS[folder], TOKENS)


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_specs(objs: list[dict]) -> dict[str, dict]:
    workloads = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]
    return {o["metadata"]["name"]: o["spec"]["template"] for o in workloads}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("folder", FOLDERS)
def test_every_object_is_valid(folder, version):
    for obj in objects(folder):
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_refuses_an_unknown_field():
    """A control: the bundled schemas are strict, so a typo in a manifest would fail the test above."""
    deployment = by_kind(objects("base"), "Deployment")["loraplane-worker"]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def test_every_file_is_part_of_a_build():
    used = set()
    for folder in FOLDERS.values():
        spec = (folder / "kustomization.yaml").read_text()
        used |= {path for path in folder.rglob("*") if path.is_file() and path.name in spec}
    files = {path for path in KUBERNETES.rglob("*") if path.suffix in (".yaml", ".pb")}
    assert files - used == {folder / "kustomization.yaml" for folder in FOLDERS.values()}


def test_tokens_come_from_an_uncommitted_file():
    """No token is committed, so a deployment without tokens.env fails to build instead of running open."""
    tracked = subprocess.check_output(["git", "ls-files", "deploy"], cwd=ROOT, text=True).split()
    assert not [name for name in tracked if name.endswith("tokens.env")]
    with pytest.raises(FileNotFoundError):
        build(FOLDERS["base"], {})
    secret = by_kind(objects("base"), "Secret")["loraplane-tokens"]
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "admin-token": "test-admin",
        "worker-token": "test-worker",
    }


@pytest.mark.parametrize("folder", FOLDERS)
def test_references_resolve(folder):
    objs = objects(folder)
    config_maps, secrets = by_kind(objs, "ConfigMap"), by_kind(objs, "Secret")
    claims = set(by_kind(objs, "PersistentVolumeClaim"))
    for name, template in pod_specs(objs).items():
        spec = template["spec"]
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    key = ref["configMapKeyRef"]
                    assert key["key"] in config_maps[key["name"]]["data"], (name, env)
                if "secretKeyRef" in ref:
                    key = ref["secretKeyRef"]
                    assert key["key"] in secrets[key["name"]]["data"], (name, env)
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            volumes = {v["name"] for v in spec.get("volumes", [])}
            stateful = by_kind(objs, "StatefulSet").get(name, {"spec": {}})
            templates = {t["metadata"]["name"] for t in stateful["spec"].get("volumeClaimTemplates", [])}
            assert mounts <= volumes | templates, (name, mounts)
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps


@pytest.mark.parametrize("folder", FOLDERS)
def test_services_select_a_workload_and_name_its_ports(folder):
    objs = objects(folder)
    templates = pod_specs(objs)
    for name, service in by_kind(objs, "Service").items():
        selector = service["spec"]["selector"].items()
        selected = [t for t in templates.values() if selector <= t["metadata"]["labels"].items()]
        assert len(selected) == 1, name
        ports = {p["name"]: p["containerPort"] for c in selected[0]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], (name, port)


def test_grpc_servers_have_native_grpc_probes_on_the_health_service():
    templates = pod_specs(objects("base"))
    expected = {
        "loraplane-control-plane": (50051, "loraplane.registry.v1.AdapterRegistry"),
        "loraplane-worker": (50061, "loraplane.inference.v1.Inference"),
    }
    for name, (port, service) in expected.items():
        container = templates[name]["spec"]["containers"][0]
        assert container["readinessProbe"]["grpc"] == {"port": port, "service": service}
        assert container["livenessProbe"]["grpc"]["port"] == port
        assert container["resources"]["requests"]


def test_workers_request_a_gpu_and_the_cpu_demo_does_not():
    gpu = pod_specs(objects("base"))["loraplane-worker"]["spec"]["containers"][0]
    cpu = pod_specs(objects("cpu-demo"))["loraplane-worker"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["image"] == "loraplane-cuda:0.1.0"
    assert "nvidia.com/gpu" not in str(cpu["resources"])
    assert cpu["args"][-2:] == ["--device", "cpu"]
    assert cpu["image"] == "loraplane:0.1.0"
    assert {m["name"] for m in cpu["volumeMounts"]} == {"cache", "adapters"}


def test_only_the_edge_could_be_published():
    for name, service in by_kind(objects("base"), "Service").items():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name


def test_the_edge_config_is_rendered_from_the_template():
    script = KUBERNETES / "render_edge.py"
    command = [sys.executable, *SAFE_PATH, str(script), "--check"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
