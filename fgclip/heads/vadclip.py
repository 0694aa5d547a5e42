"""A VadCLIP-style head (Wu et al., AAAI 2024), written from the paper's description.

Snippet features X (B, T, D) of a frozen (or our fine-tuned) image tower:

1. learnable position embedding added to X;
2. local temporal module: transformer layers whose attention stays inside windows of `window`
   consecutive snippets (8 for UCF-Crime, 64 for XD-Violence);
3. global module: a graph layer over two adjacencies, feature similarity (cosine, values under
   `similarity_threshold` dropped, row softmax) and distance (exp(-|i - j| / sigma), rows
   normalised); the two branches' outputs (LayerNorm, GELU) concatenated, added as a residual;
4. classification branch: feed-forward with a skip, then a linear layer and a sigmoid: the
   snippet's anomaly probability (the score evaluation reads);
5. vision-language branch: class prompts with learnable context through the model's own frozen
   text tower (`LearnablePromptText`); an anomaly-focused visual prompt, the anomaly-weighted mean of
   the video's snippets, added to every class embedding through a feed-forward with a skip; the
   snippet-class similarities (cosine / temperature) feed MIL-align.

Padding: rows of a batch are padded to a common length; `lengths` (B,) says how many snippets are
real; attention, the graph and the visual prompt never look at padding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIMILARITY_TEMPERATURE = 0.07  # VadCLIP's (CLIP's initial) 1/logit scale for the class similarities


@dataclass
class VadCLIPConfig:
    feature_dim: int
    num_classes: int  # normal first
    max_snippets: int = 256  # position rows = training clip length; longer test videos go in chunks
    window: int = 8
    local_layers: int = 2
    heads: int = 8
    similarity_threshold: float = 0.7
    distance_sigma: float = 1.0
    prompt_prefix: int = 10
    prompt_postfix: int = 10
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def padding_mask(lengths: Tensor, length: int) -> Tensor:
    """(B, T) True at real snippets."""
    return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]


def window_attention_mask(length: int, window: int, device) -> Tensor:
    """(T, T) True where attention is BLOCKED: query and key in different windows."""
    index = torch.arange(length, device=device) // window
    return index[:, None] != index[None, :]


def similarity_adjacency(features: Tensor, real: Tensor, threshold: float) -> Tensor:
    """(B, T, T): cosine similarity, entries under `threshold` dropped, softmax over real keys."""
    unit = F.normalize(features, dim=-1)
    cosine = unit @ unit.transpose(1, 2)
    cosine = torch.where(cosine > threshold, cosine, torch.zeros_like(cosine))
    cosine = cosine.masked_fill(~real[:, None, :], float("-inf"))
    return torch.softmax(cosine, dim=-1)


def distance_adjacency(real: Tensor, sigma: float) -> Tensor:
    """(B, T, T): exp(-|i - j| / sigma) over real keys, rows summing to 1."""
    length = real.shape[1]
    position = torch.arange(length, device=real.device, dtype=torch.float32)
    weights = torch.exp(-(position[:, None] - position[None, :]).abs() / sigma)[None] * real[:, None, :]
    return weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)


class GlobalGraph(nn.Module):
    """One graph layer on both adjacencies, each branch to half the width, concatenated."""

    def __init__(self, dim: int, threshold: float, sigma: float) -> None:
        super().__init__()
        half = dim // 2
        self.similarity = nn.Linear(dim, half, bias=False)
        self.distance = nn.Linear(dim, dim - half, bias=False)
        self.norms = nn.ModuleList([nn.LayerNorm(half), nn.LayerNorm(dim - half)])
        self.threshold, self.sigma = threshold, sigma

    def forward(self, features: Tensor, real: Tensor) -> Tensor:
        by_similarity = similarity_adjacency(features, real, self.threshold) @ self.similarity(features)
        by_distance = distance_adjacency(real, self.sigma).to(features.dtype) @ self.distance(features)
        return F.gelu(torch.cat([self.norms[0](by_similarity), self.norms[1](by_distance)], dim=-1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * 2), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim * 2, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


@dataclass
class VadCLIPOutput:
    probabilities: Tensor  # (B, T) snippet anomaly probability (classification branch)
    class_logits: Tensor | None  # (B, T, C) snippet-class similarity / temperature (vision-language branch)
    text_embeds: Tensor | None  # (C, D) the class prompts' embeddings before the visual prompt


class VadCLIPHead(nn.Module):
    def __init__(self, config: VadCLIPConfig, prompt_text: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        dim = config.feature_dim
        self.positions = nn.Embedding(config.max_snippets, dim)
        nn.init.normal_(self.positions.weight, std=0.01)
        layer = nn.TransformerEncoderLayer(dim, config.heads, dim_feedforward=dim * 2, dropout=config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.local = nn.TransformerEncoder(layer, config.local_layers, enable_nested_tensor=False)
        self.graph = GlobalGraph(dim, config.similarity_threshold, config.distance_sigma)
        self.classifier = nn.Sequential(FeedForward(dim, config.dropout), nn.Linear(dim, 1))
        self.visual_prompt = FeedForward(dim, config.dropout)
        self.prompt_text = prompt_text  # None: classification branch only

    def temporal(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Position embedding, local windowed transformer, global graph: (B, T, D) and the (B, T) real mask."""
        batch, length, _ = features.shape
        if length > self.config.max_snippets:
            raise ValueError(f"{length} snippets exceed the head's {self.config.max_snippets} positions (score in chunks)")
        real = padding_mask(lengths, length)
        x = features + self.positions.weight[:length][None]
        blocked = window_attention_mask(length, self.config.window, features.device)[None] | ~real[:, None, :]
        # a padded query would see no key at all; every snippet may see itself, so softmax stays finite
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=features.device)[None]
        x = self.local(x, mask=blocked.repeat_interleave(self.config.heads, dim=0))
        return x + self.graph(x, real), real

    def anomaly_probabilities(self, x: Tensor, real: Tensor) -> Tensor:
        return torch.sigmoid(self.classifier(x).squeeze(-1)) * real

    def forward(self, features: Tensor, lengths: Tensor) -> VadCLIPOutput:
        x, real = self.temporal(features, lengths)
        probabilities = self.anomaly_probabilities(x, real)
        if self.prompt_text is None:
            return VadCLIPOutput(probabilities, None, None)
        text = self.prompt_text()  # (C, D), normalised
        weights = probabilities / probabilities.sum(dim=1, keepdim=True).clamp_min(1e-6)
        visual = F.normalize(torch.einsum("bt,btd->bd", weights, x), dim=-1)  # the anomaly-focused prompt
        classes = self.visual_prompt(text[None] + visual[:, None])  # (B, C, D)
        logits = torch.einsum("btd,bcd->btc", F.normalize(x, dim=-1), F.normalize(classes, dim=-1))
        return VadCLIPOutput(probabilities, logits / SIMILARITY_TEMPERATURE, text)

    @torch.no_grad()
    def score(self, features: Tensor) -> Tensor:
        """(T,) anomaly probabilities of one video's (T, D) features, in chunks of the head's positions
        (the classification branch: the text tower is not needed to score)."""
        parts = []
        for start in range(0, features.shape[0], self.config.max_snippets):
            piece = features[start:start + self.config.max_snippets][None]
            x, real = self.temporal(piece, torch.tensor([piece.shape[1]], device=features.device))
            parts.append(self.anomaly_probabilities(x, real)[0])
        return torch.cat(parts)
