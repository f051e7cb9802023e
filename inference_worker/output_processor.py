"""Applying a step's samples to their sequences: the new token, its logprobs, and the stop checks.

Stop order: end-of-sequence (unless `ignore_eos`), then a stop token id (reported as `stop_reason`),
then a stop string the detokenizer found, then length (`max_tokens`, or the context is full). EOS and
stop tokens never reach the detokenizer, so their text is never shown.

With `detokenize=False` (the async engine: text is its stream consumer's work, off the step loop) the
sampled tokens' logprobs carry no text; prompt logprobs, scored once per request, still do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loraplane.inference_worker.detokenizer import IncrementalDetokenizer
from loraplane.inference_worker.layers.sampler import SampleResult
from loraplane.inference_worker.outputs import Logprob
from loraplane.inference_worker.sequence import Sequence, SequenceStatus

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class OutputProcessor:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        eos_token_ids: set[int],
        max_model_len: int,
        detokenize: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.detokenize = detokenize
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len

    def append(
        self, seq: Sequence, detok: IncrementalDetokenizer | None, result: SampleResult, i: int
    ) -> None:
        """Append row `i` of `result` to `seq` (with its logprobs when asked) and finish `seq` if it stops."""
        token = result.token_ids[i]
        seq.append_token(token)
        if result.top_logprobs[i] is not None:  # this request asked for logprobs (others may not)
            seq.cumulative_logprob += result.logprobs[i]
            seq.output_logprobs.append(self.logprobs(result.top_logprobs[i], self.detokenize))
        params = seq.params
        is_eos = token in self.eos_token_ids and not params.ignore_eos
        stop_str = None
        if detok is not None and not is_eos and token not in params.stop_token_ids:
            stop_str = detok.add_token(token)
        if is_eos:
            _finish(seq, "stop", None)
        elif token in params.stop_token_ids:
            _finish(seq, "stop", token)
        elif stop_str is not None:
            _finish(seq, "stop", stop_str)
        elif (
            seq.num_output_tokens >= (params.max_tokens or self.max_model_len)
            or len(seq) >= self.max_model_len
        ):
            _finish(seq, "length", None)

    def logprobs(self, top: dict[int, tuple[float, int]], decode: bool = True) -> dict[int, Logprob]:
        """{token id: (logprob, rank)} -> {token id: Logprob}, with each token's text when `decode`."""
        if not decode:
            return {t: Logprob(lp, rank) for t, (lp, rank) in top.items()}
        return {t: Logprob(lp, rank, self._decode_one(t)) for t, (lp, rank) in top.items()}

    def _decode_one(self, token_id: int) -> str | None:
        return None if self.tokenizer is None else self.tokenizer.decode([token_id])


def _finish(seq: Sequence, reason: str, stop_reason: int | str | None) -> None:
    seq.finish_reason, seq.stop_reason = reason, stop_reason
    seq.status = SequenceStatus.FINISHED
