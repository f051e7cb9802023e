"""A real fleet for the fuzz suite: control plane (SQLite in a temp dir), one worker with a real engine on
a tiny random Llama (the demo tokenizer), and the gateway with runtime LoRA updates on, all on loopback.

The three servers run in one event loop on a background thread, so the fuzzers drive them with plain
blocking clients (schemathesis' HTTP calls, sync gRPC channels) from the test thread. The fleet is
session-scoped: one model load serves both fuzzers. Tokens are on for registry writes and worker
registration, as in every deployment beyond loopback; the fuzzers send them so that every RPC is reached.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.e2e_support import write_random_adapter

MODEL = "fuzz-tiny"
ADAPTER = "fuzz-lora"
ADMIN_TOKEN = "fuzz-admin-token"
WORKER_TOKEN = "fuzz-worker-token"
HEARTBEAT_TIMEOUT_S = 10.0


class LoopThread:
    """An asyncio loop on a daemon thread; `run(coro)` runs a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-fleet", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine, timeout_s: float = 300.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.run(self._cancel_tasks(), 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @staticmethod
    async def _cancel_tasks() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class FuzzFleet:
    """Addresses of the running fleet and the names the fuzzers aim at."""

    gateway_url: str
    worker_target: str
    control_plane_target: str
    adapter_path: str
    adapter_root: str

    def completion(self, model: str = MODEL) -> dict:
        """A normal greedy completion through the gateway (raises on any non-200)."""
        body = {"model": model, "prompt": "Hello there", "max_tokens": 4, "temperature": 0}
        request = urllib.request.Request(
            f"{self.gateway_url}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


def check_http_response(request: str, response) -> None:
    """The fuzzers' HTTP contract: no 5xx, and a 4xx body is `{"error": {"message", "type", "param",
    "code"}}` with a message to act on. `request` describes the request for the failure message."""
    assert response.status_code < 500, f"{request} -> {response.status_code} {response.text[:500]}"
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error


def _write_tiny_model(out: Path, tokenizer_src: str) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    from loraplane.inference_worker.testing import TINY, write_tiny_model

    config = LlamaConfig(vocab_size=49152, tie_word_embeddings=True, **TINY)
    return write_tiny_model(LlamaForCausalLM, config, out, tokenizer_src)


async def _start(model_path: str, root: Path, adapter_root: Path):
    from loraplane.control_plane.config import ControlPlaneConfig
    from loraplane.control_plane.server import ControlPlaneServer
    from loraplane.gateway.config import GatewayConfig
    from loraplane.gateway.server import BackgroundGateway
    from loraplane.inference_worker.config import EngineConfig
    from loraplane.inference_worker.service.config import WorkerServiceConfig
    from loraplane.inference_worker.service.server import WorkerServer

    control_plane = ControlPlaneServer(
        ControlPlaneConfig(
            listen="127.0.0.1:0",
            data_dir=root / "control-plane",
            adapter_roots=(adapter_root,),
            admin_token=ADMIN_TOKEN,
            worker_token=WORKER_TOKEN,
            rollout_timeout_s=30.0,
            heartbeat_interval_s=1,
            heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
        )
    )
    cp_target = f"127.0.0.1:{await control_plane.start()}"
    engine = EngineConfig(
        model=model_path,
        served_model_name=MODEL,
        device="cpu",
        dtype="float32",
        max_model_len=256,
        cpu_kv_cache_gb=0.05,
        max_num_seqs=8,
        enable_lora=True,
        max_loras=2,
        max_lora_rank=16,
    )
    worker = WorkerServer(
        WorkerServiceConfig(
            listen="127.0.0.1:0",
            control_plane=cp_target,
            worker_id="fuzz-worker",
            worker_token=WORKER_TOKEN,
            heartbeat_interval_s=1.0,
            shutdown_grace_s=1.0,
            max_queue_len=32,
            engine=engine,
        )
    )
    await worker.start()
    gateway = BackgroundGateway(
        GatewayConfig(
            host="127.0.0.1",
            port=0,
            control_plane=cp_target,
            allow_runtime_lora_updating=True,
            refresh_interval_s=0.5,
            rpc_timeout_s=30.0,
        )
    )
    await gateway.start()
    return control_plane, worker, gateway


def _register_adapter(gateway_url: str, path: str) -> None:
    """Register the adapter the way an operator does at runtime: the gateway's load route."""
    request = urllib.request.Request(
        f"{gateway_url}/v1/load_lora_adapter",
        data=json.dumps({"lora_name": ADAPTER, "lora_path": path}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200, response.read()


def _wait_for_models(gateway_url: str, names: set[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{gateway_url}/v1/models", timeout=10) as response:
                seen = {card["id"] for card in json.loads(response.read())["data"]}
        except OSError:
            seen = set()
        if names <= seen:
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway never listed {sorted(names)}; it lists {sorted(seen)}")


def start_fleet(root: Path, tokenizer_src: str) -> tuple[FuzzFleet, Callable[[], None]]:
    """Write the tiny model and an adapter under `root`, start the fleet, register the adapter; returns
    the fleet and a function that stops it."""
    model_path = _write_tiny_model(root / "model", tokenizer_src)
    adapter_root = root / "adapters"
    adapter_path = write_random_adapter(Path(model_path), adapter_root / ADAPTER, seed=7)
    loop = LoopThread()
    control_plane, worker, gateway = loop.run(_start(model_path, root, adapter_root))

    def stop() -> None:
        loop.run(gateway.stop(), 30)
        loop.run(worker.stop(), 30)
        loop.run(control_plane.stop(), 30)
        loop.close()

    fleet = FuzzFleet(
        gateway_url=gateway.url,
        worker_target=f"127.0.0.1:{worker.port}",
        control_plane_target=f"127.0.0.1:{control_plane.port}",
        adapter_path=adapter_path,
        adapter_root=str(adapter_root),
    )
    try:
        _register_adapter(fleet.gateway_url, adapter_path)
        _wait_for_models(fleet.gateway_url, {MODEL, ADAPTER})
    except BaseException:
        stop()
        raise
    return fleet, stop
