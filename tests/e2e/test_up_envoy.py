"""End to end through the real Envoy: `loraplane up --workers 2 --envoy` on loopback with the demo model.

Six adapters spread over both workers by affinity; the registry's REST face through the transcoder;
gRPC through Envoy with the adapter header; then one worker is killed mid-stream: its stream ends with
a clean error and every later request is served by the other worker.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from e2e_support import UpProcess, control_plane_address, rogue_connect, write_random_adapter

from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.supervisor import free_port

ADAPTERS = [f"lora-{i}" for i in range(6)]
WORKER_HEADER = "x-loraplane-worker"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, demo_model_dir):
    root = tmp_path_factory.mktemp("up")
    modules = [
        f"{n}={write_random_adapter(demo_model_dir, root / n, seed=i)}" for i, n in enumerate(ADAPTERS)
    ]
    port = free_port()
    argv = ["up", "--workers", "2", "--envoy", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--data-dir", str(root / "data"), "--max-num-seqs", "8", "--max-model-len", "512"]
    argv += ["--enable-lora", "--max-loras", "2", "--max-cpu-loras", "6", "--lora-modules", *modules]
    up = UpProcess(argv, root / "up.log")
    try:
        up.ready(timeout_s=600)
        yield up, f"http://127.0.0.1:{port}"
    finally:
        up.stop()


@pytest.fixture
def client(fleet):
    return openai.OpenAI(base_url=f"{fleet[1]}/v1", api_key="unused", max_retries=0)


def complete(client, model: str, max_tokens: int = 2):
    reply = client.completions.with_raw_response.create(model=model, prompt="Hello", max_tokens=max_tokens)
    return reply.headers[WORKER_HEADER], reply.parse()


def test_models_list_through_envoy(client):
    models = client.models.list().data
    base = models[0]
    assert base.parent is None
    assert {m.id for m in models[1:]} == set(ADAPTERS)
    assert all(m.parent == base.id for m in models[1:])


def test_adapters_keep_to_one_worker_and_use_both(client):
    owners = {}
    for name in ADAPTERS:
        served = {complete(client, name)[0] for _ in range(2)}
        assert len(served) == 1, f"{name} moved between workers: {served}"
        owners[name] = served.pop()
    assert set(owners.values()) == {"worker-0", "worker-1"}


def test_registry_rest_face_through_transcoder(fleet):
    url = fleet[1]
    listed = httpx.get(f"{url}/v1/adapters").json()
    assert {a["name"] for a in listed["adapters"]} == set(ADAPTERS)
    missing = httpx.get(f"{url}/v1/adapters/not-there")
    assert missing.status_code == 404


def test_a_stranger_cannot_join_directly_or_through_the_edge(fleet):
    up, url = fleet
    target = control_plane_address(up.log_path.read_text())
    assert rogue_connect(target) == grpc.StatusCode.UNAUTHENTICATED
    assert rogue_connect(url.removeprefix("http://")) == grpc.StatusCode.PERMISSION_DENIED
    for pid in up.pids.values():  # the generated token travels in the environment, never in argv
        assert "token" not in Path(f"/proc/{pid}/cmdline").read_text().lower()


def test_edge_refuses_the_registry_admin_routes(fleet):
    url = fleet[1]
    assert httpx.post(f"{url}/v1/adapters", json={"name": "x", "source": "/x"}).status_code == 403
    assert httpx.delete(f"{url}/v1/adapters/lora-0").status_code == 403
    assert httpx.get(f"{url}/v1/workers").status_code == 403
    assert httpx.get(f"{url}/v1/adapters/lora-0").status_code == 200


def test_grpc_through_envoy_with_adapter_header(fleet):
    target = fleet[1].removeprefix("http://")
    with grpc.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = pb.GenerateRequest(
            model="lora-0", text="Hi", sampling_params=pb.SamplingParams(max_tokens=2)
        )
        messages = list(stub.Generate(request, metadata=(("x-lora-adapter", "lora-0"),), timeout=60))
    assert messages[0].WhichOneof("response") == "start" and messages[-1].usage.completion_tokens == 2


def test_killed_worker_ends_its_stream_cleanly_and_traffic_moves(fleet, client):
    up, _ = fleet
    victim_adapter = next(n for n in ADAPTERS if complete(client, n)[0] == "worker-0")
    stream = client.completions.create(
        model=victim_adapter, prompt="Tell me a story", max_tokens=400, stream=True
    )
    received = 0
    with pytest.raises(openai.APIError):
        for _ in stream:
            received += 1
            if received == 2:
                os.kill(up.pids["worker-0"], signal.SIGKILL)
    assert received >= 2
    for name in ADAPTERS:
        worker, reply = complete(client, name)
        assert worker == "worker-1" and reply.choices[0].text is not None
