"""Request fields that would change a response's meaning but are not built yet: refused by name, not dropped.

Semantics: `refuse_unsupported(body)` raises a 400 OpenAI error naming the first such field of a
completion or chat completion body, and saying it is not supported yet. A field counts only at a value
that asks for something: `response_format` `{"type": "text"}`, `tool_choice` `"none"` (or `"auto"`
with no tools), `use_beam_search` false, empty lists and nulls are what the server does anyway and pass.
Harmless extras (`user`, `metadata`, `store`, `parallel_tool_calls`, `service_tier`, ...) pass as OpenAI
clients send them. `stream_options` without `stream` is a 400 with vLLM's message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loraplane.gateway.errors import OpenAIError
from loraplane.gateway.protocol import ChatCompletionRequest, SamplingFields

NOT_YET = "{name} is not supported by this server yet; send the request without it"


def _set(value: Any) -> bool:
    return value not in (None, False, [], {}, "")


def _not_text(value: Any) -> bool:
    return _set(value) and not (isinstance(value, dict) and value.get("type") == "text")


# field -> predicate on its value: True means it asks for something this server cannot do yet.
BOTH: dict[str, Callable[[Any], bool]] = {
    "response_format": _not_text,
    "tools": _set,
    "functions": _set,
    "function_call": lambda v: _set(v) and v != "none",
    "guided_json": _set,
    "guided_regex": _set,
    "guided_choice": _set,
    "guided_grammar": _set,
    "guided_decoding_backend": _set,
    "guided_whitespace_pattern": _set,
    "structured_outputs": _set,
    "use_beam_search": _set,
    "allowed_token_ids": _set,
    "bad_words": _set,
    "truncate_prompt_tokens": lambda v: v is not None,
    "priority": _set,
    "return_tokens_as_token_ids": _set,
    "return_token_ids": _set,
    "spaces_between_special_tokens": lambda v: v is False,
    "prompt_embeds": _set,
    "cache_salt": _set,
    "kv_transfer_params": _set,
    "vllm_xargs": _set,
    "logits_processors": _set,
    "audio": _set,
    "prediction": _set,
    "web_search_options": _set,
}
CHAT_ONLY: dict[str, Callable[[Any], bool]] = {
    "prompt_logprobs": lambda v: v is not None,
    "echo": _set,
    "chat_template": _set,
    "chat_template_kwargs": _set,
    "continue_final_message": _set,
    "documents": _set,
    "mm_processor_kwargs": _set,
    "add_special_tokens": _set,
    "modalities": lambda v: _set(v) and list(v) != ["text"],
}


def _refuse(name: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, NOT_YET.format(name=name[:200]), param or name.split("=")[0])


def _tool_choice(extras: dict) -> bool:
    choice = extras.get("tool_choice")
    return _set(choice) and choice != "none" and not (choice == "auto" and not _set(extras.get("tools")))


def refuse_unsupported(body: SamplingFields) -> None:
    """The module docstring's 400 for the first field `body` asks for and this server cannot honour."""
    if body.stream_options is not None and not body.stream:
        raise OpenAIError(400, "Stream options can only be defined when `stream=True`.", "stream_options")
    options = body.stream_options.model_extra or {} if body.stream_options is not None else {}
    if _set(options.get("continuous_usage_stats")):
        raise _refuse("stream_options.continuous_usage_stats", "stream_options")
    extras = body.model_extra or {}
    chat = isinstance(body, ChatCompletionRequest)
    checks = {**BOTH, **CHAT_ONLY} if chat else BOTH
    for name, asks in checks.items():
        if name in extras and asks(extras[name]):
            raise _refuse(f"{name}={extras[name]!r}", name)
    if _tool_choice(extras):
        raise _refuse(f"tool_choice={extras['tool_choice']!r}", "tool_choice")
    if not chat:
        _refuse_completion_fields(body, extras)
        return
    for i, message in enumerate(body.messages):
        for name in ("tool_calls", "tool_call_id", "function_call"):
            if _set((message.model_extra or {}).get(name)):
                raise _refuse(f"messages[{i}].{name}", "messages")


def _refuse_completion_fields(body: SamplingFields, extras: dict) -> None:
    """`best_of` other than `n` (the best of several samples), and `prompt_logprobs` in a stream or with
    echo (the non-streamed choices carry them; echo asks the engine for its own)."""
    best_of = extras.get("best_of")
    if best_of is not None and best_of != body.n:
        raise _refuse(f"best_of={best_of!r} (other than n)", "best_of")
    if getattr(body, "prompt_logprobs", None) is not None and (body.stream or body.echo):
        with_what = "stream" if body.stream else "echo"
        raise _refuse(f"prompt_logprobs with {with_what}", "prompt_logprobs")
