"""Prompt logprobs (vLLM's `prompt_logprobs`): scored from the hidden states of a prefill step.

The hidden state at prompt position p gives the distribution of token p + 1, so a chunk of positions
[start, end) scores prompt tokens start + 1 .. end (never past the prompt). Chunked prefill scores each
chunk as it runs; the engine writes the entries by position, so a recomputed prefill (preemption)
overwrites them with the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from loraplane.inference_worker.layers.sampler import gather_logprobs
from loraplane.inference_worker.sequence import Sequence


@dataclass(frozen=True)
class PromptLogprobSpan:
    """Rows [row, row + count) of a step's hidden states score prompt tokens first_token .. + count - 1."""

    seq: Sequence
    first_token: int
    row: int
    count: int


@dataclass(frozen=True)
class PromptLogprobs:
    """Per scored prompt token from `first_token` on: {token_id: (logprob, rank)} (the prompt token plus
    the top-k)."""

    seq: Sequence
    first_token: int
    entries: list[dict[int, tuple[float, int]]]


def prompt_logprob_spans(seqs: list[Sequence], num_new_tokens: list[int]) -> list[PromptLogprobSpan]:
    """The spans of a prefill step's rows (sequences in batch order) that score prompt tokens of requests
    asking for prompt logprobs; call before the step advances `num_computed_tokens`."""
    spans, row = [], 0
    for seq, num_new in zip(seqs, num_new_tokens, strict=True):
        start = seq.num_computed_tokens
        end = min(start + num_new, seq.num_prompt_tokens - 1)
        if seq.params.prompt_logprobs is not None and end > start:
            spans.append(PromptLogprobSpan(seq, start + 1, row, end - start))
        row += num_new
    return spans


def compute_prompt_logprobs(
    model: nn.Module, hidden: torch.Tensor, spans: list[PromptLogprobSpan]
) -> list[PromptLogprobs]:
    """Log-softmax (fp32) of the logits of every span row, gathered at the next prompt token.

    Shape: hidden [T, hidden_size] -> one PromptLogprobs per span.
    """
    rows = [r for s in spans for r in range(s.row, s.row + s.count)]
    index = torch.tensor(rows, dtype=torch.long, device=hidden.device)
    logprobs = torch.log_softmax(model.compute_logits(hidden[index]).float(), dim=-1)
    targets = [t for s in spans for t in s.seq.token_ids[s.first_token : s.first_token + s.count]]
    ks = [s.seq.params.prompt_logprobs for s in spans for _ in range(s.count)]
    tops = gather_logprobs(logprobs, torch.tensor(targets, device=hidden.device), ks).top_logprobs
    result, at = [], 0
    for s in spans:
        result.append(PromptLogprobs(s.seq, s.first_token, tops[at : at + s.count]))
        at += s.count
    return result
