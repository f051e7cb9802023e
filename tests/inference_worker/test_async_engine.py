"""AsyncLLMEngine: streaming deltas, aborts that free KV at once, stats, errors; the hand-over: one call per
step into the event loop, text built on the consumer's side (stop strings, logprob text) exactly as offline,
and coalesced outputs for a consumer that falls behind."""

from __future__ import annotations

import asyncio

import pytest

from loraplane.inference_worker import AsyncLLMEngine, SamplingParams
from loraplane.inference_worker.engine_client import EngineClient
from loraplane.inference_worker.errors import InvalidRequestError

PROMPT = "Once upon a time"


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


def offline(llm, params, prompt=PROMPT):
    return llm.generate([prompt], params)[0]


@pytest.mark.parametrize("include_stop", [False, True])
async def test_stop_strings_end_the_stream_as_offline(engine, tiny_llama_llm, include_stop):
    greedy = {"temperature": 0, "ignore_eos": True}
    base = offline(tiny_llama_llm, SamplingParams(max_tokens=12, **greedy)).outputs[0]
    stop_text = next(base.text[i : i + 3] for i in range(2, len(base.text)) if base.text[i : i + 3].strip())
    params = SamplingParams(stop=[stop_text], include_stop_str_in_output=include_stop, n=2, **greedy)
    want = offline(tiny_llama_llm, params)
    outs = await collect(engine, PROMPT, params, f"stop-{include_stop}")
    assert outs[-1].finished and sum(o.finished for o in outs) == 1
    for got, expected in zip(outs[-1].outputs, want.outputs, strict=True):
        assert (got.text, got.token_ids) == (expected.text, expected.token_ids)
        assert (got.finish_reason, got.stop_reason) == ("stop", stop_text)
        index = got.index
        assert "".join(o.outputs[index].text_delta for o in outs) == got.text
        assert [t for o in outs for t in o.outputs[index].token_ids_delta] == got.token_ids
    for _ in range(100):  # the engine ran ahead of the stop string; the consumer's abort frees it
        if engine.stats().num_running == 0:
            break
        await asyncio.sleep(0.02)
    assert engine.stats().num_running == 0


async def test_logprob_text_and_stop_tokens_as_offline(engine, tiny_llama_llm):
    base = offline(tiny_llama_llm, SamplingParams(temperature=0, max_tokens=8)).outputs[0]
    params = SamplingParams(temperature=0, max_tokens=8, logprobs=3, stop_token_ids=[base.token_ids[5]])
    want = offline(tiny_llama_llm, params).outputs[0]
    got = (await collect(engine, PROMPT, params, "logprobs-1"))[-1].outputs[0]
    assert (got.token_ids, got.text, got.finish_reason, got.stop_reason) == (
        want.token_ids,
        want.text,
        want.finish_reason,
        want.stop_reason,
    )
    assert got.logprobs == want.logprobs and got.cumulative_logprob == pytest.approx(want.cumulative_logprob)
    assert all(lp.decoded_token is not None for entry in got.logprobs for lp in entry.values())


async def test_a_consumer_that_falls_behind_gets_every_token_in_fewer_outputs(engine, tiny_llama_llm):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    want = offline(tiny_llama_llm, params).outputs[0]
    outs = []
    async for out in engine.generate(PROMPT, params, "slow-1"):
        outs.append(out)
        if len(outs) == 1:
            await asyncio.sleep(0.5)  # several steps run meanwhile
    deltas = [o.outputs[0].token_ids_delta for o in outs]
    assert [t for d in deltas for t in d] == want.token_ids and outs[-1].outputs[0].text == want.text
    assert len(outs) < len(want.token_ids) and max(len(d) for d in deltas) > 1


async def test_one_hand_over_per_step_for_the_whole_batch(engine):
    loop = asyncio.get_running_loop()
    steps, hand_overs = [], []
    step_updates = engine.engine.step_updates
    call_soon_threadsafe = loop.call_soon_threadsafe

    def counting_step():
        updates = step_updates()
        steps.append(len(updates))
        return updates

    def counting_call(callback, *args, **kwargs):
        if getattr(callback, "__name__", "") == "_dispatch":
            hand_overs.append(len(args[0]))
        return call_soon_threadsafe(callback, *args, **kwargs)

    engine.engine.step_updates = counting_step
    loop.call_soon_threadsafe = counting_call
    try:
        params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
        await asyncio.gather(*(collect(engine, f"prompt {i}", params, f"batch-{i}") for i in range(6)))
    finally:
        del engine.engine.step_updates
        del loop.call_soon_threadsafe
    assert sum(hand_overs) >= 60 and max(hand_overs) > 1  # six requests' tokens ride in shared calls
    assert len(hand_overs) <= len(steps)
