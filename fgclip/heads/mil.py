"""Sultani et al. (CVPR 2018) MIL ranking head: each video a bag of 32 segments (features averaged
over uniform spans), scored by a small MLP (D -> 512 -> 32 -> 1, ReLU, dropout 0.6, sigmoid),
trained with `fgclip.heads.losses.ranking_loss` on pairs of an anomalous and a normal video."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

SEGMENTS = 32


@dataclass
class MILConfig:
    feature_dim: int
    hidden: int = 512
    bottleneck: int = 32
    dropout: float = 0.6
    segments: int = SEGMENTS

    def to_dict(self) -> dict:
        return asdict(self)


class MILHead(nn.Module):
    def __init__(self, config: MILConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(config.feature_dim, config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
                                 nn.Linear(config.hidden, config.bottleneck), nn.Dropout(config.dropout),
                                 nn.Linear(config.bottleneck, 1), nn.Sigmoid())

    def forward(self, features: Tensor) -> Tensor:
        """(..., D) -> (...) anomaly score per segment (or snippet)."""
        return self.net(features).squeeze(-1)

    @torch.no_grad()
    def score(self, features: Tensor) -> Tensor:
        """(T,) scores of one video's (T, D) snippets (every snippet scored; no segment averaging)."""
        return self.forward(features)
