"""FG-CLIP's training losses over the embeddings of a whole contrastive window.

Two objectives, one per model family (the model's `objective`):

"infonce" (CLIP family):

* global: symmetric InfoNCE between video embeddings and their global captions;
* region: symmetric InfoNCE between region embeddings and their region captions, over all
  regions of the window;
* hard: for each region that carries hard-negative captions (the same sentence with one detail
  changed), cross-entropy of its caption against those negatives;
* total = global_weight * global + region_weight * region + hard_weight * hard.

Identical captions (equal `fgclip.models.text.caption_key`) are not negatives of each other: for a
sample whose caption also belongs to other samples of the window, those other pairs are removed
from its softmax in both directions (video -> caption and caption -> video); the sample's own
pair stays the positive. So a window in which every caption is the same has nothing to
contrast and its loss is exactly 0 (each softmax is over one candidate), and a window of two
identical and one different caption behaves, for each duplicate, like a window of two.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class LossWeights:
    global_weight: float = 1.0
    region_weight: float = 0.1
    hard_weight: float = 0.5


@dataclass
class WindowEmbeddings:
    """Everything the losses need, for any number of samples (a micro-batch or a whole window).

    Regions are flattened over samples and keep only real regions that are visible on at least
    one frame (M of them); hard negatives are padded to K per region with `negative_valid`.
    """

    video: Tensor  # (N, D) L2-normalised
    global_text: Tensor  # (N, D)
    global_key: Tensor  # (N,) int64 caption keys
    region: Tensor  # (M, D)
    region_text: Tensor  # (M, D)
    region_key: Tensor  # (M,) int64
    negative_text: Tensor  # (M, K, D), zeros where not valid
    negative_valid: Tensor  # (M, K) bool

    # The fields that carry gradient back to the model.
    EMBEDDING_FIELDS = ("video", "global_text", "region", "region_text", "negative_text")

    def embeddings(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self.EMBEDDING_FIELDS}

    def replace(self, **changes: Tensor) -> "WindowEmbeddings":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return WindowEmbeddings(**values)

    def with_negative_slots(self, slots: int) -> "WindowEmbeddings":
        """The same embeddings with the negative axis padded to `slots` (differentiable)."""
        missing = slots - self.negative_valid.shape[1]
        if missing <= 0:
            return self
        return self.replace(
            negative_text=F.pad(self.negative_text, (0, 0, 0, missing)),
            negative_valid=F.pad(self.negative_valid, (0, missing), value=False),
        )


def concat_embeddings(parts: list[WindowEmbeddings]) -> WindowEmbeddings:
    """Samples of several micro-batches as one window (negative slots padded to the largest)."""
    slots = max(part.negative_valid.shape[1] for part in parts)
    parts = [part.with_negative_slots(slots) for part in parts]
    return WindowEmbeddings(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(WindowEmbeddings)})


def full_precision(x: Tensor) -> Tensor:
    """bf16/fp16 embeddings (autocast) in float32 for the loss; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def contrastive_loss(first: Tensor, second: Tensor, keys: Tensor, scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of row i of `first` with row i of `second`; rows with the same key are
    removed from each other's softmax (they are positives, not negatives). Mean over rows."""
    count = first.shape[0]
    if count == 0:
        return first.new_zeros(())
    logits = scale * full_precision(first) @ full_precision(second).t()
    duplicate = (keys[:, None] == keys[None, :]) & ~torch.eye(count, dtype=torch.bool, device=keys.device)
    logits = logits.masked_fill(duplicate, float("-inf"))
    targets = torch.arange(count, device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def hard_negative_loss(region: Tensor, region_text: Tensor, negative_text: Tensor, negative_valid: Tensor,
                       scale: Tensor) -> Tensor:
    """Mean over regions with at least one negative of -log softmax(caption | caption + negatives).

    Masks instead of selecting rows, so the host never waits for the GPU: a region without
    negatives has a softmax over its caption alone, a loss of exactly 0 and no gradient."""
    region = full_precision(region)
    positive = (region * full_precision(region_text)).sum(dim=-1, keepdim=True)  # (M, 1)
    negative = torch.einsum("md,mkd->mk", region, full_precision(negative_text))
    logits = scale * torch.cat([positive, negative], dim=1)
    # Mask after scaling: -inf * scale would give the temperature a NaN gradient.
    missing = F.pad(~negative_valid, (1, 0), value=False)
    logits = logits.masked_fill(missing, float("-inf"))
    per_region = F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device),
                                 reduction="none")
    has_negatives = negative_valid.any(dim=1)
    return (per_region * has_negatives).sum() / has_negatives.sum().clamp(min=1)


def sigmoid_pair_loss(first: Tensor, second: Tensor, keys: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """SigLIP's pairwise sigmoid loss of row i of `first` with every row of `second`; rows with the
    same key (row i itself included) are positives. Sum over pairs / number of rows."""
    count = first.shape[0]
    if count == 0:
        return full_precision(first).new_zeros(())
    logits = scale * full_precision(first) @ full_precision(second).t() + bias
    labels = (keys[:, None] == keys[None, :]).to(logits.dtype) * 2 - 1
    return -F.logsigmoid(labels * logits).sum() / count


def sigmoid_hard_negative_loss(region: Tensor, region_text: Tensor, negative_text: Tensor, negative_valid: Tensor,
                               scale: Tensor, bias: Tensor) -> Tensor:
    """Mean over regions with at least one negative of -(log sig(own caption) + sum log sig(-negative))."""
    has_negatives = negative_valid.any(dim=1)
    if not bool(has_negatives.any()):
        return full_precision(region).new_zeros(())
    region = full_precision(region[has_negatives])
    positive = scale * (region * full_precision(region_text[has_negatives])).sum(dim=-1) + bias  # (M',)
    negative = scale * torch.einsum("md,mkd->mk", region, full_precision(negative_text[has_negatives])) + bias
    valid = negative_valid[has_negatives].to(negative.dtype)
    per_region = -F.logsigmoid(positive) - (F.logsigmoid(-negative) * valid).sum(dim=1)
    return per_region.mean()


OBJECTIVES = ("infonce", "sigmoid")


def fgclip_losses(emb: WindowEmbeddings, temperatures: dict[str, Tensor], weights: LossWeights, *,
                  objective: str = "infonce", biases: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """{"total", "global", "region", "hard"} for one window (hard = 0 without negatives).

    `objective` "infonce" uses `temperatures` only; "sigmoid" also the per-term `biases`."""
    if objective == "infonce":
        global_loss = contrastive_loss(emb.video, emb.global_text, emb.global_key, temperatures["global"])
        region_loss = contrastive_loss(emb.region, emb.region_text, emb.region_key, temperatures["region"])
        hard_loss = hard_negative_loss(emb.region, emb.region_text, emb.negative_text, emb.negative_valid,
                                       temperatures["hard"])
    elif objective == "sigmoid":
        if not biases:
            raise ValueError("the sigmoid objective needs the model's logit biases")
        global_loss = sigmoid_pair_loss(emb.video, emb.global_text, emb.global_key, temperatures["global"], biases["global"])
        region_loss = sigmoid_pair_loss(emb.region, emb.region_text, emb.region_key, temperatures["region"], biases["region"])
        hard_loss = sigmoid_hard_negative_loss(emb.region, emb.region_text, emb.negative_text, emb.negative_valid,
                                               temperatures["hard"], biases["hard"])
    else:
        raise ValueError(f"unknown objective {objective!r}; one of {', '.join(OBJECTIVES)}")
    total = weights.global_weight * global_loss + weights.region_weight * region_loss + weights.hard_weight * hard_loss
    return {"total": total, "global": global_loss, "region": region_loss, "hard": hard_loss}
