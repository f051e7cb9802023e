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

User patterns run on RE2 (`google-re2`), not Python's backtracking `re`: an adapter config is untrusted
input, and a pattern such as "(.|.)*Z" would hold a core for hours under `re`. RE2 matches in time
linear in the key; patterns it cannot run (backreferences, lookarounds) or larger than
`MAX_PATTERN_LENGTH` / `MAX_PROGRAM_SIZE` are refused with an AdapterLoadError naming the field. On the
ASCII module names matched here RE2 and `re` agree on every pattern both accept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import re2

from loraplane.adapter_format.errors import AdapterLoadError

MAX_PATTERN_LENGTH = 1024  # characters of one user pattern; PEFT's own are a few dozen
MAX_PROGRAM_SIZE = 10_000  # RE2 instructions: bounds the memory and per-character work of a match
_RE2_MAX_MEM = 8 << 20


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
        return target_regex(targets, "target_modules").fullmatch(key) is not None
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
        if suffix_regex(pattern, "rank_pattern/alpha_pattern").match(key):
            return pattern
    return key


def _excluded(exclude: Sequence[str] | str | None, key: str) -> bool:
    if not exclude:
        return False
    if isinstance(exclude, str):
        return target_regex(exclude, "exclude_modules").fullmatch(key) is not None
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
            match = layer_regex(pattern).match(key)
            if match is not None:
                break
    return match is not None and int(match.group("idx")) in layers


def target_regex(pattern: str, field: str) -> Any:
    """A target_modules / exclude_modules regex string, full-matched against module names (PEFT's)."""
    return _compile(pattern, pattern, field)


def suffix_regex(pattern: str, field: str) -> Any:
    """A rank_pattern / alpha_pattern key as PEFT matches it: the pattern on a dotted suffix of the key."""
    return _compile(rf"(.*\.)?({pattern})$", pattern, field)


def layer_regex(pattern: str) -> Any:
    """A layers_pattern entry as PEFT matches it: the layer index follows `<pattern>.` in the key."""
    return _compile(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", pattern, "layers_pattern")


@functools.lru_cache(maxsize=4096)
def _compile(source: str, pattern: str, field: str) -> Any:
    """`source` (a PEFT wrapping of the user's `pattern`) compiled with RE2; AdapterLoadError(field)
    when it is too long, too large, or uses what RE2 cannot run in linear time."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise AdapterLoadError(
            f"{field} pattern of {len(pattern)} characters is too long; the limit is {MAX_PATTERN_LENGTH}",
            field=field,
        )
    try:
        compiled = re2.compile(source, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if isinstance(exc.args[0], bytes) else exc.args[0]
        raise AdapterLoadError(
            f"{field} pattern {pattern[:200]!r} is refused: {reason} (patterns run on RE2, which has no "
            "backreferences or lookarounds and bounds their size)",
            field=field,
        ) from exc
    if compiled.programsize > MAX_PROGRAM_SIZE:
        raise AdapterLoadError(
            f"{field} pattern {pattern[:200]!r} is too complex ({compiled.programsize} RE2 instructions; "
            f"the limit is {MAX_PROGRAM_SIZE}): list the module names instead",
            field=field,
        )
    return compiled


@functools.cache
def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is the caller's error, reported through the exception
    options.max_mem = _RE2_MAX_MEM
    return options
