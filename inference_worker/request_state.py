"""Per-request bookkeeping in the engine: its sequences, detokenizers and output snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loraplane.inference_worker.detokenizer import IncrementalDetokenizer
from loraplane.inference_worker.errors import RequestFailedError
from loraplane.inference_worker.outputs import (
    CompletionOutput,
    CompletionUpdate,
    Logprob,
    RequestOutput,
    RequestUpdate,
)
from loraplane.inference_worker.sampling_params import SamplingParams
from loraplane.inference_worker.sequence import Sequence, SequenceStatus

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from loraplane.inference_worker.lora.request import LoRARequest
    from loraplane.inference_worker.output_processor import OutputProcessor
    from loraplane.inference_worker.prompt_logprobs import PromptLogprobs


@dataclass
class RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence]
    detokenizers: list[IncrementalDetokenizer | None]
    lora_request: LoRARequest | None = None
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None  # by prompt position (entry 0: None)
    num_sent: list[int] = field(default_factory=list)  # per completion: output tokens in updates so far

    @classmethod
    def create(
        cls,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int],
        params: SamplingParams,
        lora_request: LoRARequest | None,
        lora_version: str | None,
        block_size: int,
        tokenizer: PreTrainedTokenizerBase | None,
    ) -> RequestState:
        """A validated request's state: `params.n` sequences, each with a detokenizer when the request
        wants text and the engine has a tokenizer."""
        state = cls(request_id, prompt, prompt_token_ids, params, [], [], lora_request)
        state.num_sent = [0] * params.n
        if params.prompt_logprobs is not None:
            state.prompt_logprobs = [None] * len(prompt_token_ids)
        for index in range(params.n):
            seq = Sequence(
                prompt_token_ids,
                params,
                request_id=request_id,
                index=index,
                lora_version=lora_version,
                block_size=block_size,
            )
            state.seqs.append(seq)
            detok = None
            if params.detokenize and tokenizer is not None:
                detok = IncrementalDetokenizer(
                    tokenizer,
                    prompt_token_ids,
                    params.skip_special_tokens,
                    params.stop_strings,
                    params.include_stop_str_in_output,
                )
            state.detokenizers.append(detok)
        return state

    def store_prompt_logprobs(self, scored: PromptLogprobs, processor: OutputProcessor) -> None:
        """Record one step's prompt logprobs (a chunk of prompt positions) of one of this request's rows."""
        for offset, top in enumerate(scored.entries):
            self.prompt_logprobs[scored.first_token + offset] = processor.logprobs(top)

    def finish_aborted(self) -> list[Sequence]:
        """Finish every sequence (reason "abort"), e.g. after a failure; returns them for release."""
        for seq in self.seqs:
            seq.finish_reason, seq.status = "abort", SequenceStatus.FINISHED
        return self.seqs

    @property
    def finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)

    def snapshot(self) -> RequestOutput:
        outputs = []
        for seq, detok in zip(self.seqs, self.detokenizers, strict=False):
            finished = seq.is_finished
            text = detok.visible_text(finished) if detok is not None else ""
            want = self.params.logprobs is not None
            outputs.append(
                CompletionOutput(
                    index=seq.index,
                    text=text,
                    token_ids=seq.output_token_ids,
                    cumulative_logprob=seq.cumulative_logprob if want else None,
                    logprobs=list(seq.output_logprobs) if want else None,
                    finish_reason=seq.finish_reason,
                    stop_reason=seq.stop_reason,
                )
            )
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=outputs,
            finished=self.finished,
            num_cached_tokens=max((s.num_cached_tokens for s in self.seqs), default=0),
            lora_request=self.lora_request,
            prompt_logprobs=None if self.prompt_logprobs is None else list(self.prompt_logprobs),
        )

    def update(self) -> RequestUpdate:
        """What is new since the previous update (see `RequestUpdate`): O(new tokens), no copies of what
        was already handed over, no text."""
        want = self.params.logprobs is not None
        first_update = not any(self.num_sent)
        outputs = []
        for seq in self.seqs:
            start, end = self.num_sent[seq.index], seq.num_output_tokens
            self.num_sent[seq.index] = end
            base = seq.num_prompt_tokens
            outputs.append(
                CompletionUpdate(
                    seq.index,
                    seq.token_ids[base + start : base + end],
                    seq.output_logprobs[start:end] if want else None,
                    seq.cumulative_logprob if want else None,
                    seq.finish_reason,
                    seq.stop_reason,
                )
            )
        return RequestUpdate(
            self.request_id,
            outputs,
            self.finished,
            max((s.num_cached_tokens for s in self.seqs), default=0),
            self.prompt_logprobs if first_update else None,
        )


@dataclass(frozen=True)
class RequestFailure:
    """A request that failed while its outputs were processed (see `LLMEngine.take_failures`)."""

    request_id: str
    error: RequestFailedError

    @classmethod
    def of(cls, request_id: str) -> RequestFailure:
        """The failure as its caller sees it: the cause stays in the worker's log, not in the message."""
        message = f"request {request_id!r} failed while its output was processed; see the worker's log"
        return cls(request_id, RequestFailedError(message))
