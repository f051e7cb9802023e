"""ModelRunner step inputs: what the prefill and decode tensors hold, and their alignment."""

from __future__ import annotations

import torch

from loraplane.inference_worker import SamplingParams


def _aligned(t: torch.Tensor) -> bool:
    return t.data_ptr() % 16 == 0


def test_prepare_builds_prefill_then_decode_inputs(tiny_llama_llm):
    engine = tiny_llama_llm.engine
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    engine.add_request("prep-a", [5, 6, 7], params)
    engine.add_request("prep-b", list(range(10, 31)), params)
    try:
        batch = engine.scheduler.schedule()
        ids, positions, ctx, rows, sampled = engine.runner._prepare(batch, batch.is_decode)
        assert ids.tolist() == [5, 6, 7, *range(10, 31)] and positions.tolist() == [0, 1, 2, *range(21)]
        assert ctx.is_prefill and ctx.cu_seqlens_q.tolist() == [0, 3, 24] and ctx.seq_lens.tolist() == [3, 21]
        assert rows.tolist() == [2, 23] and sampled == batch.seqs
        assert ctx.block_tables.shape == (2, 2) and ctx.block_tables[0, 1] == 0  # padded
        assert all(_aligned(t) for t in (ctx.slot_mapping, ctx.block_tables, ctx.cu_seqlens_q, ctx.seq_lens))
        engine.step()  # the prefill above was only inspected; run it for real
        batch = engine.scheduler.schedule()
        assert batch.is_decode
        ids, positions, ctx, rows, sampled = engine.runner._prepare(batch, True)
        seqs = batch.seqs
        assert ids.tolist() == [s.token_ids[-1] for s in seqs] and positions.tolist() == [3, 21]
        assert ctx.context_lens.tolist() == [4, 22] and rows is None and not ctx.is_prefill
        table = seqs[1].block_table
        assert ctx.slot_mapping.tolist()[1] == table[21 // 16] * 16 + 21 % 16
        assert all(_aligned(t) for t in (ctx.slot_mapping, ctx.block_tables, ctx.context_lens))
    finally:
        engine.abort("prep-a")
        engine.abort("prep-b")
