"""Names of the projections a LoRA adapter may target in a Llama-family model, as PEFT writes them.

The one vocabulary of supported modules: the control plane reports and validates targets with it, the
worker wraps exactly these projections.
"""

from __future__ import annotations

# PEFT module name -> its parent inside a decoder layer (model.layers.{i}.<parent>.<name>).
MODULE_PARENTS = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
SUPPORTED_MODULES = tuple(MODULE_PARENTS)
# Modules of a Llama model that exist but cannot carry a LoRA here (used to reject such targets).
_UNSUPPORTED_LAYER_MODULES = ("self_attn", "mlp", "mlp.act_fn", "input_layernorm", "post_attention_layernorm")
_UNSUPPORTED_MODEL_MODULES = (
    "model",
    "model.embed_tokens",
    "model.layers",
    "model.norm",
    "model.rotary_emb",
    "lm_head",
)
# PEFT's default target_modules for Llama when a config omits them
# (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")


def module_key(layer: int, module: str) -> str:
    """The module's name inside a Llama-family causal LM, the key PEFT matches patterns against."""
    return f"model.layers.{layer}.{MODULE_PARENTS[module]}.{module}"


def supported_keys(num_layers: int) -> list[str]:
    return [module_key(layer, module) for layer in range(num_layers) for module in SUPPORTED_MODULES]


def unsupported_keys(num_layers: int) -> list[str]:
    layer_keys = [
        f"model.layers.{i}.{name}" for i in range(num_layers) for name in _UNSUPPORTED_LAYER_MODULES
    ]
    return list(_UNSUPPORTED_MODEL_MODULES) + [f"model.layers.{i}" for i in range(num_layers)] + layer_keys
