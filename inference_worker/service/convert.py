"""Conversion between `loraplane.inference.v1` messages and the engine's requests and outputs.

Semantics: pure functions, no engine state; invalid requests raise InvalidRequestError (a 400 upstream).
Those that tokenize, render chat templates or detokenize (`engine_prompt`, `tokenize_input`,
`generate_start`) take time in proportion to the prompt, seconds for a prompt of megabytes: the servicer
runs them in its thread pool, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Sequence
from typing import Any

from loraplane.inference.v1 import inference_pb2 as pb
from loraplane.inference_worker.errors import InvalidRequestError
from loraplane.inference_worker.sampling_params import SamplingParams

FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "abort": pb.FINISH_REASON_ABORT,
}
_FLOAT_FIELDS = (
    "temperature",
    "top_p",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
)
_SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingParams) if f.init}


def _decimal(value: float) -> float:
    """The shortest decimal that rounds to the same float32 (0.9 arrives as 0.899999976; give 0.9 back),
    so gRPC callers sample exactly as Python callers of the offline API with the same literal."""
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


def sampling_params_from_proto(msg: pb.SamplingParams) -> SamplingParams:
    """Proto SamplingParams -> engine SamplingParams; unset optional fields keep the engine's defaults,
    except max_tokens, which unset means "up to the context length" (None), as the proto documents."""
    kwargs: dict[str, Any] = {"max_tokens": None}
    for descriptor, value in msg.ListFields():  # set optionals and non-empty repeated fields only
        name = descriptor.name
        if name in _FLOAT_FIELDS:
            kwargs[name] = _decimal(value)
        elif isinstance(value, (int, bool, str, float)):
            kwargs[name] = value
        else:
            kwargs[name] = list(value)
    unsupported = sorted(k for k in kwargs if k not in _SAMPLING_FIELDS)
    if unsupported:
        raise InvalidRequestError(f"{unsupported[0]} is not supported by this worker", param=unsupported[0])
    return SamplingParams(**kwargs)


def render_chat(tokenizer: Any, chat: pb.ChatInput, add_special_tokens: bool = False) -> list[int]:
    """Render a chat with the tokenizer's chat template and tokenize it (the template adds BOS itself;
    `add_special_tokens` adds the tokenizer's own on top, as vLLM's tokenize endpoint does on request)."""
    if not chat.messages:
        raise InvalidRequestError("chat.messages is empty; give at least one message", param="messages")
    messages = [{"role": m.role, "content": m.content} for m in chat.messages]
    add_generation_prompt = chat.add_generation_prompt if chat.HasField("add_generation_prompt") else True
    if getattr(tokenizer, "chat_template", None) is None:
        raise InvalidRequestError("the model has no chat template; send text instead", param="messages")
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))


def prompt_from_request(request: pb.GenerateRequest, tokenizer: Any) -> str | list[int]:
    """The engine prompt of a GenerateRequest: text as given, token ids as given, or a rendered chat."""
    kind = request.WhichOneof("input")
    if kind == "text" and request.text:
        return request.text
    if kind == "token_ids" and request.token_ids.ids:
        return list(request.token_ids.ids)
    if kind == "chat":
        return render_chat(tokenizer, request.chat)
    raise InvalidRequestError("the prompt is empty; set text, token_ids or chat", param="prompt")


def engine_prompt(request: pb.GenerateRequest, tokenizer: Any) -> str | list[int]:
    """The prompt the engine gets for a GenerateRequest: token ids (tokenized here as the engine would, so
    the length can be checked once); text stays text when the worker runs without a tokenizer (the
    engine then rejects it)."""
    prompt = prompt_from_request(request, tokenizer)
    if isinstance(prompt, str) and tokenizer is not None:
        return list(tokenizer.encode(prompt))
    return prompt


def tokenize_input(request: pb.TokenizeRequest, tokenizer: Any) -> list[int]:
    """The token ids of a TokenizeRequest's text or chat; special tokens as `add_special_tokens` says
    (default: added to text, not to a chat, whose template adds its own)."""
    if tokenizer is None:
        raise InvalidRequestError("this worker runs without a tokenizer; it cannot tokenize", param="input")
    kind = request.WhichOneof("input")
    if kind == "chat":
        add_special = request.HasField("add_special_tokens") and request.add_special_tokens
        return render_chat(tokenizer, request.chat, add_special_tokens=add_special)
    if kind == "text":
        add_special = request.add_special_tokens if request.HasField("add_special_tokens") else True
        return list(tokenizer.encode(request.text, add_special_tokens=add_special))
    raise InvalidRequestError("nothing to tokenize; set text or chat", param="input")


def detokenize_ids(token_ids: Sequence[int], tokenizer: Any) -> str:
    """The text of `token_ids` (special tokens kept, as vLLM's /detokenize); an id outside the
    vocabulary is an InvalidRequestError naming it."""
    if tokenizer is None:
        raise InvalidRequestError("this worker has no tokenizer; it cannot detokenize", param="tokens")
    vocab = len(tokenizer)
    bad = next((i for i in token_ids if not 0 <= i < vocab), None)
    if bad is not None:
        raise InvalidRequestError(f"token id {bad} is outside the vocabulary [0, {vocab})", param="tokens")
    return tokenizer.decode(list(token_ids))


def check_fits(prompt: str | list[int], params: SamplingParams, max_model_len: int) -> None:
    """vLLM's 400s for a prompt that leaves no room to generate, and for prompt + max_tokens past the context.

    Semantics: a prompt of token ids must be shorter than `max_model_len`; then unset max_tokens means
    "up to the context" and always fits. Checked before the engine sees the prompt, which may be
    millions of ids: the engine validates each id on the event loop.
    """
    if isinstance(prompt, str):
        return
    if len(prompt) >= max_model_len:
        raise InvalidRequestError(
            f"the prompt has {len(prompt)} tokens; this model's maximum context length (max_model_len) is "
            f"{max_model_len} tokens and at least one must be left to generate; shorten the prompt",
            param="prompt",
        )
    if params.max_tokens is None:
        return
    if len(prompt) + params.max_tokens > max_model_len:
        raise InvalidRequestError(
            f"'max_tokens' is too large: {params.max_tokens}. This model's maximum context length is "
            f"{max_model_len} tokens and your request has {len(prompt)} input tokens "
            f"({params.max_tokens} > {max_model_len} - {len(prompt)}); lower max_tokens or shorten the "
            "prompt",
            param="max_tokens",
        )


def _token_logprobs(token_ids: Sequence[int], entries: Sequence[dict] | None) -> list[pb.TokenLogprob]:
    """Engine logprob dicts ({token_id: Logprob(logprob, rank, decoded_token)} per token) -> protos."""
    if not entries:
        return []
    result = []
    for token_id, entry in zip(token_ids, entries, strict=False):
        chosen = entry.get(token_id)
        ranked = sorted(entry.items(), key=lambda item: item[1].rank or 1 << 30)
        result.append(
            pb.TokenLogprob(
                token_id=token_id,
                token=(chosen.decoded_token or "") if chosen else "",
                logprob=chosen.logprob if chosen else float("-inf"),
                rank=(chosen.rank or 0) if chosen else 0,
                top_logprobs=[
                    pb.TopLogprob(
                        token_id=t, token=lp.decoded_token or "", logprob=lp.logprob, rank=lp.rank or 0
                    )
                    for t, lp in ranked
                ],
            )
        )
    return result


def prompt_logprobs_to_proto(output: Any, tokenizer: Any) -> list[pb.TokenLogprob]:
    """A RequestOutput's prompt logprobs as protos (empty when not asked). The first prompt token has no
    logprob (None in the engine): it is sent with its text, logprob NaN, rank 0 and no alternatives."""
    entries = getattr(output, "prompt_logprobs", None)
    if not entries:
        return []
    ids = list(output.prompt_token_ids)
    first_text = tokenizer.decode([ids[0]]) if tokenizer is not None else ""
    first = pb.TokenLogprob(token_id=ids[0], token=first_text, logprob=math.nan, rank=0)
    return [first, *_token_logprobs(ids[1:], entries[1:])]


def generate_start(output: Any, request_id: str, model: str, tokenizer: Any) -> pb.GenerateStart:
    """The first message of a Generate stream, from the request's first output."""
    return pb.GenerateStart(
        request_id=request_id,
        prompt_token_ids=output.prompt_token_ids,
        prompt_logprobs=prompt_logprobs_to_proto(output, tokenizer),
        model=model,
    )


def chunk_from_completion(completion: Any, send_finish: bool) -> pb.GenerateChunk | None:
    """One choice's new output as a chunk (with its finish reason when `send_finish`); None when there is
    nothing new to send."""
    token_ids = list(completion.token_ids_delta)
    finish = (
        FINISH_REASONS.get(completion.finish_reason or "abort", pb.FINISH_REASON_STOP) if send_finish else 0
    )
    if not token_ids and not completion.text_delta and not finish:
        return None
    logprobs = None
    if completion.logprobs and token_ids:
        logprobs = completion.logprobs[len(completion.logprobs) - len(token_ids) :]
    stop_reason = completion.stop_reason
    return pb.GenerateChunk(
        index=completion.index,
        token_ids=token_ids,
        text=completion.text_delta,
        logprobs=_token_logprobs(token_ids, logprobs),
        finish_reason=finish,
        stop_reason="" if stop_reason is None else str(stop_reason),
    )


def usage_from_output(output: Any) -> pb.Usage:
    prompt_tokens = len(output.prompt_token_ids)
    completion_tokens = sum(len(c.token_ids) for c in output.outputs)
    return pb.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        cached_prompt_tokens=int(getattr(output, "num_cached_tokens", 0) or 0),
    )
