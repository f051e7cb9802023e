"""Continuous batching: which sequences run this step and how many tokens each (pure Python).

Policy (vLLM v1's shape): running sequences first, in admission order — decodes take one token,
partially prefilled ones take a chunk of what the token budget leaves — then waiting sequences in
first-come order. A prefill chunk is at most `long_prefill_token_threshold` tokens (0: no cap), so a
long prompt leaves budget to the requests behind it and prefills over several steps while they start.
With `prefill_context_cost` w > 0 the cap is a budget of work, not tokens: a chunk of n tokens after c
computed ones costs n * (1 + w * (c + (n + 1) / 2)) (each token's linear layers, plus attention over
its context), so chunks shrink as the context grows and a step costs about the same late in a long
prefill as early on: the wait of the requests behind it stays bounded (`prefill_context_cost`).
When a decode cannot get a KV block, the most recently admitted running sequence is preempted by
recompute (its blocks freed, back to the front of the queue).

LoRA-aware admission: at most `max_loras` distinct adapter versions run at once, base requests always
mix in; a request whose adapter is still loading is skipped without holding a slot or blocking others.
Fairness: once the oldest request waiting for an adapter slot has waited `lora_starvation_steps`
steps, no other adapter's requests are admitted until it gets a slot, so busy slots drain.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loraplane.inference_worker.block_manager import BlockManager
from loraplane.inference_worker.sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_loras: int = 0
    lora_starvation_steps: int = 32
    long_prefill_token_threshold: int = 0
    prefill_context_cost: float = 0.0

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.long_prefill_token_threshold < 0:
            raise ValueError(
                f"long_prefill_token_threshold must be >= 0, got {self.long_prefill_token_threshold}"
            )
        if not (math.isfinite(self.prefill_context_cost) and self.prefill_context_cost >= 0):
            raise ValueError(f"prefill_context_cost must be finite and >= 0, got {self.prefill_context_cost}")

    def prefill_chunk_limit(self, num_computed: int) -> int:
        """The most prompt tokens one sequence computes in a step after `num_computed` tokens: the largest
        n >= 1 whose cost n * (1 + w * (num_computed + (n + 1) / 2)) fits the cap (module docstring)."""
        cap, w = self.long_prefill_token_threshold, self.prefill_context_cost
        if not cap or not w:
            return cap
        b = 1 + w * (num_computed + 0.5)  # cost(n) = (w / 2) * n**2 + b * n, increasing in n
        n = int((math.sqrt(b * b + 2 * w * cap) - b) / w)
        return max(1, min(n, cap))


# Attention over the context runs slower per flop than the linear layers' GEMMs in the CPU engine (the
# reference attention gathers the paged context and applies a mask): measured with the demo model
# (benchmarks/cpu_long_prefill_ttft.py), a 128-token chunk late in a 7,000-token prompt took ~8x the
# first, a context cost per key of ~1e-3 of a token's linear cost, 3x the ratio of their flops.
CPU_ATTENTION_FLOP_PENALTY = 3.0


def prefill_context_cost(hf_config: Any, device_type: str) -> float:
    """`SchedulerConfig.prefill_context_cost` for a model: one context token's attention flops for one
    new token over that token's linear-layer flops, times the device's attention penalty. 0 off CPU,
    where the cap stays in tokens (vLLM's long_prefill_token_threshold) until measured otherwise."""
    if device_type != "cpu":
        return 0.0
    hidden = hf_config.hidden_size
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hidden // heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    experts = getattr(hf_config, "num_experts_per_tok", None) or 1
    mlp = getattr(hf_config, "moe_intermediate_size", None) if experts > 1 else None
    mlp = mlp or hf_config.intermediate_size
    linear = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * experts * hidden * mlp
    attention = 2 * heads * head_dim  # q @ k and p @ v, per layer, per context token
    return CPU_ATTENTION_FLOP_PENALTY * attention / linear


@dataclass
class ScheduledBatch:
    """One step's work: `seqs[i]` computes `num_new_tokens[i]` tokens from `seq.num_computed_tokens`."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    # A lookahead decode step runs before the previous step's tokens reach the host: seqs[i] computes
    # the token sampled in row prev_rows[i] of that step (empty for any other step).
    prev_rows: list[int] = field(default_factory=list)

    @property
    def lookahead(self) -> bool:
        return bool(self.prev_rows)

    @property
    def is_empty(self) -> bool:
        return not self.seqs

    @property
    def is_decode(self) -> bool:
        """True when every sequence computes exactly its last token (a pure decode step)."""
        pairs = zip(self.seqs, self.num_new_tokens, strict=True)
        return all(n == 1 and s.num_computed_tokens == len(s) - 1 for s, n in pairs)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def add(self, seq: Sequence, num_new: int) -> None:
        self.seqs.append(seq)
        self.num_new_tokens.append(num_new)


def _always_ready(version: str) -> bool:
    return True


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        block_manager: BlockManager,
        is_adapter_ready: Callable[[str], bool] = _always_ready,
    ) -> None:
        self.config = config
        self.block_manager = block_manager
        self.is_adapter_ready = is_adapter_ready
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def finish(self, seq: Sequence) -> None:
        """Remove a sequence (finished or aborted) from the queues and free its blocks at once."""
        if seq in self.running:
            self.running.remove(seq)
            self.block_manager.free(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self._schedule_running(batch, self.config.max_num_batched_tokens)
        if not batch.preempted:
            self._schedule_waiting(batch, budget)
        return batch

    def lookahead(self, batch: ScheduledBatch, max_model_len: int) -> ScheduledBatch | None:
        """The decode step after `batch` for its sequences that cannot finish by length there, if the
        sampling of every one of them needs nothing from the host (no penalties, no pending min_tokens)."""
        if not batch.is_decode:
            return None
        rows = []
        for i, seq in enumerate(batch.seqs):
            params = seq.params
            if seq.is_finished:
                continue
            if params.needs_penalties or params.min_tokens > seq.num_output_tokens:
                return None
            limit = params.max_tokens or max_model_len
            if seq.num_output_tokens + 1 < limit and len(seq) + 1 < max_model_len:
                rows.append(i)
        return self.schedule_lookahead(batch, rows)

    def schedule_lookahead(self, prev: ScheduledBatch, rows: list[int]) -> ScheduledBatch | None:
        """The decode step after `prev` for `prev.seqs[i]`, i in `rows`, scheduled before `prev`'s tokens
        are known; None when that is not the next step the policy would run (requests are waiting, a
        running sequence would be left out) or when it needs a block that is not free (no preemption)."""
        seqs = [prev.seqs[i] for i in rows]
        in_prev = set(prev.seqs)
        if self.waiting or not seqs or any(not s.is_finished and s not in in_prev for s in self.running):
            return None
        bs = self.block_manager.block_size
        needed = sum(len(s.block_table) * bs < len(s) + 1 for s in seqs)
        if needed > self.block_manager.num_free_blocks:
            return None
        for seq in seqs:
            self.block_manager.append_slot(seq, len(seq) + 1)
        return ScheduledBatch(seqs, [1] * len(seqs), prev_rows=list(rows))

    def _schedule_running(self, batch: ScheduledBatch, budget: int) -> int:
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            num_new = self._chunk(seq, budget)
            if not self._make_room(seq, batch):
                break  # the sequence preempted itself
            batch.add(seq, num_new)
            budget -= num_new
            i += 1
        return budget

    def _chunk(self, seq: Sequence, budget: int) -> int:
        """Tokens `seq` computes this step: all it has left, within the budget and the prefill cap."""
        cap = self.config.prefill_chunk_limit(seq.num_computed_tokens) or budget
        return min(seq.num_uncomputed_tokens, budget, cap)

    def _make_room(self, seq: Sequence, batch: ScheduledBatch) -> bool:
        """Get blocks for all of `seq`'s tokens, preempting the newest running sequences if needed."""
        while not self.block_manager.can_append(seq):
            victim = self.running[-1]
            self._preempt(victim, batch)
            if victim is seq:
                return False
        self.block_manager.append_slot(seq)
        return True

    def _preempt(self, seq: Sequence, batch: ScheduledBatch) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.reset_for_recompute()
        self.waiting.appendleft(seq)
        batch.preempted.append(seq)
        self.num_preemptions += 1

    def _schedule_waiting(self, batch: ScheduledBatch, budget: int) -> None:
        active = {s.lora_version for s in self.running if s.lora_version is not None}
        starving = self._starving_version(active)
        admitted: list[Sequence] = []
        for seq in list(self.waiting):
            if budget <= 0 or len(self.running) >= self.config.max_num_seqs:
                break
            if not self._lora_admissible(seq, active, starving):
                continue
            if not self.block_manager.can_allocate(seq):
                break  # first-come order: nobody overtakes a request that only waits for KV blocks
            self.block_manager.allocate(seq)
            num_new = self._chunk(seq, budget)
            budget -= num_new
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            admitted.append(seq)
            batch.add(seq, num_new)
            if seq.lora_version is not None:
                active.add(seq.lora_version)
        for seq in admitted:
            self.waiting.remove(seq)

    def _lora_admissible(self, seq: Sequence, active: set[str], starving: str | None) -> bool:
        version = seq.lora_version
        if version is None or version in active and (starving is None or version == starving):
            return True
        if not self.is_adapter_ready(version):
            return False  # still loading: skip without holding a slot
        if starving is not None and version != starving:
            return False  # let busy slots drain for the starving adapter
        if version in active:
            return True
        if len(active) >= self.config.max_loras:
            seq.lora_blocked_steps += 1
            return False
        return True

    def _starving_version(self, active: set[str]) -> str | None:
        """Adapter of the oldest request kept out by full adapter slots for too long, if any."""
        for seq in self.waiting:
            blocked = seq.lora_version is not None and seq.lora_version not in active
            if blocked and seq.lora_blocked_steps > self.config.lora_starvation_steps:
                return seq.lora_version
        return None
