"""Token embedding and LM head (optionally tied to the embedding)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from loraplane.inference_worker.layers.cpu_layout import packed_linear
from loraplane.kernels import gemm


class VocabEmbedding(nn.Module):
    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size), requires_grad=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)


class LMHead(nn.Module):
    """Logits of the given hidden states. Shape: [N, hidden] -> [N, vocab] (fp32)."""

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size), requires_grad=False)
        self.packed_weight: torch.Tensor | None = None  # set on CPU by layers.cpu_layout

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.packed_weight is not None:
            return packed_linear(hidden, self.packed_weight, None).float()
        return gemm.linear(hidden, self.weight).float()
