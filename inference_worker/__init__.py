"""The inference worker: a batched multi-LoRA LLM engine (vLLM-shaped API) and its gRPC service.

The public names load on first access (PEP 562), so importing a light submodule such as
`loraplane.inference_worker.service.cli` (the `loraplane worker` subcommand) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loraplane.inference_worker.async_engine import AsyncLLMEngine
    from loraplane.inference_worker.config import EngineConfig
    from loraplane.inference_worker.engine_client import EngineClient
    from loraplane.inference_worker.llm import LLM
    from loraplane.inference_worker.llm_engine import LLMEngine
    from loraplane.inference_worker.outputs import CompletionOutput, EngineStats, Logprob, RequestOutput
    from loraplane.inference_worker.sampling_params import SamplingParams

_EXPORTS = {
    "AsyncLLMEngine": "loraplane.inference_worker.async_engine",
    "EngineConfig": "loraplane.inference_worker.config",
    "EngineClient": "loraplane.inference_worker.engine_client",
    "LLM": "loraplane.inference_worker.llm",
    "LLMEngine": "loraplane.inference_worker.llm_engine",
    "CompletionOutput": "loraplane.inference_worker.outputs",
    "EngineStats": "loraplane.inference_worker.outputs",
    "Logprob": "loraplane.inference_worker.outputs",
    "RequestOutput": "loraplane.inference_worker.outputs",
    "SamplingParams": "loraplane.inference_worker.sampling_params",
}

__all__ = [
    "LLM",
    "AsyncLLMEngine",
    "CompletionOutput",
    "EngineClient",
    "EngineConfig",
    "EngineStats",
    "LLMEngine",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
