"""Which modules a PEFT LoRA config targets, and which rank/alpha pattern applies: PEFT's semantics.

`check_target_module_exists` and `get_pattern_key` are transcriptions of PEFT's helpers of the same
names (`peft.tuners.tuners_utils.check_target_module_exists`, `peft.utils.other.get_pattern_key`, peft
0.13 to 0.21), restricted to what a LoRA config that passed `parse_peft_config` can hold.

Why a transcription instead of calling peft: importing peft imports torch and transformers (seconds
and a few hundred MB), and this package must stay torch-free so the control plane can validate
adapters without them. Calling peft in the worker only would give the worker and the control plane two
matchers that could disagree on what an adapter targets. So there is one matcher, and
tests/loraplane/adapter_format/test_matching.py proves it gives peft's answers on a table of configs
(list and regex targets, dotted-suffix names, "all-linear", exclude_modules, layers_to_transform with
and without layers_pattern, rank/alpha pattern keys) over every module name of a Llama model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol


class TargetSpec(Protocol):
    """The config fields target matching reads, as `parse_peft_config` normalises them (tuples)."""

    target_modules: Sequence[str] | str
    exclude_modules: Sequence[str] | str | None
    layers_to_transform: Sequence[int] | None
    layers_pattern: Sequence[str] | None


def check_target_module_exists(config: TargetSpec, key: str) -> bool:
    """True when `config` puts a LoRA on the module named `key` ("model.layers.3.self_attn.q_proj").

    Semantics (PEFT's): an excluded module never matches (a regex string is full-matched, a list entry
    matches the key or a dotted suffix of it). A regex `target_modules` must full-match the key and
    ignores `layers_to_transform`. A list entry equal to the key matches at once; one that is a dotted
    suffix of the key matches when the layer index (the first number after `layers_pattern`, or after
    the second dotted component when none is given) is in `layers_to_transform` (all layers if unset).
    """
    if _excluded(config.exclude_modules, key):
        return False
    targets = config.target_modules
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    if key in targets:
        return True
    if not any(key.endswith(f".{target}") for target in targets):
        return False
    return _layer_selected(config.layers_to_transform, config.layers_pattern, key)


def get_pattern_key(pattern_keys: Iterable[str], key: str) -> str:
    """The first pattern (in order) that matches a dotted suffix of `key`, else `key` itself (PEFT's).

    A rank_pattern / alpha_pattern value applies to `key` when this returns one of its patterns.
    """
    for pattern in pattern_keys:
        if re.match(rf"(.*\.)?({pattern})$", key):
            return pattern
    return key


def _excluded(exclude: Sequence[str] | str | None, key: str) -> bool:
    if not exclude:
        return False
    if isinstance(exclude, str):
        return re.fullmatch(exclude, key) is not None
    return key in exclude or any(key.endswith(f".{name}") for name in exclude)


def _layer_selected(layers: Sequence[int] | None, layers_pattern: Sequence[str] | None, key: str) -> bool:
    if layers is None or len(layers) == 0:
        return True
    match = None
    if not layers_pattern:
        # The lazy .*? takes the first numbered component (the layer), not a nested one (an expert).
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        for pattern in layers_pattern:
            match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", key)
            if match is not None:
                break
    return match is not None and int(match.group("idx")) in layers
