"""OpenAI request bodies -> Inference `GenerateRequest` messages (the only request-side protobuf code).

Semantics: a completion with k prompts becomes k Generate calls (one per prompt, each with `n`
choices); a chat completion becomes one call with `ChatInput`, which the worker renders with the
model's chat template. Unset OpenAI fields stay unset so the engine's defaults apply.
"""

from __future__ import annotations

import uuid

from loraplane.gateway.errors import bad_request
from loraplane.gateway.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ContentPart,
    SamplingFields,
)
from loraplane.gateway.request_log import current_request_id
from loraplane.inference.v1 import inference_pb2 as pb

PromptInput = str | list[int]

_OPTIONAL_SCALARS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "ignore_eos",
    "skip_special_tokens",
    "include_stop_str_in_output",
    "min_tokens",
)


def new_request_id(prefix: str) -> str:
    """`prefix-<id>`: the request's X-Request-Id (loraplane.gateway.request_log), else a random id."""
    return f"{prefix}-{current_request_id() or uuid.uuid4().hex}"


def sampling_params(
    req: SamplingFields,
    *,
    max_tokens: int | None = None,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
) -> pb.SamplingParams:
    """The proto SamplingParams for `req`; `max_tokens` overrides the body's (chat: max_completion_tokens)."""
    params = pb.SamplingParams(n=req.n)
    for name in _OPTIONAL_SCALARS:
        value = getattr(req, name)
        if value is not None:
            setattr(params, name, value)
    if max_tokens is not None:
        params.max_tokens = max_tokens
    stop = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    params.stop.extend(stop)
    params.stop_token_ids.extend(req.stop_token_ids or [])
    if logprobs is not None:
        params.logprobs = logprobs
    if prompt_logprobs is not None:
        params.prompt_logprobs = prompt_logprobs
    return params


def completion_prompts(req: CompletionRequest) -> list[PromptInput]:
    """The prompts of a completion request: a string, strings, token ids, or lists of token ids."""
    prompt = req.prompt
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad_request("prompt must not be empty.", "prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    if any(isinstance(p, list) and not p for p in prompt):
        raise bad_request("prompt token id lists must not be empty.", "prompt")
    return list(prompt)


def completion_requests(req: CompletionRequest, model: str, request_id: str) -> list[pb.GenerateRequest]:
    """One GenerateRequest per prompt; echo asks for prompt logprobs so echoed token ids come back as text."""
    if req.suffix:
        raise bad_request("suffix is not supported.", "suffix")
    prompts = completion_prompts(req)
    prompt_logprobs = req.prompt_logprobs
    if req.echo and req.logprobs is not None:
        prompt_logprobs = req.logprobs
    requests = []
    for i, prompt in enumerate(prompts):
        echo_ids = req.echo and not isinstance(prompt, str) and prompt_logprobs is None
        params = sampling_params(
            req, logprobs=req.logprobs, prompt_logprobs=0 if echo_ids else prompt_logprobs
        )
        message = pb.GenerateRequest(request_id=f"{request_id}-{i}", model=model, sampling_params=params)
        if isinstance(prompt, str):
            message.text = prompt
        else:
            message.token_ids.ids.extend(prompt)
        requests.append(message)
    return requests


def _message_text(content: str | list[ContentPart] | None, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    for part in content:
        if part.type != "text":
            raise bad_request(
                f"messages[{index}] has a content part of type {part.type!r}; only text is supported.",
                "messages",
            )
    return "".join(part.text for part in content)


def chat_request(req: ChatCompletionRequest, model: str, request_id: str) -> pb.GenerateRequest:
    """The GenerateRequest of a chat completion (ChatInput; the worker applies the chat template)."""
    messages = [
        pb.ChatMessage(role=m.role, content=_message_text(m.content, i)) for i, m in enumerate(req.messages)
    ]
    chat = pb.ChatInput(messages=messages, add_generation_prompt=req.add_generation_prompt)
    top = req.top_logprobs if req.logprobs else None
    if req.top_logprobs and not req.logprobs:
        raise bad_request("top_logprobs needs logprobs to be true.", "top_logprobs")
    params = sampling_params(
        req, max_tokens=req.max_completion_tokens, logprobs=(top or 0) if req.logprobs else None
    )
    return pb.GenerateRequest(request_id=request_id, model=model, chat=chat, sampling_params=params)
