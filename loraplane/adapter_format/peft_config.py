"""Parse and validate a PEFT LoRA `adapter_config.json`, with PEFT's own matching semantics.

Torch-free: the control plane validates adapters with `validate_adapter_dir` (config + weight files
present and intact) before any worker loads them. The worker then checks shapes against its model
(`loraplane.inference_worker.lora.weights`). Target and pattern matching live in
`loraplane.adapter_format.matching`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraplane.adapter_format.errors import AdapterLoadError
from loraplane.adapter_format.files import (
    CONFIG_FILE,
    adapter_files,
    adapter_version,
    check_weights_file,
    contained_file,
)
from loraplane.adapter_format.matching import (
    check_target_module_exists,
    get_pattern_key,
    layer_regex,
    suffix_regex,
    target_regex,
)
from loraplane.adapter_format.modules import (
    DEFAULT_TARGET_MODULES,
    SUPPORTED_MODULES,
    module_key,
    supported_keys,
    unsupported_keys,
)

__all__ = [
    "PeftLoRAConfig",
    "adapter_version",
    "load_peft_config",
    "parse_peft_config",
    "validate_adapter_dir",
]

# Config fields that change the math in ways this engine does not implement: field -> reason.
_REJECTED_IF_SET = {
    "use_dora": "DoRA adapters are not supported; merge the adapter or retrain it without use_dora",
    "modules_to_save": "fully trained extra modules are not supported with multi-LoRA serving",
    "lora_bias": "LoRA bias terms are not supported",
    "trainable_token_indices": "trainable token embeddings are not supported",
    "layer_replication": "layer_replication is not supported",
    "alora_invocation_tokens": "activated LoRA (aLoRA) is not supported",
    "target_parameters": "target_parameters (LoRA on raw parameters) is not supported",
    "use_qalora": "QA-LoRA is not supported",
    "megatron_config": "Megatron-sharded LoRA is not supported",
}
_PROBE_LAYERS = 128  # layers considered when checking target patterns without a model at hand
# rank_pattern / alpha_pattern entries: PEFT writes at most one per module (a 128-layer model has 896);
# every projection is matched against each of them, so the count bounds the work a config can ask for.
MAX_PATTERN_ENTRIES = 4096


@dataclass(frozen=True)
class PeftLoRAConfig:
    """The fields of a PEFT LoraConfig that decide which modules get which rank and scaling.

    Semantics: `targets(key)`, `rank_for(key)`, `alpha_for(key)` and `scaling_for(key)` follow PEFT's
    `check_target_module_exists` and `get_pattern_key` (see `matching`) for a module `key` such as
    "model.layers.3.self_attn.q_proj"; scaling is alpha/r, or alpha/sqrt(r) with use_rslora.
    `fan_in_fan_out` only describes the base layer's layout (GPT-2 Conv1D); on Llama's nn.Linear PEFT
    turns it off, and lora_A/lora_B are always stored [r, in] / [out, r], so it needs no transpose.
    """

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | str
    use_rslora: bool = False
    rank_pattern: tuple[tuple[str, int], ...] = ()
    alpha_pattern: tuple[tuple[str, float], ...] = ()
    exclude_modules: tuple[str, ...] | str | None = None
    layers_to_transform: tuple[int, ...] | None = None
    layers_pattern: tuple[str, ...] | None = None
    fan_in_fan_out: bool = False
    base_model_name_or_path: str | None = None

    @property
    def max_rank(self) -> int:
        return max([self.r] + [rank for _, rank in self.rank_pattern])

    def targets(self, key: str) -> bool:
        return check_target_module_exists(self, key)

    def targeted_modules(self, num_layers: int) -> tuple[str, ...]:
        """The supported modules this config targets in at least one of the first `num_layers` layers."""
        return tuple(
            module
            for module in SUPPORTED_MODULES
            if any(self.targets(module_key(layer, module)) for layer in range(num_layers))
        )

    def rank_for(self, key: str) -> int:
        return _pattern_value(self.rank_pattern, key, self.r)

    def alpha_for(self, key: str) -> float:
        return _pattern_value(self.alpha_pattern, key, self.lora_alpha)

    def scaling_for(self, key: str) -> float:
        rank = self.rank_for(key)
        alpha = self.alpha_for(key)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def _pattern_value(patterns: tuple[tuple[str, Any], ...], key: str, default: Any) -> Any:
    """PEFT's `pattern.get(get_pattern_key(pattern.keys(), key), default)` on (pattern, value) pairs."""
    values = dict(patterns)
    return values.get(get_pattern_key(values, key), default)


def load_peft_config(
    adapter_dir: str | Path, max_lora_rank: int | None = None, num_layers: int | None = None
) -> PeftLoRAConfig:
    """Read and validate `adapter_dir/adapter_config.json` (see `parse_peft_config`)."""
    directory = Path(adapter_dir).expanduser()
    path = directory / CONFIG_FILE
    try:
        raw = json.loads(contained_file(directory, CONFIG_FILE, "adapter_config").read_text())
    except FileNotFoundError as exc:
        raise AdapterLoadError(f"{path} does not exist", field="adapter_config") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterLoadError(f"{path} is not valid JSON: {exc}", field="adapter_config") from exc
    if not isinstance(raw, dict):
        raise AdapterLoadError(f"{path} must hold a JSON object", field="adapter_config")
    return parse_peft_config(raw, max_lora_rank=max_lora_rank, num_layers=num_layers)


def validate_adapter_dir(
    adapter_dir: str | Path, max_lora_rank: int | None = None, num_layers: int | None = None
) -> tuple[PeftLoRAConfig, str]:
    """Cheap full check of an adapter directory without a model: config valid, weight file present and
    intact. Returns (config, version). Raises AdapterLoadError / AdapterSourceNotFoundError."""
    directory = Path(adapter_dir).expanduser()
    _, weights = adapter_files(directory)
    config = load_peft_config(directory, max_lora_rank, num_layers)
    check_weights_file(*weights)
    return config, adapter_version(directory)


def parse_peft_config(
    raw: dict[str, Any], max_lora_rank: int | None = None, num_layers: int | None = None
) -> PeftLoRAConfig:
    """Validate a parsed adapter_config.json; AdapterLoadError(field=<the offending key>) on anything
    this engine cannot serve exactly. Missing r / lora_alpha / target_modules take PEFT's defaults."""
    _reject_unsupported(raw)
    config = PeftLoRAConfig(
        r=_positive_int(raw.get("r", 8), "r"),
        lora_alpha=_number(raw.get("lora_alpha", 8), "lora_alpha"),
        target_modules=_target_modules(raw.get("target_modules")),
        use_rslora=bool(raw.get("use_rslora", False)),
        rank_pattern=_patterns(raw.get("rank_pattern"), "rank_pattern", _positive_int),
        alpha_pattern=_patterns(raw.get("alpha_pattern"), "alpha_pattern", _number),
        exclude_modules=_names_or_regex(raw.get("exclude_modules"), "exclude_modules"),
        layers_to_transform=_layers(raw.get("layers_to_transform")),
        layers_pattern=_layers_pattern(raw.get("layers_pattern")),
        fan_in_fan_out=bool(raw.get("fan_in_fan_out", False)),
        base_model_name_or_path=raw.get("base_model_name_or_path"),
    )
    if max_lora_rank is not None and config.max_rank > max_lora_rank:
        field = "r" if config.r > max_lora_rank else "rank_pattern"
        raise AdapterLoadError(
            f"adapter rank {config.max_rank} exceeds max_lora_rank {max_lora_rank}; "
            f"start the engine with max_lora_rank >= {config.max_rank}",
            field=field,
        )
    _check_targets(config, num_layers or _PROBE_LAYERS)
    return config


def _reject_unsupported(raw: dict[str, Any]) -> None:
    peft_type = raw.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise AdapterLoadError(f"peft_type {peft_type!r} is not supported; only LORA is", "peft_type")
    bias = raw.get("bias", "none")
    if bias not in ("none", None):
        raise AdapterLoadError(f"bias={bias!r} is not supported; only bias='none' adapters are", field="bias")
    for field, reason in _REJECTED_IF_SET.items():
        if raw.get(field):
            raise AdapterLoadError(f"{field}={raw[field]!r}: {reason}", field=field)


def _check_targets(config: PeftLoRAConfig, num_layers: int) -> None:
    """Every target must hit a supported projection and none may hit another module (lm_head, ...)."""
    targets = config.target_modules
    entries = [targets] if isinstance(targets, str) else list(targets)
    for entry in entries:
        probe = PeftLoRAConfig(
            r=1, lora_alpha=1, target_modules=entry if isinstance(targets, str) else (entry,)
        )
        bad = [key for key in unsupported_keys(num_layers) if probe.targets(key)]
        if bad:
            raise AdapterLoadError(
                f"target_modules entry {entry!r} targets {bad[0]!r}, which cannot carry a LoRA here; "
                f"supported modules: {', '.join(SUPPORTED_MODULES)}",
                field="target_modules",
            )
        if not any(probe.targets(key) for key in supported_keys(num_layers)):
            raise AdapterLoadError(
                f"target_modules entry {entry!r} matches no module of a Llama-family model; "
                f"supported modules: {', '.join(SUPPORTED_MODULES)}",
                field="target_modules",
            )


def _target_modules(value: Any) -> tuple[str, ...] | str:
    if value is None:
        return DEFAULT_TARGET_MODULES
    if value == "all-linear":  # PEFT expands it to every linear layer but the output head
        return SUPPORTED_MODULES
    if isinstance(value, str):
        target_regex(value, "target_modules")
        return value
    names = _names(value, "target_modules")
    if not names:
        raise AdapterLoadError("target_modules is empty", field="target_modules")
    return names


def _names_or_regex(value: Any, field: str) -> tuple[str, ...] | str | None:
    if isinstance(value, str):
        target_regex(value, field)
        return value
    return _names(value, field)


def _layers_pattern(value: Any) -> tuple[str, ...] | None:
    names = _names(value, "layers_pattern")
    for name in names or ():
        layer_regex(name)
    return names


def _names(value: Any, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple, set)) or not all(isinstance(v, str) for v in value):
        raise AdapterLoadError(f"{field} must be a list of module names, got {value!r}", field=field)
    return tuple(sorted(value)) if isinstance(value, set) else tuple(value)


def _layers(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, int) else value
    if not isinstance(values, list) or not all(isinstance(v, int) and v >= 0 for v in values):
        raise AdapterLoadError(
            f"layers_to_transform must be layer indices, got {value!r}", field="layers_to_transform"
        )
    return tuple(values)


def _patterns(value: Any, field: str, convert: Any) -> tuple[tuple[str, Any], ...]:
    if not value:
        return ()
    if not isinstance(value, dict):
        raise AdapterLoadError(f"{field} must map module patterns to values, got {value!r}", field=field)
    if len(value) > MAX_PATTERN_ENTRIES:
        raise AdapterLoadError(
            f"{field} has {len(value)} entries; the limit is {MAX_PATTERN_ENTRIES}", field=field
        )
    for pattern in value:
        suffix_regex(pattern, field)
    return tuple((pattern, convert(v, field)) for pattern, v in value.items())


def _positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AdapterLoadError(f"{field} must be a positive integer, got {value!r}", field=field)
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AdapterLoadError(f"{field} must be a finite number, got {value!r}", field=field)
    return value
