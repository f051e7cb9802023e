"""The inference worker: a batched multi-LoRA LLM engine (vLLM-shaped API) and its gRPC service."""

from inference_worker.async_engine import AsyncLLMEngine
from inference_worker.config import EngineConfig
from inference_worker.llm import LLM
from inference_worker.llm_engine import LLMEngine
from inference_worker.outputs import CompletionOutput, EngineStats, Logprob, RequestOutput
from inference_worker.sampling_params import SamplingParams

__all__ = [
    "LLM",
    "AsyncLLMEngine",
    "CompletionOutput",
    "EngineConfig",
    "EngineStats",
    "LLMEngine",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
]
