"""Model registry: HF architecture name -> model class."""

from __future__ import annotations

from loraplane.inference_worker.models.llama import LlamaForCausalLM

MODEL_REGISTRY: dict[str, type] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
}

MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def model_class_for(config) -> type:
    from loraplane.inference_worker.errors import ModelLoadError

    for arch in getattr(config, "architectures", None) or []:
        if arch in MODEL_REGISTRY:
            return MODEL_REGISTRY[arch]
    by_type = MODEL_TYPES.get(getattr(config, "model_type", ""))
    if by_type is not None:
        return MODEL_REGISTRY[by_type]
    raise ModelLoadError(
        f"unsupported architecture {getattr(config, 'architectures', None)}; "
        f"supported: {sorted(MODEL_REGISTRY)}"
    )
