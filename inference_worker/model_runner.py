"""ModelRunner: the only code that turns scheduled sequences into tensors and runs the model.

Per step: build input ids, positions, the KV slot mapping and block tables into one Context (plus
the per-token LoRA slots when adapters are in the batch), run the model (a captured CUDA graph for
pure decode steps on GPU), compute logits only for sequences that complete this step, and sample.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from loraplane.inference_worker.config import EngineConfig
from loraplane.inference_worker.context import Context, set_context
from loraplane.inference_worker.cuda_graphs import CudaGraphRunner
from loraplane.inference_worker.errors import ModelLoadError
from loraplane.inference_worker.layers.attention import Attention
from loraplane.inference_worker.layers.batch_invariant import prepare_model as prepare_batch_invariant
from loraplane.inference_worker.layers.sampler import PendingSample, Sampler, SampleResult
from loraplane.inference_worker.models.llama import head_dim_of
from loraplane.inference_worker.prompt_logprobs import (
    PromptLogprobs,
    compute_prompt_logprobs,
    prompt_logprob_spans,
)
from loraplane.inference_worker.scheduler import ScheduledBatch
from loraplane.inference_worker.sequence import Sequence
from loraplane.kernels.dispatch import batch_invariant_mode

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from loraplane.inference_worker.lora import LoRAManager
    from loraplane.kernels.lora_meta import LoRAKernelMeta

logger = logging.getLogger(__name__)


@dataclass
class InFlightStep:
    """A launched step: its batch, the sequences it samples for, and their samples still on the device."""

    batch: ScheduledBatch
    sample_seqs: list[Sequence]
    sample: PendingSample | None
    prompt_logprobs: list[PromptLogprobs]


class ModelRunner:
    def __init__(
        self,
        config: EngineConfig,
        hf_config: PretrainedConfig,
        model: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        max_model_len: int,
        eos_token_ids: set[int],
        lora_manager: LoRAManager | None = None,
    ) -> None:
        self.config = config
        self.hf_config = hf_config
        self.model = model
        self.device = device
        self.dtype = dtype
        self.block_size = config.block_size
        self.max_model_len = max_model_len
        self.max_blocks_per_seq = -(-max_model_len // self.block_size)
        self.lora_manager = lora_manager
        self.sampler = Sampler(eos_token_ids)
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.seq_generators: dict[int, torch.Generator] = {}
        self.attn_layers = [m for m in model.modules() if isinstance(m, Attention)]
        self.kv_cache: torch.Tensor | None = None
        self.graphs: CudaGraphRunner | None = None
        if config.batch_invariant:
            prepare_batch_invariant(model, device)

    # ---- KV cache -------------------------------------------------------------------------------
    def block_bytes(self) -> int:
        c = self.hf_config
        per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim_of(c)
        return per_token * self.block_size * torch.empty(0, dtype=self.dtype).element_size()

    def num_blocks_to_allocate(self, max_num_batched_tokens: int) -> int:
        """KV blocks to allocate: the first of `num_kv_blocks`, `kv_cache_memory` bytes, `cpu_kv_cache_gb`
        (CPU), the memory left under `gpu_memory_utilization` (CUDA), or on CPU room for `max_num_seqs` (at
        most 4) sequences of `max_model_len` tokens (`EngineConfig.kv_cache_tokens`). A byte budget never buys
        more blocks than `max_num_seqs` full sequences can use, and must hold one full sequence."""
        config = self.config
        if config.num_kv_blocks is not None:
            return config.num_kv_blocks
        useful = config.max_num_seqs * self.max_blocks_per_seq
        if config.kv_cache_memory is not None:
            budget, source = config.kv_cache_memory, "kv_cache_memory"
        elif self.device.type != "cuda" and config.cpu_kv_cache_gb is not None:
            budget, source = int(config.cpu_kv_cache_gb * 2**30), "cpu_kv_cache_gb"
        elif self.device.type == "cuda":
            budget, source = self._cuda_free_bytes(max_num_batched_tokens), "gpu_memory_utilization"
        else:
            tokens = config.kv_cache_tokens(self.max_model_len)
            logger.info(
                "KV cache sized for %d sequences of max_model_len=%d tokens, shared by up to %d running "
                "(set --kv-cache-memory-bytes or --max-model-len to change it)",
                tokens // self.max_model_len,
                self.max_model_len,
                config.max_num_seqs,
            )
            return -(-tokens // self.block_size)
        return min(useful, self._blocks_within(budget, source))

    def _blocks_within(self, budget: int, source: str) -> int:
        """Blocks that fit in `budget` bytes; ModelLoadError when not even one `max_model_len` sequence fits
        (vLLM refuses to start then too: every admitted request must be able to reach its limit)."""
        blocks = max(0, budget) // self.block_bytes()
        if blocks < self.max_blocks_per_seq:
            need = self.max_blocks_per_seq * self.block_bytes()
            fits = blocks * self.block_size
            raise ModelLoadError(
                f"{source}: the KV cache gets {max(0, budget) / 2**20:.1f} MiB, but one sequence of "
                f"max_model_len={self.max_model_len} tokens needs {need / 2**20:.1f} MiB; give more memory "
                f"or lower max_model_len to at most {fits}"
            )
        return blocks

    def _cuda_free_bytes(self, num_tokens: int) -> int:
        """Bytes left for KV after a warm-up forward of `num_tokens` tokens (keeping its activation peak)."""
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        lengths = [min(num_tokens - i, self.max_model_len) for i in range(0, num_tokens, self.max_model_len)]
        cu = torch.tensor(
            [0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=self.device
        )
        ids = torch.zeros(num_tokens, dtype=torch.long, device=self.device)
        positions = torch.cat([torch.arange(n, device=self.device) for n in lengths])
        with set_context(Context(is_prefill=True, cu_seqlens_q=cu)):
            self.model.compute_logits(self.model(ids, positions)[cu[1:] - 1])
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
        peak_extra = stats["allocated_bytes.all.peak"] - stats["allocated_bytes.all.current"]
        used = total - free
        return int(total * self.config.gpu_memory_utilization - used - peak_extra)

    def allocate_kv_cache(self, num_blocks: int) -> None:
        c = self.hf_config
        shape = (2, c.num_hidden_layers, num_blocks, self.block_size, c.num_key_value_heads, head_dim_of(c))
        self.kv_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        for i, layer in enumerate(self.attn_layers):
            layer.k_cache, layer.v_cache = self.kv_cache[0, i], self.kv_cache[1, i]
        logger.info(
            "KV cache: %d blocks of %d tokens (%.2f GiB)",
            num_blocks,
            self.block_size,
            self.kv_cache.numel() * self.kv_cache.element_size() / 2**30,
        )

    def capture_cuda_graphs(self) -> None:
        if self.device.type != "cuda" or self.config.enforce_eager:
            return
        self.graphs = CudaGraphRunner(
            self.model, self.device, self.config.max_num_seqs, self.max_blocks_per_seq, self.lora_manager
        )
        with batch_invariant_mode(self.config.batch_invariant):  # the kernels the replays will run
            self.graphs.capture()

    # ---- one step -------------------------------------------------------------------------------
    def execute(
        self, batch: ScheduledBatch
    ) -> tuple[list[Sequence], SampleResult | None, list[PromptLogprobs]]:
        """Run one scheduled batch; returns the sequences that got a new token, the samples, and the
        prompt logprobs this step scored (prefill chunks of requests that ask for them)."""
        return self.finish(self.launch(batch))

    def launch(self, batch: ScheduledBatch, prev: InFlightStep | None = None) -> InFlightStep:
        """Queue one batch's model run and sampling on the device without waiting for it (the ops in
        their batch-invariant forms when configured so).

        A lookahead batch (`batch.lookahead`) continues `prev`, whose tokens are not on the host yet: its
        input ids are `prev`'s sampled tokens, taken on the device.
        """
        with batch_invariant_mode(self.config.batch_invariant):
            return self._launch(batch, prev)

    @torch.inference_mode()
    def _launch(self, batch: ScheduledBatch, prev: InFlightStep | None = None) -> InFlightStep:
        is_decode = batch.is_decode
        spans = [] if is_decode else prompt_logprob_spans(batch.seqs, batch.num_new_tokens)
        input_ids, positions, ctx, logits_rows, sample_seqs = self._prepare(batch, is_decode, prev)
        use_graph = is_decode and self.graphs is not None and self.graphs.can_run(len(batch.seqs))
        num_tokens = self.graphs.bucket_for(len(batch.seqs)) if use_graph else len(input_ids)
        ctx.lora_meta = self._lora_meta(batch, num_tokens)
        if use_graph:
            hidden = self.graphs.run(input_ids, positions, ctx)
        else:
            with set_context(ctx):
                hidden = self.model(input_ids, positions)
        prompt_logprobs = compute_prompt_logprobs(self.model, hidden, spans) if spans else []
        if not sample_seqs:
            return InFlightStep(batch, [], None, prompt_logprobs)
        if logits_rows is not None and len(sample_seqs) < hidden.shape[0]:
            hidden = hidden[logits_rows]  # else every row is sampled, in order
        logits = self.model.compute_logits(hidden)
        sample = self.sampler.launch(logits, sample_seqs, [self._generator(s) for s in sample_seqs])
        return InFlightStep(batch, sample_seqs, sample, prompt_logprobs)

    def finish(self, step: InFlightStep) -> tuple[list[Sequence], SampleResult | None, list[PromptLogprobs]]:
        """Wait for a launched step's samples (only that step: later queued work keeps running)."""
        result = step.sample.result() if step.sample is not None else None
        return step.sample_seqs, result, step.prompt_logprobs

    def _prepare(self, batch: ScheduledBatch, is_decode: bool, prev: InFlightStep | None = None):
        """Host lists -> this step's tensors: two host-to-device copies (int64 and int32), no syncs."""
        if is_decode:
            return self._prepare_decode(batch, prev)
        ids, positions, slots, cu, seq_lens, rows, sample_seqs = [], [], [], [0], [], [], []
        bs = self.block_size
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens, strict=False):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + num_new
            ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            cu.append(cu[-1] + num_new)
            seq_lens.append(end)
            if end == len(seq):
                rows.append(cu[-1] - 1)
                sample_seqs.append(seq)
        num_tokens = len(ids)
        longs = self._to_device(ids + positions + slots + rows, torch.long)
        seq_lens_t, cu_t, tables = self._ints_and_tables(batch.seqs, seq_lens, cu)
        ctx = Context(
            is_prefill=True,
            slot_mapping=longs[2 * num_tokens : 3 * num_tokens],
            block_tables=tables,
            cu_seqlens_q=cu_t,
            seq_lens=seq_lens_t,
            max_seqlen_q=max(batch.num_new_tokens),
        )
        input_ids, positions = longs[:num_tokens], longs[num_tokens : 2 * num_tokens]
        return input_ids, positions, ctx, longs[3 * num_tokens :], sample_seqs

    def _prepare_decode(self, batch: ScheduledBatch, prev: InFlightStep | None = None):
        """A pure decode step: one token per sequence (its last), every row sampled in order. A lookahead
        step runs each sequence's token still in flight in `prev` (at position `len(seq)`)."""
        seqs, bs = batch.seqs, self.block_size
        ahead = 1 if batch.lookahead else 0
        seq_lens = [len(s) + ahead for s in seqs]
        positions = [n - 1 for n in seq_lens]
        ids = [0] * len(seqs) if ahead else [s.token_ids[-1] for s in seqs]
        slots = [s.block_table[p // bs] * bs + p % bs for s, p in zip(seqs, positions, strict=False)]
        n = len(seqs)
        longs = self._to_device(ids + positions + slots, torch.long)
        if ahead:
            rows = batch.prev_rows
            tokens = prev.sample.tokens
            same = rows == list(range(tokens.shape[0]))
            longs[:n] = tokens if same else tokens[self._to_device(rows, torch.long)]
        seq_lens_t, cu_t, tables = self._ints_and_tables(seqs, seq_lens, list(range(n + 1)))
        ctx = Context(
            is_prefill=False,
            slot_mapping=longs[2 * n :],
            block_tables=tables,
            context_lens=seq_lens_t,
            cu_seqlens_q=cu_t,
            seq_lens=seq_lens_t,
            max_seqlen_q=1,
        )
        return longs[:n], longs[n : 2 * n], ctx, None, seqs

    def _ints_and_tables(self, seqs: list[Sequence], *segments: list[int]) -> list[torch.Tensor]:
        """One int32 transfer: each segment, then the padded block tables [B, max_blocks]; every part
        starts 16-byte aligned (what Triton specializes its pointer arguments on)."""
        width = max(len(s.block_table) for s in seqs)
        flat: list[int] = []
        bounds = []
        for segment in segments:
            bounds.append((len(flat), len(segment)))
            flat.extend(segment)
            flat.extend([0] * (-len(flat) % 4))
        start = len(flat)
        for s in seqs:
            flat.extend(s.block_table)
            flat.extend([0] * (width - len(s.block_table)))
        values = self._to_device(flat, torch.int32)
        parts = [values[offset : offset + size] for offset, size in bounds]
        return [*parts, values[start:].view(len(seqs), width)]

    def _to_device(self, values: list[int], dtype: torch.dtype) -> torch.Tensor:
        if self.device.type == "cpu":
            return torch.tensor(values, dtype=dtype)
        host = torch.tensor(values, dtype=dtype, pin_memory=True)
        return host.to(self.device, non_blocking=True)

    def _lora_meta(self, batch: ScheduledBatch, num_tokens: int) -> LoRAKernelMeta | None:
        """Per-token adapter slots for this step (None when no sequence has an adapter)."""
        if self.lora_manager is None:
            return None
        versions = {s.lora_version for s in batch.seqs if s.lora_version is not None}
        if not versions:
            return None
        slot_of = self.lora_manager.activate(versions)
        slots: list[int] = []
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens, strict=False):
            slots.extend([slot_of[seq.lora_version] if seq.lora_version else -1] * num_new)
        slots.extend([-1] * (num_tokens - len(slots)))  # padding rows: no adapter
        token_slots = torch.tensor(slots, dtype=torch.int32)
        meta = self.lora_manager.meta
        meta.prepare(token_slots, self.lora_manager.slot_rank)
        return meta

    def _generator(self, seq: Sequence) -> torch.Generator:
        seed = seq.params.seed
        if seed is None:
            return self.generator
        gen = self.seq_generators.get(seq.seq_id)
        if gen is None:
            gen = torch.Generator(device=self.device).manual_seed(choice_seed(seed, seq.index))
            self.seq_generators[seq.seq_id] = gen
        return gen

    def release(self, seq: Sequence) -> None:
        self.seq_generators.pop(seq.seq_id, None)


def choice_seed(seed: int, index: int) -> int:
    """The generator seed of choice `index` of a request seeded with `seed`: a hash of the pair, so
    the choices of one request draw independent streams and never replay another request's seed
    (`seed + index` would make choice 1 of seed s the same as choice 0 of seed s + 1)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
