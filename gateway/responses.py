"""Generate stream messages -> OpenAI JSON (completions and chat; whole responses and SSE chunks).

Semantics: choice indexes are `prompt_index * n + chunk.index`, as vLLM numbers them. Usage adds up
every prompt's usage. Chat streams send, per choice, a first delta with `role: "assistant"`, then
content deltas; the last delta of a choice carries its `finish_reason`. Completion echo prepends the
prompt (text as given; token ids as the worker's prompt token strings).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from loraplane.inference.v1 import inference_pb2 as pb

FINISH_REASONS = {
    pb.FINISH_REASON_UNSPECIFIED: None,
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_ABORT: "abort",
}


@dataclass
class Choice:
    """What one choice produced so far."""

    index: int
    text: list[str] = field(default_factory=list)
    logprobs: list[pb.TokenLogprob] = field(default_factory=list)
    num_tokens: int = 0
    finish_reason: str | None = None
    stop_reason: str | None = None


def completion_logprobs(entries: list[pb.TokenLogprob], start_offset: int = 0) -> dict:
    """OpenAI completions `logprobs`: tokens, token_logprobs, top_logprobs, text_offset.

    Semantics: an entry whose logprob is NaN (the first prompt token of an echo: nothing predicts it)
    has None as its token_logprob and top_logprobs, as OpenAI and vLLM answer."""
    offsets, offset = [], start_offset
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    scored = [not math.isnan(e.logprob) for e in entries]
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob if ok else None for e, ok in zip(entries, scored, strict=True)],
        "top_logprobs": [
            {t.token: t.logprob for t in e.top_logprobs} if ok else None
            for e, ok in zip(entries, scored, strict=True)
        ],
        "text_offset": offsets,
    }


def chat_logprobs(entries: list[pb.TokenLogprob], top: int | None = None) -> dict:
    """OpenAI chat `logprobs`: {"content": [{token, logprob, bytes, top_logprobs}]}, with the `top` most
    likely alternatives per token (chat's top_logprobs: 0 means none, as in vLLM; None: all sent)."""

    def item(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            {
                **item(e.token, e.logprob),
                "top_logprobs": [item(t.token, t.logprob) for t in e.top_logprobs[:top]],
            }
            for e in entries
        ]
    }


def prompt_logprobs_json(entries: list[pb.TokenLogprob]) -> list[dict | None]:
    """vLLM's completion `prompt_logprobs`: None for the first token (nothing precedes it), then per
    prompt token {token_id: {logprob, rank, decoded_token}} for the token and its top alternatives."""

    def entry(token_id: int, token: str, logprob: float, rank: int) -> tuple[int, dict]:
        return token_id, {"logprob": logprob, "rank": rank, "decoded_token": token}

    result: list[dict | None] = []
    for i, e in enumerate(entries):
        if i == 0 or math.isnan(e.logprob):
            result.append(None)
            continue
        alternatives = dict(entry(t.token_id, t.token, t.logprob, t.rank) for t in e.top_logprobs)
        result.append({**alternatives, **dict([entry(e.token_id, e.token, e.logprob, e.rank)])})
    return result


def usage_dict(usages: list[pb.Usage]) -> dict:
    prompt = sum(u.prompt_tokens for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    cached = sum(u.cached_prompt_tokens for u in usages)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


class Formatter:
    """Shared state of one OpenAI response: id, model, choices, usage."""

    object_name = ""
    chunk_object = ""

    def __init__(self, request_id: str, model: str, n: int, want_logprobs: bool) -> None:
        self.request_id, self.model, self.n, self.want_logprobs = request_id, model, n, want_logprobs
        self.created = int(time.time())
        self.choices: dict[int, Choice] = {}
        self.usages: list[pb.Usage] = []

    def choice(self, prompt_index: int, chunk_index: int) -> Choice:
        index = prompt_index * self.n + chunk_index
        return self.choices.setdefault(index, Choice(index))

    def record(self, prompt_index: int, chunk: pb.GenerateChunk) -> Choice:
        choice = self.choice(prompt_index, chunk.index)
        choice.text.append(chunk.text)
        choice.logprobs.extend(chunk.logprobs)
        choice.num_tokens += len(chunk.token_ids)
        choice.finish_reason = FINISH_REASONS.get(chunk.finish_reason) or choice.finish_reason
        choice.stop_reason = chunk.stop_reason or choice.stop_reason
        return choice

    def envelope(self, choices: list[dict], *, chunk: bool) -> dict:
        return {
            "id": self.request_id,
            "object": self.chunk_object if chunk else self.object_name,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def usage_chunk(self) -> dict:
        return {**self.envelope([], chunk=True), "usage": usage_dict(self.usages)}


class CompletionFormatter(Formatter):
    object_name = "text_completion"
    chunk_object = "text_completion"

    def __init__(self, request_id: str, model: str, n: int, want_logprobs: bool, echo: bool) -> None:
        super().__init__(request_id, model, n, want_logprobs)
        self.echo = echo
        self.echo_text: dict[int, str] = {}
        self.echo_logprobs: dict[int, list[pb.TokenLogprob]] = {}
        self.prompt_logprobs: dict[int, list[dict | None]] | None = None  # {} when the request asks

    def on_start(self, prompt_index: int, start: pb.GenerateStart, prompt: str | list[int]) -> list[dict]:
        """Remember the echo and prompt logprobs for this prompt; streaming: the chunks that echo it."""
        if self.prompt_logprobs is not None:
            self.prompt_logprobs[prompt_index] = prompt_logprobs_json(list(start.prompt_logprobs))
        if not self.echo:
            return []
        text = prompt if isinstance(prompt, str) else "".join(e.token for e in start.prompt_logprobs)
        self.echo_text[prompt_index] = text
        self.echo_logprobs[prompt_index] = list(start.prompt_logprobs) if self.want_logprobs else []
        chunks = []
        for k in range(self.n):
            index = self.choice(prompt_index, k).index
            logprobs = completion_logprobs(self.echo_logprobs[prompt_index]) if self.want_logprobs else None
            chunks.append(self._choice_json(index, text, logprobs, None, None))
        return chunks

    @staticmethod
    def _choice_json(index, text, logprobs, finish_reason, stop_reason) -> dict:
        return {
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
            "stop_reason": stop_reason,
        }

    def on_chunk(self, prompt_index: int, chunk: pb.GenerateChunk) -> dict:
        """Record the chunk; the streaming choice JSON for it."""
        choice = self.record(prompt_index, chunk)
        logprobs = completion_logprobs(list(chunk.logprobs)) if self.want_logprobs else None
        finish = FINISH_REASONS.get(chunk.finish_reason)
        return self._choice_json(choice.index, chunk.text, logprobs, finish, chunk.stop_reason or None)

    def final(self) -> dict:
        choices = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            prompt_index = index // self.n
            prefix = self.echo_text.get(prompt_index, "")
            logprobs = None
            if self.want_logprobs:
                entries = self.echo_logprobs.get(prompt_index, []) + choice.logprobs
                logprobs = completion_logprobs(entries)
            text = prefix + "".join(choice.text)
            choices.append(self._choice_json(index, text, logprobs, choice.finish_reason, choice.stop_reason))
            if self.prompt_logprobs is not None:
                choices[-1]["prompt_logprobs"] = self.prompt_logprobs.get(prompt_index)
        return {**self.envelope(choices, chunk=False), "usage": usage_dict(self.usages)}


class ChatFormatter(Formatter):
    object_name = "chat.completion"
    chunk_object = "chat.completion.chunk"
    top_logprobs: int | None = None  # the request's top_logprobs, set by the route

    def opening_chunks(self) -> list[dict]:
        """The first delta of every choice: the assistant role with empty content."""
        return [
            {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            for i in range(self.n)
        ]

    def on_chunk(self, prompt_index: int, chunk: pb.GenerateChunk) -> dict:
        choice = self.record(prompt_index, chunk)
        delta = {"content": chunk.text} if chunk.text else {}
        logprobs = chat_logprobs(list(chunk.logprobs), self.top_logprobs) if self.want_logprobs else None
        finish = FINISH_REASONS.get(chunk.finish_reason)
        out = {"index": choice.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        if finish:
            out["stop_reason"] = chunk.stop_reason or None
        return out

    def final(self) -> dict:
        choices = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": "".join(choice.text)},
                    "logprobs": chat_logprobs(choice.logprobs, self.top_logprobs)
                    if self.want_logprobs
                    else None,
                    "finish_reason": choice.finish_reason,
                    "stop_reason": choice.stop_reason,
                }
            )
        return {**self.envelope(choices, chunk=False), "usage": usage_dict(self.usages)}
