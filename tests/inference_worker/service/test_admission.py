"""Admission counts sequences, not requests: a call's `n` counts toward the worker's bound, and `n`
above max_num_seqs is refused as invalid (one request cannot queue thousands of sequences)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from worker_process import collect, generate_request

from loraplane.inference_worker.outputs import CompletionOutput, RequestOutput
from loraplane.inference_worker.service.servicer import InferenceServicer
from tests.inference_worker.service.fake_engine import FakeEngine, serving

MAX_SEQS, MAX_N = 4, 2


@pytest.fixture
async def served():
    engine = FakeEngine()
    engine.gate = asyncio.Event()
    done = CompletionOutput(0, "x", [3], finish_reason="stop", text_delta="x", token_ids_delta=[3])
    engine.script = [RequestOutput("r", "p", [1], [done], True)]
    servicer = InferenceServicer(max_in_flight=MAX_SEQS, max_n=MAX_N)
    async with serving(engine, servicer) as stub:
        yield engine, servicer, stub


async def error_of(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(call)
    return info.value


async def test_n_above_max_num_seqs_is_invalid_argument(served):
    _, servicer, stub = served
    error = await error_of(stub.Generate(generate_request("p", n=MAX_N + 1)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "n: must be at most 2" in error.details() and "max_num_seqs" in error.details()
    assert servicer.num_in_flight == 0


async def test_the_bound_counts_each_requests_sequences(served):
    engine, servicer, stub = served
    held = [stub.Generate(generate_request("p", n=MAX_N)) for _ in range(2)]  # 4 sequences: full
    while servicer.num_in_flight < 2:
        await asyncio.sleep(0.01)
    error = await error_of(stub.Generate(generate_request("p", n=1)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4 of 4 sequences" in error.details()
    engine.gate.set()
    for call in held:
        assert (await collect(call))["texts"] == ["x"]
    assert (await collect(stub.Generate(generate_request("p", n=MAX_N))))["texts"] == ["x"]
