"""Checks of one request against the model that serves it, run before the request is admitted.

Semantics: everything the step loop later uses as an index or a size is bounded here, so a request
that passes cannot make a step fail for the whole batch: prompt token ids and `stop_token_ids` lie in
[0, vocab_size); the prompt leaves room for at least one generated token within `max_model_len`; `n`
is at most `max_num_seqs` (one request cannot queue more sequences than a step runs); `logprobs` and
`prompt_logprobs` ask for no more alternatives than the vocabulary has. A failed check raises
InvalidRequestError whose `param` names the field and whose message names the bound. Field types and
model-independent ranges are `SamplingParams`' own checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loraplane.inference_worker.errors import InvalidRequestError
from loraplane.inference_worker.sampling_params import SamplingParams


@dataclass(frozen=True)
class ModelLimits:
    """The bounds a request is checked against: the model's vocabulary and context, the engine's batch."""

    vocab_size: int
    max_model_len: int
    max_num_seqs: int

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_model_len", "max_num_seqs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def validated_prompt(
    prompt: str | list[int], params: SamplingParams, tokenizer: Any, limits: ModelLimits
) -> tuple[str | None, list[int]]:
    """A request's prompt text (None for token ids) and token ids (text is tokenized here), after every
    check of the request against the model."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise InvalidRequestError("skip_tokenizer_init is set: send token ids", param="prompt")
        text, token_ids = prompt, list(tokenizer.encode(prompt))
    else:
        text, token_ids = None, list(prompt)
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in token_ids):
            raise InvalidRequestError("prompt token ids must be integers", param="prompt")
    check_prompt(token_ids, limits)
    check_params(params, limits)
    return text, token_ids


def check_prompt(token_ids: list[int], limits: ModelLimits) -> None:
    """A prompt's token ids: not empty, shorter than the context, every id in the vocabulary."""
    if not token_ids:
        raise InvalidRequestError("prompt is empty", param="prompt")
    if len(token_ids) >= limits.max_model_len:
        raise InvalidRequestError(
            f"prompt has {len(token_ids)} tokens but max_model_len is {limits.max_model_len} "
            "(at least one token must fit after it); shorten the prompt",
            param="prompt",
        )
    _check_ids(token_ids, "prompt", "prompt token ids", limits.vocab_size)


def check_params(params: SamplingParams, limits: ModelLimits) -> None:
    """Sampling parameters whose valid range depends on the model or the engine (see module doc)."""
    check_n(params.n, limits.max_num_seqs)
    _check_ids(params.stop_token_ids, "stop_token_ids", "stop_token_ids", limits.vocab_size)
    for name in ("logprobs", "prompt_logprobs"):
        value = getattr(params, name)
        if value is not None and value > limits.vocab_size:
            raise InvalidRequestError(
                f"{name}: must be at most the vocabulary size {limits.vocab_size}, got {value}", param=name
            )


def check_n(n: int, max_num_seqs: int) -> None:
    """`n` (the request's sequences) fits in one step's batch, so no request can queue more than that."""
    if n > max_num_seqs:
        raise InvalidRequestError(
            f"n: must be at most {max_num_seqs} (the worker's max_num_seqs), got {n}", param="n"
        )


def _check_ids(token_ids: list[int], param: str, what: str, vocab_size: int) -> None:
    bad = next((t for t in token_ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(
            f"{what} must be in [0, {vocab_size}) (the model's vocabulary size is {vocab_size}), got {bad}",
            param=param,
        )
