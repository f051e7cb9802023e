"""EngineClient: the typed surface of the engine that a front end drives (vLLM's `EngineClient` idea).

The worker's service wing (`loraplane.inference_worker.service`) holds its engine as an `EngineClient`
and uses nothing else of it; `AsyncLLMEngine` implements it, and the service's tests drive the service
with a fake that implements it too. It lives in the engine's root, not in the service wing, because it
is the engine's promise to any front end (the gRPC service today, an in-process server or a benchmark
tomorrow) and names only engine types: the engine can state and test that it keeps the promise without
importing the service, so imports still run one way, service -> engine.

Semantics:
- reads (`model_name`, `max_model_len`, `tokenizer`, `is_running`, `stats()`, `list_loras()`) are
  snapshots that return at once and never wait on a step, so they are safe on the event loop;
- everything that changes the engine or waits on it is a coroutine: `start`/`shutdown`, `abort`,
  `add_lora`/`remove_lora`/`pin_lora`;
- `generate` is an async generator of `RequestOutput` snapshots whose completions carry the deltas
  since the previous snapshot (`text_delta`, `token_ids_delta`; a consumer that falls behind gets one
  snapshot carrying every token produced since, never fewer tokens); it raises a domain error
  (`loraplane.inference_worker.errors`) before its first snapshot for a bad request, and closing it
  early aborts the request and frees its KV blocks.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from loraplane.inference_worker.lora import AdapterInfo, LoRARequest
    from loraplane.inference_worker.outputs import EngineStats, RequestOutput
    from loraplane.inference_worker.sampling_params import SamplingParams


class TokenizerLike(Protocol):
    """The part of a Hugging Face tokenizer the front end uses (prompt lengths, chat, Tokenize)."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    def apply_chat_template(self, conversation: list[dict[str, Any]], **kwargs: Any) -> Any: ...

    def build_inputs_with_special_tokens(self, token_ids: list[int]) -> list[int]: ...


@runtime_checkable
class EngineClient(Protocol):
    """One started engine serving one base model (see the module doc for the contract)."""

    @property
    def model_name(self) -> str:
        """The served base model's name (`served_model_name`, else the model's own name)."""
        ...

    @property
    def max_model_len(self) -> int:
        """The context length in tokens: prompt plus generated tokens never exceed it."""
        ...

    @property
    def tokenizer(self) -> TokenizerLike | None:
        """The model's tokenizer; None when the engine runs without one (token-id prompts only)."""
        ...

    @property
    def is_running(self) -> bool:
        """True between `start()` and `shutdown()` while the engine loop is alive."""
        ...

    async def start(self) -> None:
        """Load the model and start the engine loop."""
        ...

    async def shutdown(self) -> None:
        """Stop the engine loop; every open stream fails with EngineDeadError."""
        ...

    def generate(
        self,
        prompt: str | list[int],
        sampling_params: SamplingParams | None,
        request_id: str,
        lora_request: LoRARequest | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Stream the request's snapshots until one is `finished` (or the request is aborted)."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a request now and free its KV blocks; its stream ends."""
        ...

    def stats(self) -> EngineStats:
        """Load and KV cache usage as of the last step."""
        ...

    async def add_lora(self, lora_request: LoRARequest) -> bool:
        """Register an adapter and load its weights (off the event loop); raises the load's error."""
        ...

    async def remove_lora(self, name: str) -> bool:
        """Unregister an adapter; its running requests finish. False when it was not registered."""
        ...

    async def pin_lora(self, name: str) -> bool:
        """Keep an adapter's weights cached (never evicted); False when that would fill the cache."""
        ...

    def list_loras(self) -> list[AdapterInfo]:
        """The registered adapters with their tier and pin state."""
        ...
