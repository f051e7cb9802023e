"""The worker's /metrics over a real loopback gRPC server and HTTP endpoint, with a scripted engine whose
first output comes after a controlled delay, so the time to first token is known."""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
import pytest

from loraplane.grpc_options import client_options
from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference.v1 import inference_pb2_grpc
from loraplane.inference_worker.outputs import CompletionOutput, EngineStats, RequestOutput
from loraplane.inference_worker.service import cli
from loraplane.inference_worker.service.interceptors import error_interceptor
from loraplane.inference_worker.service.metrics import WorkerMetrics
from loraplane.inference_worker.service.served_models import AdapterTarget, ServedModels
from loraplane.inference_worker.service.server import WorkerServer
from loraplane.inference_worker.service.servicer import InferenceServicer
from loraplane.metrics import OTHER_ADAPTERS, MetricsServer
from tests.inference_worker.service.fake_engine import FakeEngine
from tests.loraplane.prometheus_scrape import scrape, value

PREFILL_S = 0.4
ENGINE_SERIES = (
    "loraplane:num_requests_running",
    "loraplane:num_requests_waiting",
    "loraplane:kv_cache_usage_perc",
    "loraplane:prefix_cache_queries_total",
    "loraplane:prefix_cache_hits_total",
    "loraplane:num_preemptions_total",
    "loraplane:lora_requests_info",
    "loraplane:lora_adapters",
    "loraplane:adapter_load_seconds_count",
)
TOKEN_S = 0.02


class SlowEngine(FakeEngine):
    """Its first output comes PREFILL_S after the request, then one token every TOKEN_S."""

    def stats(self) -> EngineStats:
        versions = frozenset(info.version for info in self.adapters.values())
        return EngineStats(2, 1, 0.25, 48, 64, 30, 100, 1, versions, frozenset())

    fail_after_first = False  # set: the stream fails after its first output (an engine error mid-stream)

    async def generate(self, prompt, sampling_params, request_id, lora_request=None):
        await asyncio.sleep(PREFILL_S)
        for position in range(4):
            if position and self.fail_after_first:
                raise RuntimeError("engine failure in the middle of a stream")
            last = position == 3
            completion = CompletionOutput(0, "x" * (position + 1), list(range(position + 1)))
            completion.token_ids_delta = [position]
            completion.finish_reason = "length" if last else None
            yield RequestOutput(request_id, None, [1, 2, 3], [completion], finished=last)
            await asyncio.sleep(TOKEN_S)


@pytest.fixture
async def worker():
    engine = SlowEngine()
    await engine.start()
    metrics = WorkerMetrics(max_lora=2, max_adapter_labels=1)
    models = ServedModels(engine, engine.model_name, "/models/fake", enable_lora=True)
    models.load_timer = metrics.time_load
    for name in ("sql-lora", "chat-lora"):
        await models.load(AdapterTarget(name, f"/adapters/{name}"))
    metrics.attach(engine)
    servicer = InferenceServicer(max_in_flight=8)
    servicer.attach(engine, models)
    server = grpc.aio.server(interceptors=[error_interceptor(), metrics.interceptor()])
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    http = MetricsServer(metrics.registry, "127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options()) as channel:
            yield inference_pb2_grpc.InferenceStub(channel), http.address, engine
    finally:
        http.close()
        await server.stop(0)


async def generate(stub, model: str) -> float:
    """Run one Generate to the end; returns the time to its first token as the client measured it."""
    request = pb.GenerateRequest(model=model, text="hello", request_id="r")
    sent, first = time.perf_counter(), None
    async for response in stub.Generate(request):
        if response.WhichOneof("response") == "chunk" and response.chunk.token_ids and first is None:
            first = time.perf_counter()
    return first - sent


async def test_series_exist_and_move_and_ttft_matches_the_client(worker):
    stub, address, _ = worker
    before = await asyncio.to_thread(scrape, f"http://{address}/metrics")
    for name in ENGINE_SERIES:
        assert name in before, name
    assert value(before, "loraplane:num_requests_running") == 2
    assert value(before, "loraplane:kv_cache_usage_perc") == 0.25
    assert value(before, "loraplane:prefix_cache_hits_total") == 30
    assert value(before, "loraplane:lora_adapters", tier="host") == 2
    assert value(before, "loraplane:adapter_load_seconds_count", result="success") == 2
    (info,) = before["loraplane:lora_requests_info"]
    assert dict(info) == {
        "running_lora_adapters": "chat-lora,sql-lora",
        "waiting_lora_adapters": "",
        "max_lora": "2",
    }
    assert value(before, "loraplane:time_to_first_token_seconds_count") == 0

    client_ttft = await generate(stub, "sql-lora")
    await generate(stub, "chat-lora")  # past the bound of one adapter label: counted as "other"
    after = await asyncio.to_thread(scrape, f"http://{address}/metrics")

    base = {"model_name": "fake-base"}
    assert value(after, "loraplane:time_to_first_token_seconds_count", **base) == 2
    assert value(after, "loraplane:e2e_request_latency_seconds_count", **base) == 2
    assert value(after, "loraplane:time_per_output_token_seconds_count", **base) == 2
    assert value(after, "loraplane:inter_token_latency_seconds_count", **base) == 6
    assert value(after, "loraplane:generation_tokens_total", **base) == 8
    assert value(after, "loraplane:prompt_tokens_total", **base) == 6
    assert value(after, "loraplane:request_success_total", finished_reason="length") == 2
    assert value(after, "loraplane:adapter_requests_total", adapter="sql-lora", finished_reason="length") == 1
    assert value(after, "loraplane:adapter_requests_total", adapter=OTHER_ADAPTERS) == 1
    assert value(after, "loraplane:adapter_generation_tokens_total", adapter="sql-lora") == 4
    # The worker's TTFT of the first request agrees with the client's (one observation in the adapter's).
    server_ttft = value(after, "loraplane:adapter_time_to_first_token_seconds_sum", adapter="sql-lora")
    assert server_ttft >= PREFILL_S
    assert abs(server_ttft - client_ttft) <= 0.1 * client_ttft, (server_ttft, client_ttft)


async def test_a_refused_request_counts_nowhere_and_a_cancelled_one_as_abort(worker):
    stub, address, _ = worker
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await generate(stub, "no-such-adapter")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    call = stub.Generate(pb.GenerateRequest(model="sql-lora", text="hello"))
    async for response in call:
        if response.WhichOneof("response") == "chunk":
            call.cancel()
            break
    for _ in range(50):  # the server sees the cancellation shortly after
        samples = await asyncio.to_thread(scrape, f"http://{address}/metrics")
        if value(samples, "loraplane:request_success_total"):
            break
        await asyncio.sleep(0.05)
    assert value(samples, "loraplane:request_success_total") == 1
    assert value(samples, "loraplane:request_success_total", finished_reason="abort") == 1
    assert OTHER_ADAPTERS not in {dict(k).get("adapter") for k in samples["loraplane:adapter_requests_total"]}


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--metrics-port", "70000"], "--metrics-port must be in"),
        (["--max-adapter-labels", "-1"], "--max-adapter-labels must be >= 0"),
    ],
)
def test_metrics_flags_are_checked_and_reach_the_server(argv, error):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(ValueError, match=error):
        cli.config_from_args(parser.parse_args(argv))
    config = cli.config_from_args(parser.parse_args(["--metrics-port", "9464", "--max-adapter-labels", "3"]))
    assert (config.metrics_port, config.max_adapter_labels) == (9464, 3)
    assert WorkerServer(config).metrics.adapters.max_labels == 3


async def test_a_stream_that_fails_after_it_started_counts_as_error(worker):
    stub, address, engine = worker
    engine.fail_after_first = True
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await generate(stub, "sql-lora")
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    samples = await asyncio.to_thread(scrape, f"http://{address}/metrics")
    assert value(samples, "loraplane:request_success_total", finished_reason="error") == 1
    assert (
        value(samples, "loraplane:adapter_requests_total", adapter="sql-lora", finished_reason="error") == 1
    )
    assert value(samples, "loraplane:time_to_first_token_seconds_count") == 1
