"""Per-request sampling parameters, with vLLM's names and defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from loraplane.inference_worker.errors import InvalidRequestError

MAX_LOGPROBS = 20


_INT_FIELDS = ("n", "max_tokens", "top_k", "min_tokens", "seed", "logprobs", "prompt_logprobs")
_OPTIONAL_INT_FIELDS = frozenset({"max_tokens", "seed", "logprobs", "prompt_logprobs"})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise InvalidRequestError(f"{param}: {message}", param=param)


@dataclass
class SamplingParams:
    """How to sample one request's completions.

    Semantics (as vLLM): temperature 0 is greedy; top_k 0 or -1 is off; top_p 1 and min_p 0 are off;
    penalties follow OpenAI (presence/frequency over generated tokens) and CTRL (repetition over prompt
    and generated tokens); `stop` strings are never emitted and are found across token boundaries;
    `include_stop_str_in_output` keeps the matched stop string at the end of the text instead;
    `stop_token_ids` and EOS end a completion (EOS unless ignore_eos). `seed` makes a request's samples
    reproducible whatever else is in the batch. `logprobs=k` returns the top-k logprobs of each token plus
    the sampled one. `prompt_logprobs=k` returns, for every prompt token after the first, its logprob given
    the tokens before it plus the top-k alternatives (the first entry is None); such a request does not
    reuse prefix-cached KV, since every prompt position's logits are needed.
    """

    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    min_tokens: int = 0
    detokenize: bool = True
    include_stop_str_in_output: bool = False
    prompt_logprobs: int | None = None
    stop_strings: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stop_strings = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self._check_types()
        _check(self.n >= 1, "n", f"must be an integer >= 1, got {self.n!r}")
        _check(
            self.max_tokens is None or (isinstance(self.max_tokens, int) and self.max_tokens >= 1),
            "max_tokens",
            f"must be an integer >= 1, got {self.max_tokens!r}",
        )
        _check(self.temperature >= 0.0, "temperature", f"must be >= 0, got {self.temperature}")
        _check(0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(
            self.top_k == -1 or self.top_k >= 0,
            "top_k",
            f"must be -1 (off), 0 (off) or >= 1, got {self.top_k}",
        )
        _check(0.0 <= self.min_p <= 1.0, "min_p", f"must be in [0, 1], got {self.min_p}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _check(-2.0 <= value <= 2.0, name, f"must be in [-2, 2], got {value}")
        _check(self.repetition_penalty > 0.0, "repetition_penalty", "must be > 0")
        _check(
            self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS,
            "logprobs",
            f"must be in [0, {MAX_LOGPROBS}], got {self.logprobs}",
        )
        _check(
            self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= MAX_LOGPROBS,
            "prompt_logprobs",
            f"must be in [0, {MAX_LOGPROBS}], got {self.prompt_logprobs}",
        )
        _check(self.min_tokens >= 0, "min_tokens", f"must be >= 0, got {self.min_tokens}")
        _check(all(s for s in self.stop_strings), "stop", "stop strings must not be empty")

    def _check_types(self) -> None:
        """Integer fields hold integers (not bools, floats or strings) and stop strings are strings, so
        nothing of the wrong type reaches the step loop (where it would fail every request in the batch).
        Ranges that depend on the model are checked by `loraplane.inference_worker.request_validation`."""
        for name in _INT_FIELDS:
            value = getattr(self, name)
            optional = name in _OPTIONAL_INT_FIELDS
            _check(_is_int(value) or (optional and value is None), name, f"must be an integer, got {value!r}")
        _check(
            all(_is_int(t) for t in self.stop_token_ids),
            "stop_token_ids",
            "must be a list of integer token ids",
        )
        _check(
            all(isinstance(s, str) for s in self.stop_strings),
            "stop",
            "must be a string or a list of strings",
        )

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def needs_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0

    @property
    def effective_top_k(self) -> int:
        """top_k with both 'off' spellings (0 and -1) mapped to 0."""
        return max(self.top_k, 0)
