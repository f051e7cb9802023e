"""One request's stream on the consumer's side: engine updates in, coalesced RequestOutputs with text out.

The engine thread hands over `RequestUpdate`s (token ids, finish info, raw logprobs) once per step, for
all requests in one call; the event loop `push`es each into its request's stream, which only appends to
a list and wakes the consumer. The consumer's `next()` takes everything that arrived since its previous
call, so a consumer that falls behind (a slow client, a busy loop) gets one output carrying all the
tokens produced meanwhile, never fewer tokens. Detokenization, stop strings and logprob text happen
here, on the consumer's side, once per output, never in the engine's step loop (vLLM V1 splits its
engine core and output processor the same way).

Stop strings: a completion whose text reaches one finishes here ("stop", the string as `stop_reason`);
the tokens after the one that completed it are dropped, and once every completion has finished the
owner aborts the engine request, which may have run a step or two further (`engine_finished` is False).
EOS and stop tokens finish in the engine and never reach the detokenizer, as offline.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from loraplane.inference_worker.detokenizer import IncrementalDetokenizer
from loraplane.inference_worker.outputs import CompletionOutput, CompletionUpdate, Logprob, RequestOutput

if TYPE_CHECKING:
    from loraplane.inference_worker.engine_client import TokenizerLike
    from loraplane.inference_worker.request_state import RequestState

ABORTED = object()
"""Pushed by an abort: the stream ends without another output."""


class _Completion:
    """The consumer's running copy of one completion: all tokens, text and logprobs so far."""

    def __init__(self, index: int, detok: IncrementalDetokenizer | None, want_logprobs: bool) -> None:
        self.index = index
        self.detok = detok
        self.token_ids: list[int] = []
        self.logprobs: list[dict[int, Logprob]] | None = [] if want_logprobs else None
        self.cumulative_logprob: float | None = None
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.sent_tokens = 0
        self.sent_text = 0

    def apply(self, update: CompletionUpdate, tokenizer: TokenizerLike | None) -> None:
        """Take one engine update: each new token through the detokenizer (stop strings), in order."""
        if self.finish_reason is not None:
            return  # finished here on a stop string; the engine ran on until it heard of it
        engine_stop = update.finish_reason == "stop"  # EOS or a stop token: the last token has no text
        last = len(update.token_ids) - 1
        for i, token in enumerate(update.token_ids):
            self.token_ids.append(token)
            if self.logprobs is not None and update.logprobs is not None:
                self.logprobs.append(_with_text(update.logprobs[i], tokenizer))
            stop = None
            if self.detok is not None and not (engine_stop and i == last):
                stop = self.detok.add_token(token)
            if stop is not None:
                self.finish_reason, self.stop_reason = "stop", stop
                break
        if update.cumulative_logprob is not None:
            self.cumulative_logprob = update.cumulative_logprob
        if self.finish_reason is None and update.finish_reason is not None:
            self.finish_reason, self.stop_reason = update.finish_reason, update.stop_reason

    def output(self) -> CompletionOutput:
        """This completion now, with the deltas since the previous output (text never splits a character)."""
        finished = self.finish_reason is not None
        text = self.detok.visible_text(finished) if self.detok is not None else ""
        token_delta = self.token_ids[self.sent_tokens :]
        text_delta = text[self.sent_text :]
        self.sent_tokens, self.sent_text = len(self.token_ids), len(text)
        return CompletionOutput(
            index=self.index,
            text=text,
            token_ids=list(self.token_ids),
            cumulative_logprob=self.cumulative_logprob,
            logprobs=None if self.logprobs is None else list(self.logprobs),
            finish_reason=self.finish_reason,
            stop_reason=self.stop_reason,
            text_delta=text_delta,
            token_ids_delta=token_delta,
        )


def _with_text(entry: dict[int, Logprob], tokenizer: TokenizerLike | None) -> dict[int, Logprob]:
    if tokenizer is None:
        return entry
    return {t: Logprob(lp.logprob, lp.rank, tokenizer.decode([t])) for t, lp in entry.items()}


class RequestStream:
    """One request's outputs on its consumer's event loop (see the module doc).

    `push` (an update, an exception, or ABORTED) runs on `loop`; `next()` returns the next coalesced
    RequestOutput, None once aborted, and raises a pushed exception.
    """

    def __init__(self, state: RequestState, tokenizer: TokenizerLike | None, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.request_id = state.request_id
        self._state = state
        params = state.params
        self._tokenizer = tokenizer  # logprob text (with or without `detokenize`, as offline)
        self._completions = [
            _Completion(i, self._detokenizer(state), params.logprobs is not None) for i in range(params.n)
        ]
        self._pending: list = []
        self._waiter: asyncio.Future | None = None
        self._prompt_logprobs = None
        self._num_cached_tokens = 0
        self.engine_finished = False

    def _detokenizer(self, state: RequestState) -> IncrementalDetokenizer | None:
        params = state.params
        if self._tokenizer is None or not params.detokenize:
            return None
        return IncrementalDetokenizer(
            self._tokenizer,
            state.prompt_token_ids,
            params.skip_special_tokens,
            params.stop_strings,
            params.include_stop_str_in_output,
        )

    def push(self, item: object) -> None:
        """Queue an update (or an exception, or ABORTED) and wake the consumer; on the stream's loop."""
        self._pending.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> RequestOutput | None:
        while not self._pending:
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items, self._pending = self._pending, []
        for item in items:
            if item is ABORTED:
                return None
            if isinstance(item, BaseException):
                raise item
        for update in items:
            self._apply(update)
        return self._output()

    def _apply(self, update) -> None:
        self.engine_finished = self.engine_finished or update.finished
        self._num_cached_tokens = update.num_cached_tokens
        if update.prompt_logprobs is not None:
            self._prompt_logprobs = list(update.prompt_logprobs)
        for completion_update in update.outputs:
            self._completions[completion_update.index].apply(completion_update, self._tokenizer)

    def _output(self) -> RequestOutput:
        state = self._state
        outputs = [c.output() for c in self._completions]
        return RequestOutput(
            request_id=self.request_id,
            prompt=state.prompt,
            prompt_token_ids=state.prompt_token_ids,
            outputs=outputs,
            finished=all(c.finished for c in outputs),
            num_cached_tokens=self._num_cached_tokens,
            lora_request=state.lora_request,
            prompt_logprobs=self._prompt_logprobs,
        )
