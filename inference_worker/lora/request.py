"""`LoRARequest`: which adapter a request runs with (vLLM-compatible)."""

from __future__ import annotations

from dataclasses import dataclass

from loraplane.inference_worker.errors import InvalidRequestError


@dataclass(frozen=True)
class LoRARequest:
    """An adapter to apply to a request, field-compatible with `vllm.lora.request.LoRARequest`.

    Semantics: `lora_name` is the user-facing identity (equality and hashing use it alone, as in
    vLLM); `lora_int_id` is a caller-chosen positive id; `lora_path` is a local directory, a path with
    `~`, or a Hugging Face hub id. The worker keys caches by the adapter's *version* (sha256 of its
    files), never by name or id.
    """

    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    base_model_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.lora_name, str) or not self.lora_name:
            raise InvalidRequestError("lora_name must be a non-empty string", param="lora_name")
        if not isinstance(self.lora_int_id, int) or self.lora_int_id < 1:
            raise InvalidRequestError(
                f"lora_int_id must be an int > 0, got {self.lora_int_id!r}", param="lora_int_id"
            )
        if not isinstance(self.lora_path, str) or not self.lora_path:
            raise InvalidRequestError("lora_path cannot be empty", param="lora_path")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoRARequest) and other.lora_name == self.lora_name

    def __hash__(self) -> int:
        return hash(self.lora_name)

    @property
    def adapter_id(self) -> int:
        return self.lora_int_id

    @property
    def name(self) -> str:
        return self.lora_name

    @property
    def path(self) -> str:
        return self.lora_path
