"""Async scheduling (a decode step queued before the previous step's tokens are read) changes nothing:
the same outputs as the synchronous engine, every KV block returned, aborts and preemption handled."""

from __future__ import annotations

import pytest

from loraplane.inference_worker import SamplingParams
from tests.inference_worker.conftest import PROMPTS, make_llm


@pytest.fixture(scope="module")
def engines(tiny_llama_path):
    """The same tiny model twice: synchronous steps, and async scheduling forced on (CPU)."""
    return {
        flag: make_llm(tiny_llama_path, async_scheduling=flag, num_kv_blocks=64, max_num_seqs=8)
        for flag in (False, True)
    }


def _count_lookaheads(llm) -> list[int]:
    runner = llm.engine.runner
    launch = runner.launch
    counts = [0]

    def counting(batch, prev=None):
        counts[0] += batch.lookahead
        return launch(batch, prev)

    runner.launch = counting
    return counts


def _summary(outputs) -> list:
    return [
        [(c.token_ids, c.finish_reason, c.stop_reason, c.text, c.cumulative_logprob) for c in o.outputs]
        for o in outputs
    ]


def _assert_all_blocks_free(llm) -> None:
    engine = llm.engine
    assert not engine.scheduler.running and not engine.requests and engine._in_flight is None
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def _generate(llm, prompts, params):
    counts = _count_lookaheads(llm)
    try:
        return llm.generate(prompts, params), counts[0]
    finally:
        del llm.engine.runner.launch


def test_mixed_requests_match_the_synchronous_engine(engines):
    sync_out, _ = _generate(engines[False], PROMPTS[:6], SamplingParams(temperature=0, max_tokens=12))
    # A token the sync run produced mid-generation becomes a stop token: requests now stop while their
    # next step is already queued.
    stop_token, late_stop = sync_out[0].outputs[0].token_ids[4], sync_out[3].outputs[0].token_ids[7]
    params = [
        SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[stop_token]),
        SamplingParams(temperature=0, max_tokens=5, logprobs=2),
        SamplingParams(temperature=0.8, top_p=0.9, seed=7, max_tokens=9, n=2),
        SamplingParams(temperature=0, max_tokens=12, min_tokens=6, stop_token_ids=[late_stop]),
        SamplingParams(temperature=0, max_tokens=3),
        SamplingParams(temperature=1.0, top_k=20, seed=3, max_tokens=14, logprobs=0),
    ]
    expected, _ = _generate(engines[False], PROMPTS[:6], params)
    got, lookaheads = _generate(engines[True], PROMPTS[:6], params)
    assert _summary(got) == _summary(expected)
    assert lookaheads > 0
    assert got[0].outputs[0].stop_reason == stop_token
    _assert_all_blocks_free(engines[True])


def test_penalties_disable_lookahead_and_still_match(engines):
    params = SamplingParams(temperature=0, max_tokens=8, repetition_penalty=1.3)
    expected, _ = _generate(engines[False], PROMPTS[6:9], params)
    got, lookaheads = _generate(engines[True], PROMPTS[6:9], params)
    assert _summary(got) == _summary(expected)
    assert lookaheads == 0
    _assert_all_blocks_free(engines[True])


def test_preemption_under_block_pressure_matches(tiny_llama_path, engines):
    small = {
        flag: make_llm(tiny_llama_path, async_scheduling=flag, num_kv_blocks=12) for flag in (False, True)
    }
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    expected, _ = _generate(small[False], PROMPTS[9:15], params)
    got, _ = _generate(small[True], PROMPTS[9:15], params)
    assert _summary(got) == _summary(expected)
    assert small[True].engine.scheduler.num_preemptions > 0
    _assert_all_blocks_free(small[True])


def test_abort_while_a_step_is_queued(engines):
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    expected, _ = _generate(engines[False], PROMPTS[15:18], params)
    engine = engines[True].engine
    for i, prompt in enumerate(PROMPTS[15:18]):
        engine.add_request(f"abort-{i}", prompt, params)
    outputs = {}
    while engine.has_unfinished_requests():
        for out in engine.step(finished_only=True):
            outputs[out.request_id] = out
        if engine._in_flight is not None and "abort-1" in engine.requests:
            assert engine.abort("abort-1")
    assert set(outputs) == {"abort-0", "abort-2"}
    assert _summary([outputs["abort-0"], outputs["abort-2"]]) == _summary([expected[0], expected[2]])
    _assert_all_blocks_free(engines[True])


def test_a_request_arriving_mid_decode_is_admitted(engines):
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    results = {}
    for flag, llm in engines.items():
        engine, outputs = llm.engine, {}
        engine.add_request("first", PROMPTS[18], params)
        steps = 0
        while engine.has_unfinished_requests():
            steps += 1
            if steps == 4:
                engine.add_request("second", PROMPTS[19], params)
            for out in engine.step(finished_only=True):
                outputs[out.request_id] = out
        results[flag] = _summary([outputs["first"], outputs["second"]])
        _assert_all_blocks_free(llm)
    assert results[True] == results[False]
