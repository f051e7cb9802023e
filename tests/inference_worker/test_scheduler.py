"""Scheduling policy: budgets, chunked prefill, preemption, LoRA-aware admission and fairness."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from loraplane.inference_worker.block_manager import BlockManager
from loraplane.inference_worker.sampling_params import SamplingParams
from loraplane.inference_worker.scheduler import Scheduler, SchedulerConfig, prefill_context_cost
from loraplane.inference_worker.sequence import Sequence, SequenceStatus

BS = 4


def make(num_blocks=64, ready=lambda v: True, **kwargs):
    return Scheduler(SchedulerConfig(**kwargs), BlockManager(num_blocks, BS), ready)


def seq(n=6, version=None):
    return Sequence(list(range(1, n + 1)), SamplingParams(), lora_version=version, block_size=BS)


def run_step(sched, token=5):
    """Apply a scheduled batch as the engine does (all sampled sequences get `token`)."""
    batch = sched.schedule()
    for s, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
        s.num_computed_tokens += n
        if s.num_computed_tokens == len(s):
            s.append_token(token)
        sched.block_manager.cache_blocks(s)
    return batch


def test_prefill_then_decode():
    sched = make()
    a, b = seq(6), seq(3)
    sched.add(a)
    sched.add(b)
    batch = run_step(sched)
    assert batch.num_new_tokens == [6, 3] and not batch.is_decode
    batch = run_step(sched)
    assert batch.num_new_tokens == [1, 1] and batch.is_decode


def test_chunked_prefill_under_token_budget():
    sched = make(max_num_batched_tokens=4)
    a = seq(10)
    sched.add(a)
    assert run_step(sched).num_new_tokens == [4]
    assert run_step(sched).num_new_tokens == [4]
    batch = run_step(sched)
    assert batch.num_new_tokens == [2] and len(a) == 11


def test_decodes_go_first_and_prefills_fill_the_budget():
    sched = make(max_num_batched_tokens=5)
    a = seq(2)
    sched.add(a)
    run_step(sched)
    b = seq(10)
    sched.add(b)
    batch = run_step(sched)
    assert batch.seqs == [a, b] and batch.num_new_tokens == [1, 4]


def test_max_num_seqs_caps_running():
    sched = make(max_num_seqs=2)
    for _ in range(3):
        sched.add(seq())
    run_step(sched)
    assert sched.num_running == 2 and sched.num_waiting == 1


def test_preemption_by_recompute_when_blocks_run_out():
    sched = make(num_blocks=4)
    a, b = seq(8), seq(8)  # two blocks each: the cache is full after prefill
    sched.add(a)
    sched.add(b)
    run_step(sched)
    batch = run_step(sched)  # a needs a third block: b (newest) is preempted
    assert batch.preempted == [b] and batch.seqs == [a]
    assert b.status == SequenceStatus.WAITING and b.num_computed_tokens == 0 and b.block_table == []
    assert list(sched.waiting) == [b] and sched.num_preemptions == 1
    assert len(b) == 9  # its sampled token is kept and recomputed


def test_finish_frees_blocks():
    sched = make(num_blocks=8)
    a = seq(8)
    sched.add(a)
    run_step(sched)
    sched.finish(a)
    assert sched.block_manager.num_free_blocks == 8 and not sched.has_work()


def test_kv_shortage_blocks_later_requests_in_order():
    sched = make(num_blocks=3)
    big, small = seq(12), seq(2)
    sched.add(seq(4))
    sched.add(big)
    sched.add(small)
    batch = run_step(sched)
    assert len(batch.seqs) == 1 and list(sched.waiting) == [big, small]


def test_lora_slots_limit_distinct_adapters_and_base_mixes_in():
    sched = make(max_loras=2)
    seqs = [seq(version="a"), seq(version="b"), seq(version="c"), seq(), seq(version="a")]
    for s in seqs:
        sched.add(s)
    run_step(sched)
    running = {s.lora_version for s in sched.running}
    assert running == {"a", "b", None}
    assert list(sched.waiting) == [seqs[2]]
    assert seqs[2].lora_blocked_steps == 1


def test_loading_adapter_is_skipped_without_blocking_others():
    loaded = {"b"}
    sched = make(max_loras=1, ready=lambda v: v in loaded)
    first, second = seq(version="a"), seq(version="b")
    sched.add(first)
    sched.add(second)
    run_step(sched)
    assert sched.running == [second] and list(sched.waiting) == [first]
    assert first.lora_blocked_steps == 0  # waiting for the loader does not count as slot starvation


def test_starving_adapter_gets_a_slot_when_busy_ones_drain():
    sched = make(max_loras=1, lora_starvation_steps=2)
    busy = seq(version="a")
    sched.add(busy)
    run_step(sched)
    starving = seq(version="b")
    sched.add(starving)
    for _ in range(3):
        run_step(sched)
    assert starving.lora_blocked_steps == 3
    late_a, base = seq(version="a"), seq()
    sched.add(late_a)
    sched.add(base)
    run_step(sched)
    assert late_a in sched.waiting  # adapter "a" must drain first
    assert base in sched.running  # base requests still mix in
    sched.finish(busy)
    run_step(sched)
    assert starving in sched.running and late_a in sched.waiting


def test_a_long_prefill_leaves_budget_to_a_short_request_behind_it():
    """D13: with the per-step prefill cap, a short request starts while a long prompt still prefills;
    without it, the long prompt takes the whole budget until its prefill ends."""
    for cap, short_starts_at_step in ((8, 2), (0, 5)):
        sched = make(num_blocks=128, max_num_batched_tokens=16, long_prefill_token_threshold=cap)
        long, short = seq(72), seq(3)
        sched.add(long)
        run_step(sched)
        sched.add(short)
        steps = 1
        while short.num_computed_tokens == 0:
            batch = run_step(sched)
            steps += 1
            assert all(n <= (cap or 16) for n in batch.num_new_tokens)
        assert steps == short_starts_at_step, cap


def test_with_a_context_cost_the_prefill_cap_is_a_work_budget():
    """D13: each chunk is the most tokens whose estimated work (linear + attention over the context)
    fits the cap, so chunks shrink as the prompt's computed context grows; no cost: tokens, as before."""
    config = SchedulerConfig(long_prefill_token_threshold=128, prefill_context_cost=1e-3)

    def cost(n: int, context: int) -> float:
        return n * (1 + 1e-3 * (context + (n + 1) / 2))

    for context in (0, 100, 1000, 5000, 100_000, 10**9):
        n = config.prefill_chunk_limit(context)
        assert n >= 1 and (n == 1 or cost(n, context) <= 128) and cost(n + 1, context) > 128, context
    assert SchedulerConfig(long_prefill_token_threshold=128).prefill_chunk_limit(5000) == 128
    assert SchedulerConfig(prefill_context_cost=1e-3).prefill_chunk_limit(5000) == 0  # no cap at all
    sched = make(
        num_blocks=512, max_num_batched_tokens=64, long_prefill_token_threshold=32, prefill_context_cost=0.01
    )
    long = seq(1000)
    sched.add(long)
    chunks = [run_step(sched).num_new_tokens[0] for _ in range(8)]
    assert chunks == sorted(chunks, reverse=True) and chunks[0] > 2 * chunks[-1], chunks


def test_prefill_context_cost_is_for_cpu_and_validated():

    smol = SimpleNamespace(
        hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536
    )
    assert 5e-4 < prefill_context_cost(smol, "cpu") < 2e-3 and prefill_context_cost(smol, "cuda") == 0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="prefill_context_cost"):
            SchedulerConfig(prefill_context_cost=bad)
