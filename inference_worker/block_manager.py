"""Paged KV cache bookkeeping with prefix caching (pure Python).

Blocks hold `block_size` tokens of KV for every layer. A full block whose KV has been computed gets a
hash chained over the previous block's hash, its tokens and the sequence's extra key (the adapter
version), and enters the prefix cache; a later sequence with the same prefix and the same extra key
reuses it. Freed blocks keep their hash and stay reusable until a fresh allocation evicts them (LRU).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from loraplane.inference_worker.sequence import Sequence


def block_hash(prev_hash: bytes | None, token_ids: list[int], extra_key: str | None) -> bytes:
    """Chained hash of one full block (prefix + tokens + extra key); 128-bit so collisions do not matter."""
    h = hashlib.blake2b(digest_size=16)
    h.update(prev_hash or b"\0")
    h.update((extra_key or "").encode())
    h.update(b"|")
    h.update(",".join(map(str, token_ids)).encode())
    return h.digest()


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None


@dataclass
class PrefixCacheStats:
    queries: int = 0
    hits: int = 0


class BlockManager:
    """Allocates KV blocks to sequences; owns the prefix cache.

    Semantics: `allocate(seq)` gives a waiting sequence blocks for all of its tokens, reusing cached
    blocks for the longest cached prefix of full blocks (never the whole sequence: at least the last
    token is recomputed to get logits) and setting `seq.num_computed_tokens` to the cached length.
    `append_slot(seq)` makes room for one more token; `cache_blocks(seq)` registers the sequence's full,
    computed blocks in the prefix cache; `free(seq)` releases them.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be > 0, got {num_blocks}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.hash_to_id: dict[bytes, int] = {}
        self.stats = PrefixCacheStats()

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_ids)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_blocks

    def _cached_prefix(self, seq: Sequence) -> tuple[list[int], list[bytes]]:
        """Block ids and hashes of the longest cached prefix (full blocks, leaving >= 1 token to compute);
        none for a request that asks for prompt logprobs (it needs the logits of every prompt position)."""
        if not self.enable_prefix_caching or seq.params.prompt_logprobs is not None:
            return [], []
        ids, hashes, prev = [], [], None
        for i in range((len(seq) - 1) // self.block_size):
            h = block_hash(prev, seq.block_tokens(i), seq.lora_version)
            block_id = self.hash_to_id.get(h)
            if block_id is None:
                break
            ids.append(block_id)
            hashes.append(h)
            prev = h
        return ids, hashes

    def can_allocate(self, seq: Sequence) -> bool:
        cached, _ = self._cached_prefix(seq)
        in_use = sum(1 for b in cached if self.blocks[b].ref_count > 0)
        return seq.num_blocks - in_use <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        assert not seq.block_table, "sequence already has blocks"
        cached, hashes = self._cached_prefix(seq)
        for block_id in cached:
            self._take(block_id)
        seq.block_table = list(cached)
        seq.block_hashes = list(hashes)
        while len(seq.block_table) < seq.num_blocks:
            seq.block_table.append(self._take_fresh())
        num_cached = len(cached) * self.block_size
        seq.num_cached_tokens = seq.num_computed_tokens = num_cached
        self.stats.queries += len(seq)
        self.stats.hits += num_cached

    def can_append(self, seq: Sequence) -> bool:
        return len(seq.block_table) * self.block_size >= len(seq) or self.num_free_blocks > 0

    def append_slot(self, seq: Sequence, num_tokens: int | None = None) -> None:
        """Make sure the sequence's blocks cover all of its tokens (a decode adds one at a time), or its
        first `num_tokens` (a lookahead step covers a token not appended yet)."""
        num_tokens = len(seq) if num_tokens is None else num_tokens
        while len(seq.block_table) * self.block_size < num_tokens:
            seq.block_table.append(self._take_fresh())

    def cache_blocks(self, seq: Sequence) -> None:
        """Register the sequence's full blocks whose KV is computed in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        num_full = min(seq.num_computed_tokens, len(seq)) // self.block_size
        for i in range(len(seq.block_hashes), num_full):
            prev = seq.block_hashes[-1] if seq.block_hashes else None
            h = block_hash(prev, seq.block_tokens(i), seq.lora_version)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if h not in self.hash_to_id and block.hash is None:
                block.hash = h
                self.hash_to_id[h] = block.block_id

    def free(self, seq: Sequence) -> None:
        # Reverse order: the tail of a sequence is the least likely to be shared, so it is evicted first.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_ids[block_id] = None
        seq.block_table = []
        seq.block_hashes = []

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_ids[block_id]
        block.ref_count += 1

    def _take_fresh(self) -> int:
        if not self.free_ids:
            raise RuntimeError("out of KV blocks (the scheduler should have preempted)")
        block_id, _ = self.free_ids.popitem(last=False)
        block = self.blocks[block_id]
        self._drop_hash(block)
        block.ref_count = 1
        return block_id

    def _drop_hash(self, block: Block) -> None:
        if block.hash is not None and self.hash_to_id.get(block.hash) == block.block_id:
            del self.hash_to_id[block.hash]
        block.hash = None
