"""CUDA graphs for pure-decode steps, one per batch-size bucket, sharing one memory pool.

Static input buffers are sized for the largest bucket; a step copies its tensors into them and replays
the smallest bucket that fits (padding rows write no KV: slot -1). With LoRA enabled each bucket has a
second graph captured with the LoRA kernels in it; the LoRA metadata lives in preallocated tensors
(`LoRAKernelMeta`), so the graph stays valid whichever adapters are in the batch.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
from torch import nn

from loraplane.inference_worker.context import Context, set_context

if TYPE_CHECKING:
    from loraplane.inference_worker.lora import LoRAManager
    from loraplane.kernels.lora_meta import LoRAKernelMeta

logger = logging.getLogger(__name__)


def decode_buckets(max_num_seqs: int) -> list[int]:
    small = [b for b in (1, 2, 4, 8) if b < max_num_seqs]
    return small + list(range(16, max_num_seqs, 16)) + [max_num_seqs]


class CudaGraphRunner:
    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        max_num_seqs: int,
        max_blocks_per_seq: int,
        lora_manager: LoRAManager | None = None,
    ) -> None:
        self.model = model
        self.lora_manager = lora_manager
        self.buckets = sorted(set(decode_buckets(max_num_seqs)))
        self.max_bs = self.buckets[-1]
        to = dict(device=device)
        self.input_ids = torch.zeros(self.max_bs, dtype=torch.long, **to)
        self.positions = torch.zeros(self.max_bs, dtype=torch.long, **to)
        self.slot_mapping = torch.full((self.max_bs,), -1, dtype=torch.long, **to)
        self.context_lens = torch.ones(self.max_bs, dtype=torch.int32, **to)
        self.block_tables = torch.zeros(self.max_bs, max_blocks_per_seq, dtype=torch.int32, **to)
        self.graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}
        self._graph_outputs: dict[tuple[int, bool], torch.Tensor] = {}

    def bucket_for(self, batch_size: int) -> int:
        return next(b for b in self.buckets if b >= batch_size)

    def can_run(self, batch_size: int) -> bool:
        return batch_size <= self.max_bs

    def _context(self, bs: int, lora_meta: LoRAKernelMeta | None) -> Context:
        return Context(
            is_prefill=False,
            slot_mapping=self.slot_mapping[:bs],
            context_lens=self.context_lens[:bs],
            block_tables=self.block_tables[:bs],
            lora_meta=lora_meta,
        )

    @torch.inference_mode()
    def capture(self) -> None:
        started = time.monotonic()
        pool = torch.cuda.graph_pool_handle()
        variants = [False, True] if self.lora_manager is not None else [False]
        for bs in reversed(self.buckets):
            for with_lora in variants:
                meta = self._capture_meta(bs) if with_lora else None
                with set_context(self._context(bs, meta)):
                    out = self.model(self.input_ids[:bs], self.positions[:bs])  # warm-up (autotuning etc.)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool):
                        out = self.model(self.input_ids[:bs], self.positions[:bs])
                self.graphs[(bs, with_lora)] = graph
                self._graph_outputs[(bs, with_lora)] = out
        torch.cuda.synchronize()
        logger.info("captured %d CUDA graphs in %.1fs", len(self.graphs), time.monotonic() - started)

    def _capture_meta(self, bs: int) -> LoRAKernelMeta:
        meta = self.lora_manager.meta
        meta.prepare(torch.zeros(bs, dtype=torch.int32), self.lora_manager.slot_rank)
        return meta

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Replay the bucket graph for a decode batch; returns hidden states [B, hidden]."""
        batch_size = input_ids.shape[0]
        bs = self.bucket_for(batch_size)
        self.input_ids[:batch_size].copy_(input_ids)
        self.positions[:batch_size].copy_(positions)
        self.slot_mapping[:bs].fill_(-1)
        self.slot_mapping[:batch_size].copy_(ctx.slot_mapping)
        self.context_lens[:bs].fill_(1)
        self.context_lens[:batch_size].copy_(ctx.context_lens)
        width = ctx.block_tables.shape[1]
        self.block_tables[batch_size:bs].zero_()
        self.block_tables[:batch_size, :width].copy_(ctx.block_tables)
        key = (bs, ctx.lora_meta is not None)
        self.graphs[key].replay()
        return self._graph_outputs[key][:batch_size]
