"""AsyncLLMEngine: streaming deltas, aborts that free KV at once, stats, errors."""

from __future__ import annotations

import asyncio

import pytest

from loraplane.inference_worker import AsyncLLMEngine, SamplingParams
from loraplane.inference_worker.engine_client import EngineClient
from loraplane.inference_worker.errors import InvalidRequestError


@pytest.fixture(scope="module")
async def engine(tiny_llama_path):
    engine = AsyncLLMEngine.from_kwargs(
        model=tiny_llama_path, device="cpu", dtype="float32", cpu_kv_cache_gb=0.05
    )
    await engine.start()
    yield engine
    await engine.shutdown()


async def test_a_started_engine_is_an_engine_client(engine):
    assert isinstance(engine, EngineClient) and engine.is_running


async def collect(engine, prompt, params, request_id):
    outs = []
    async for out in engine.generate(prompt, params, request_id):
        outs.append(out)
    return outs


async def test_stream_deltas_add_up_to_the_final_output(engine, tiny_llama_llm):
    params = SamplingParams(temperature=0, max_tokens=12)
    outs = await collect(engine, "Once upon a time", params, "stream-1")
    final = outs[-1].outputs[0]
    assert outs[-1].finished and final.finish_reason == "length"
    assert "".join(o.outputs[0].text_delta for o in outs) == final.text
    assert [t for o in outs for t in o.outputs[0].token_ids_delta] == final.token_ids
    assert final.token_ids == tiny_llama_llm.generate(["Once upon a time"], params)[0].outputs[0].token_ids


async def test_concurrent_requests(engine):
    params = SamplingParams(temperature=0, max_tokens=6)
    results = await asyncio.gather(*(collect(engine, f"prompt {i}", params, f"conc-{i}") for i in range(5)))
    assert all(r[-1].finished and len(r[-1].outputs[0].token_ids) == 6 for r in results)


async def test_cancel_frees_blocks_at_once(engine):
    total = engine.stats().num_total_blocks
    stream = engine.generate(
        "Tell me a long story", SamplingParams(max_tokens=200, ignore_eos=True), "cancel-1"
    )
    async for out in stream:
        if len(out.outputs[0].token_ids) >= 3:
            break
    await stream.aclose()
    for _ in range(100):
        stats = engine.stats()
        if stats.num_running == 0 and stats.num_free_blocks == total:
            break
        await asyncio.sleep(0.02)
    assert stats.num_running == 0 and stats.num_free_blocks == total and stats.kv_usage == 0.0


async def test_abort_ends_the_stream(engine):
    outs = []

    async def consume():
        async for out in engine.generate(
            "abort me", SamplingParams(max_tokens=500, ignore_eos=True), "abort-1"
        ):
            outs.append(out)

    task = asyncio.create_task(consume())
    while not outs:
        await asyncio.sleep(0.01)
    await engine.abort("abort-1")
    await asyncio.wait_for(task, 10)
    assert not outs[-1].finished and len(outs[-1].outputs[0].token_ids) < 500


async def test_bad_request_raises_before_streaming(engine):
    with pytest.raises(InvalidRequestError):
        async for _ in engine.generate("x" * 5000, SamplingParams(), "bad-1"):
            pass
    outs = await collect(engine, "fine", SamplingParams(max_tokens=2), "after-bad")
    assert outs[-1].finished
    assert engine.model_name and engine.max_model_len == 256 and engine.tokenizer is not None
