"""One completion being generated: its tokens, KV blocks and progress."""

from __future__ import annotations

import enum
import itertools

from loraplane.inference_worker.sampling_params import SamplingParams

_seq_counter = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """The state of one completion (a request with n > 1 has n of them).

    Semantics: `token_ids` is prompt + generated tokens; `num_computed_tokens` of them have their KV in
    the cache (blocks in `block_table`); the scheduler advances it by the chunk it runs each step. A
    sequence whose `num_computed_tokens == len(self)` after a step has a new token sampled.
    `lora_version` is the adapter version (None for the base model): it is the extra key of every prefix
    cache block hash, so two adapters never share KV.
    """

    def __init__(
        self,
        token_ids: list[int],
        params: SamplingParams,
        *,
        request_id: str = "",
        index: int = 0,
        lora_version: str | None = None,
        block_size: int = 16,
    ) -> None:
        self.seq_id = next(_seq_counter)
        self.request_id = request_id
        self.index = index
        self.params = params
        self.lora_version = lora_version
        self.block_size = block_size
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(token_ids)
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_table: list[int] = []
        self.block_hashes: list[bytes] = []
        self.lora_blocked_steps = 0
        self.num_preemptions = 0
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.cumulative_logprob = 0.0
        self.output_logprobs: list[dict] = []

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    @property
    def num_blocks(self) -> int:
        return (len(self.token_ids) + self.block_size - 1) // self.block_size

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    def block_tokens(self, i: int) -> list[int]:
        return self.token_ids[i * self.block_size : (i + 1) * self.block_size]

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def reset_for_recompute(self) -> None:
        """Forget the KV state (preemption by recompute); the tokens are kept and recomputed later."""
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_table = []
        self.block_hashes = []
        self.num_preemptions += 1
