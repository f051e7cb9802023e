"""`loraplane worker --metrics-port` as a real child process (demo model, CPU): /metrics scraped with
prometheus_client's parser before and after real completions, with and without an adapter."""

from __future__ import annotations

import asyncio
import json

import pytest
from worker_process import WorkerProcess, collect, engine_flags, generate_request, inference_stub

from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.supervisor import free_port
from tests.inference_worker.service.test_worker_metrics import ENGINE_SERIES
from tests.loraplane.prometheus_scrape import scrape, value

ADAPTER = "sql-lora"
BASE = "SmolLM2-135M-Instruct"
# A prompt long enough that prefill, and so the time to first token, is measurable on CPU.
PROMPT = "Write a SQL query that lists every customer with their orders. " * 12


@pytest.fixture(scope="module")
async def worker(demo_adapters, tmp_path_factory):
    metrics_port = free_port()
    static = json.dumps({"name": ADAPTER, "path": demo_adapters[ADAPTER]})
    args = [*engine_flags(), "--enable-lora", "--max-loras", "2", "--lora-modules", static]
    proc = WorkerProcess([*args, "--metrics-port", str(metrics_port)], tmp_path_factory.mktemp("w") / "log")
    await proc.start()
    line = await asyncio.wait_for(asyncio.to_thread(proc.proc.stdout.readline), 30)
    assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in line, line
    yield proc, f"127.0.0.1:{metrics_port}"
    await proc.stop()


@pytest.mark.slow
async def test_worker_metrics_move_after_real_completions(worker):
    proc, address = worker
    before = await asyncio.to_thread(scrape, f"http://{address}/metrics")
    for name in ENGINE_SERIES:
        assert name in before, name
    assert value(before, "loraplane:lora_adapters") == 1  # the static adapter, in one tier
    assert value(before, "loraplane:adapter_load_seconds_count", result="success") == 1
    (info,) = before["loraplane:lora_requests_info"]
    assert dict(info)["max_lora"] == "2"

    channel, stub = inference_stub(proc.target)
    async with channel:
        for model in (ADAPTER, BASE, BASE):  # the second base request hits the prefix cache
            call = stub.Generate(generate_request(PROMPT, model=model, max_tokens=4, temperature=0.0))
            result = await collect(call)
            assert result["finish"] == {0: pb.FINISH_REASON_LENGTH}
    after = await asyncio.to_thread(scrape, f"http://{address}/metrics")

    base = {"model_name": BASE}
    assert value(after, "loraplane:request_success_total", finished_reason="length", **base) == 3
    assert value(after, "loraplane:generation_tokens_total", **base) == 12
    prompt_tokens = value(after, "loraplane:prompt_tokens_total", **base)
    assert prompt_tokens > 3 * 100
    assert value(after, "loraplane:time_to_first_token_seconds_count", **base) == 3
    assert value(after, "loraplane:time_to_first_token_seconds_sum", **base) > 0
    assert value(after, "loraplane:e2e_request_latency_seconds_count", **base) == 3
    assert value(after, "loraplane:prefix_cache_queries_total") >= prompt_tokens
    assert value(after, "loraplane:prefix_cache_hits_total") > value(
        before, "loraplane:prefix_cache_hits_total"
    )
    assert value(after, "loraplane:adapter_requests_total", adapter=ADAPTER) == 1
    assert value(after, "loraplane:adapter_requests_total", adapter="__base__") == 2
    assert value(after, "loraplane:adapter_generation_tokens_total", adapter=ADAPTER) == 4
    assert value(after, "loraplane:num_requests_running") == 0
