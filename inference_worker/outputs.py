"""Request outputs, with vLLM's names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loraplane.inference_worker.lora.request import LoRARequest


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    """One completion of a request. `text_delta`/`token_ids_delta` are what is new since the previous
    snapshot a stream consumer received (the async engine fills them; UTF-8 safe)."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Logprob]] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    text_delta: str = ""
    token_ids_delta: list[int] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """A request's snapshot. `prompt_logprobs` (when the request asked): per prompt token, None for the
    first, then {token_id: Logprob} of that token given the ones before it plus the top-k alternatives."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0
    lora_request: LoRARequest | None = None
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


@dataclass(slots=True)
class CompletionUpdate:
    """What one completion produced since the previous update: token ids and, when asked, their logprobs
    (`decoded_token` left None: the stream's consumer decodes), plus the finish the engine decided (EOS,
    a stop token or length; stop strings are the consumer's, who sees the text)."""

    index: int
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    cumulative_logprob: float | None
    finish_reason: str | None
    stop_reason: int | str | None


@dataclass(slots=True)
class RequestUpdate:
    """One request's progress in one engine step, as the engine thread hands it over (no text: see
    `loraplane.inference_worker.output_stream`). `prompt_logprobs` rides on the request's first update."""

    request_id: str
    outputs: list[CompletionUpdate]
    finished: bool
    num_cached_tokens: int
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


@dataclass(frozen=True)
class EngineStats:
    """The engine as of its last step. Prefix-cache counts are in tokens since start (vLLM's units);
    `running_lora_versions`/`waiting_lora_versions` are the adapter versions of running/waiting sequences."""

    num_running: int
    num_waiting: int
    kv_usage: float
    num_free_blocks: int
    num_total_blocks: int
    prefix_cache_hits: int
    prefix_cache_queries: int
    num_preemptions: int = 0
    running_lora_versions: frozenset[str] = frozenset()
    waiting_lora_versions: frozenset[str] = frozenset()
