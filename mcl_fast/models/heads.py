"""The MoCo projection head: pooled features (B, D) -> (B, dim), two linear layers."""
from __future__ import annotations

from torch import nn


class MLPHead(nn.Sequential):
    """D -> hidden -> ReLU -> dim (the paper's 2048x2048 and 2048x128). L2 normalisation is MoCo's job."""

    def __init__(self, in_dim: int, hidden: int = 2048, dim: int = 128):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.in_dim, self.hidden, self.dim = in_dim, hidden, dim
