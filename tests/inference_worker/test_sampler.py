"""Sampler semantics on hand-made logits (no model)."""

from __future__ import annotations

import torch

from loraplane.inference_worker.layers.sampler import Sampler, apply_penalties, greedy_tokens
from loraplane.inference_worker.sampling_params import SamplingParams
from loraplane.inference_worker.sequence import Sequence

V = 8


def seqs_for(*params, prompt=(1, 2, 3)):
    return [Sequence(list(prompt), p) for p in params]


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def logits_row(values):
    return torch.tensor([values], dtype=torch.float32)


def test_greedy_picks_argmax():
    logits = torch.randn(4, V)
    result = Sampler({7})(logits, seqs_for(*[SamplingParams(temperature=0)] * 4), gens(4))
    assert result.token_ids == logits.argmax(-1).tolist()


def test_top_k_1_and_tiny_top_p_are_greedy():
    logits = torch.randn(6, V)
    params = [SamplingParams(temperature=1.0, top_k=1)] * 3 + [
        SamplingParams(temperature=1.0, top_p=1e-6)
    ] * 3
    result = Sampler(set())(logits, seqs_for(*params), gens(6))
    assert result.token_ids == logits.argmax(-1).tolist()


def test_min_p_removes_unlikely_tokens():
    logits = logits_row([5.0, 4.9, -5, -5, -5, -5, -5, -5]).repeat(64, 1)
    params = [SamplingParams(temperature=1.0, min_p=0.5)] * 64
    tokens = Sampler(set())(logits, seqs_for(*params), gens(64)).token_ids
    assert set(tokens) <= {0, 1} and len(set(tokens)) == 2


def test_seeded_sampling_reproduces_and_differs_across_seeds():
    logits = torch.zeros(1, 1000)
    sampler = Sampler(set())
    p = SamplingParams(temperature=1.0)
    draw = lambda seed: [
        sampler(logits, seqs_for(p), [g]).token_ids[0] for g in [torch.Generator().manual_seed(seed)] * 5
    ]
    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_penalties():
    seq = seqs_for(SamplingParams(repetition_penalty=2.0, presence_penalty=1.0, frequency_penalty=0.5))[0]
    seq.append_token(4)
    seq.append_token(4)
    logits = logits_row([1.0, 2.0, -2.0, 3.0, 4.0, 1.0, 1.0, 1.0])
    out = apply_penalties(logits, [seq])[0]
    # prompt tokens 1,2,3: repetition only; output token 4 (twice): repetition, presence, frequency
    assert out.tolist() == [1.0, 1.0, -4.0, 1.5, 2.0 - 1.0 - 1.0, 1.0, 1.0, 1.0]


def test_min_tokens_suppresses_eos_and_stop_ids():
    logits = logits_row([0, 0, 10, 9, 0, 0, 0, 0])
    p = SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[3])
    assert Sampler({2})(logits, seqs_for(p), gens(1)).token_ids[0] not in (2, 3)


def test_logprobs_ranks_and_top_k():
    logits = logits_row([0.0, 3.0, 1.0, 2.0, -1.0, -2.0, -3.0, -4.0])
    result = Sampler(set())(logits, seqs_for(SamplingParams(temperature=0, logprobs=2)), gens(1))
    expected = torch.log_softmax(logits, -1)[0]
    top = result.top_logprobs[0]
    assert result.token_ids == [1]
    assert set(top) == {1, 3}
    assert top[3][1] == 2 and abs(top[3][0] - expected[3].item()) < 1e-6
    assert abs(result.logprobs[0] - expected[1].item()) < 1e-6


def test_seeded_row_ignores_rows_that_share_the_engine_generator():
    """Unseeded rows draw their noise in one call from the shared generator; a seeded row's token is
    still the one it gets alone."""
    logits = torch.zeros(5, 1000)
    p = SamplingParams(temperature=1.0)
    alone = Sampler(set())(logits[:1], seqs_for(p), [torch.Generator().manual_seed(9)]).token_ids[0]
    shared = torch.Generator().manual_seed(0)
    mixed = [shared, shared, torch.Generator().manual_seed(9), shared, shared]
    tokens = Sampler(set())(logits, seqs_for(*[p] * 5), mixed).token_ids
    assert tokens[2] == alone
    assert len(set(tokens[:2] + tokens[3:])) > 1


def test_greedy_tokens_take_the_first_of_tied_maxima_like_argmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 1000, generator=gen).round(decimals=1)  # many ties
    logits[2, [7, 300, 999]] = 50.0
    logits[4] = 0.0
    tokens = greedy_tokens(logits)
    assert torch.equal(tokens, logits.argmax(dim=-1))
    assert tokens[2] == 7 and tokens[4] == 0
