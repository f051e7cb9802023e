"""RMSNorm, computed in fp32 as HF Llama does (one fused Triton launch on CUDA, see kernels.fused_ops)."""

from __future__ import annotations

import torch
from torch import nn

from loraplane.kernels import fused_ops


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_ops.add_rms_norm(x, None, self.weight, self.eps)[0]

    def forward_add(
        self, x: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual add (none when `residual` is None) then norm; returns (normed, new residual).

        On CUDA `x` and `residual` are overwritten (see `fused_ops.add_rms_norm`): pass only tensors
        the caller no longer reads.
        """
        return fused_ops.add_rms_norm(x, residual, self.weight, self.eps)
