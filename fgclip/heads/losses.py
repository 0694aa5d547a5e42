"""The heads' losses, each written from its paper's description.

Videos arrive padded to a common length: `lengths` (B,) says how many snippets of each row are
real, and every loss looks only at those.

* `topk_mil_bce` (VadCLIP's classification branch): per video the mean of its k highest snippet
  scores, k = T // 16 + 1 over the video's real length T, against its 0/1 label by binary
  cross-entropy.
* `mil_align` (VadCLIP's MIL-align): per video and class the mean of the k highest snippet-class
  similarities is the video's class logit; cross-entropy against the video's class.
* `text_separation` (VadCLIP's text term): mean |cos| between the normal class's text embedding
  and each anomaly class's, pushing them apart.
* `ranking_loss` (Sultani et al. 2018): hinge max(0, 1 - max anomalous + max normal) over pairs of
  an anomalous and a normal video, plus lambda1 x temporal smoothness (sum of squared differences
  of consecutive anomalous-video scores) and lambda2 x sparsity (sum of anomalous-video scores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

SNIPPETS_PER_K = 16  # VadCLIP: k = T // 16 + 1
SULTANI_SMOOTHNESS = 8e-5  # lambda1 of Sultani et al.
SULTANI_SPARSITY = 8e-5  # lambda2


def topk_k(lengths: Tensor) -> Tensor:
    """k per video: T // 16 + 1 of its real length."""
    return lengths // SNIPPETS_PER_K + 1


def topk_mean(values: Tensor, lengths: Tensor) -> Tensor:
    """Mean of each video's k highest values over its real snippets. values (B, T) or (B, T, C)
    -> (B,) or (B, C)."""
    squeeze = values.dim() == 2
    if squeeze:
        values = values.unsqueeze(-1)
    batch, length, _ = values.shape
    real = torch.arange(length, device=values.device)[None, :] < lengths[:, None]  # (B, T)
    masked = values.masked_fill(~real[..., None], float("-inf"))
    ordered = masked.sort(dim=1, descending=True).values
    k = topk_k(lengths).clamp(max=lengths)
    take = torch.arange(length, device=values.device)[None, :] < k[:, None]  # the first k of each row
    summed = torch.where(take[..., None], ordered, torch.zeros_like(ordered)).sum(dim=1)
    means = summed / k[:, None].to(values.dtype)
    return means.squeeze(-1) if squeeze else means


def topk_mil_bce(snippet_probabilities: Tensor, lengths: Tensor, video_labels: Tensor) -> Tensor:
    """Binary cross-entropy of each video's top-k mean snippet probability against its label (0/1)."""
    video_scores = topk_mean(snippet_probabilities, lengths).clamp(1e-7, 1 - 1e-7)
    return F.binary_cross_entropy(video_scores, video_labels.to(video_scores.dtype))


def mil_align(class_logits: Tensor, lengths: Tensor, class_targets: Tensor) -> Tensor:
    """Cross-entropy of the video-level class logits (top-k mean over time of (B, T, C) snippet-class
    logits) against each video's class index (B,)."""
    return F.cross_entropy(topk_mean(class_logits, lengths), class_targets)


def text_separation(text_embeds: Tensor, normal_index: int = 0) -> Tensor:
    """Mean |cos| between the normal class's text embedding and every anomaly class's."""
    text = F.normalize(text_embeds, dim=-1)
    others = torch.cat([text[:normal_index], text[normal_index + 1:]])
    return (others @ text[normal_index]).abs().mean()


def ranking_loss(anomalous_scores: Tensor, normal_scores: Tensor, *, smoothness: float = SULTANI_SMOOTHNESS,
                 sparsity: float = SULTANI_SPARSITY) -> Tensor:
    """Sultani's MIL ranking loss over pairs (row i of each): (P, S) segment scores of anomalous and
    normal videos -> mean over pairs of hinge + smoothness x sum (s_t - s_t+1)^2 + sparsity x sum s_t
    (the two terms on the anomalous bag only)."""
    hinge = F.relu(1.0 - anomalous_scores.max(dim=1).values + normal_scores.max(dim=1).values)
    smooth = (anomalous_scores[:, 1:] - anomalous_scores[:, :-1]).pow(2).sum(dim=1)
    sparse = anomalous_scores.sum(dim=1)
    return (hinge + smoothness * smooth + sparsity * sparse).mean()
