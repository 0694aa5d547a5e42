"""Whole-window contrastive gradients at the memory of one micro-batch (gradient caching).

With 2 videos per micro-batch the global loss has a single negative; accumulating gradients
over micro-batches does not add negatives. Here the loss sees every sample of the optimizer
step's window (micro-batch x accumulation steps x ranks), exactly:

1. embed every micro-batch's video without a graph (activation memory of one micro-batch),
   except the last one, whose graph is kept for step 3 (so it is not computed twice);
2. embed the whole window's texts with a graph, in one text-tower pass per kind (captions are
   a few hundred short sequences: their activations are small, so keeping them is cheaper than
   computing them twice, and one pass launches far fewer kernels than one per micro-batch and
   pass); gather the window's embeddings from all ranks, compute the loss once and back-propagate
   it: into the text tower directly, and into the cached video embeddings (every rank computes
   the same full loss);
3. back-propagate the cached embedding gradients: through the kept graph of the last
   micro-batch, then through each other micro-batch's video re-run with a graph. This
   accumulates exactly d(window loss)/d(parameters) into `.grad`.

Cost: one extra forward pass of the vision tower for all micro-batches but one (none for a
window of one micro-batch); the peak memory stays that of one micro-batch's graph, plus the
texts' small one. It relies on a deterministic forward (the
model has no dropout). The temperatures (and the sigmoid family's biases) receive their gradient
directly from step 2 (on rank 0 only, so that the gradient sum of
`distributed.all_reduce_gradients` counts it once). Nothing here depends on the loss's form: any
loss of the whole window's embeddings (InfoNCE or sigmoid, `model.objective`) gets its exact
gradient.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import Tensor

from fgclip import distributed
from fgclip.train.batch import MicroBatch
from fgclip.models.families import VideoModel
from fgclip.train.losses import LossWeights, WindowEmbeddings, concat_embeddings, fgclip_losses, full_precision
from fgclip.models.region_index import MicroBatchIndex, window_indices


@dataclass(frozen=True)
class VideoPart:
    """A micro-batch's vision-side embeddings: one per video, one per visible region."""

    video: Tensor  # (B, D)
    region: Tensor  # (M, D), the regions of `MicroBatchIndex.visible_regions`


@dataclass(frozen=True)
class TextPart:
    """A micro-batch's text-side embeddings, row for row with its `VideoPart`."""

    global_text: Tensor  # (B, D)
    region_text: Tensor  # (M, D)
    negative_text: Tensor  # (M, K, D), zeros where a negative slot is empty


def embed_video(model: VideoModel, batch: MicroBatch, index: MicroBatchIndex) -> VideoPart:
    """The micro-batch's video and visible-region embeddings (the vision tower's part)."""
    video = model.encode_video(batch["pixels"], batch["boxes"], batch["box_mask"], index.boxes)
    return VideoPart(video=video.video_embeds, region=video.region_embeds.flatten(0, 1)[index.visible_regions])


def join_text_ids(ids: Sequence[Tensor], *, full_length: bool) -> Tensor:
    """Token-id blocks (N_i, L_i) as one (sum N_i, max L_i) block for one text-tower pass.

    The loader cuts CLIP ids after each micro-batch's longest caption, so widths differ; a
    narrower block is widened by repeating each row's last id (an end token or padding). A CLIP
    tower is causal and pools at the first end token, so that cannot change an embedding. A
    full-length family (SigLIP 2 pools the last position, no causal mask) always has one width."""
    width = max(block.shape[1] for block in ids)
    if full_length and any(block.shape[1] != width for block in ids):
        raise ValueError(f"full-length text ids of different widths {sorted({b.shape[1] for b in ids})}: "
                         f"this family's captions must all be padded to their kind's full length")
    return torch.cat([block if block.shape[1] == width else torch.cat(
        [block, block[:, -1:].expand(-1, width - block.shape[1])], dim=1) for block in ids])


def embed_texts(model: VideoModel, batches: Sequence[MicroBatch], indices: Sequence[MicroBatchIndex]) -> list[TextPart]:
    """The text embeddings of several micro-batches, in two text-tower passes (long captions;
    region captions with their hard negatives), split back per micro-batch."""
    full_length = model.text_rules.full_length
    global_ids = [batch["global_ids"] for batch in batches]
    global_text = model.encode_text(join_text_ids(global_ids, full_length=full_length), "long")
    region_ids = [batch["region_ids"].flatten(0, 1)[index.visible_regions] for batch, index in zip(batches, indices)]
    negative_ids = [batch["negative_ids"].flatten(0, 2)[index.negative_rows] for batch, index in zip(batches, indices)]
    short_blocks = [ids for ids in (*region_ids, *negative_ids) if ids.shape[0]]
    dim = global_text.shape[1]
    if short_blocks:
        short_text = model.encode_text(join_text_ids(short_blocks, full_length=full_length), "box")
    else:
        short_text = global_text.new_zeros((0, dim))
    counts = [ids.shape[0] for ids in (*region_ids, *negative_ids)]
    short_parts = short_text.split(counts)
    global_parts = global_text.split([ids.shape[0] for ids in global_ids])
    parts = []
    for number, (batch, index) in enumerate(zip(batches, indices)):
        regions, slots = region_ids[number].shape[0], batch["negative_valid"].shape[2]
        negative_text = short_text.new_zeros((regions * slots, dim))
        if index.negative_count:
            negative_text = negative_text.index_copy(0, index.negative_places, short_parts[len(batches) + number])
        parts.append(TextPart(global_text=global_parts[number], region_text=short_parts[number],
                              negative_text=negative_text.view(regions, slots, dim)))
    return parts


def window_part(batch: MicroBatch, index: MicroBatchIndex, video: VideoPart, text: TextPart) -> WindowEmbeddings:
    """One micro-batch's share of the window: its embeddings (at least float32, as the losses take
    them) with the keys and masks of the batch."""
    visible = index.visible_regions
    return WindowEmbeddings(
        video=full_precision(video.video),
        global_text=full_precision(text.global_text),
        global_key=batch["global_key"],
        region=full_precision(video.region),
        region_text=full_precision(text.region_text),
        region_key=batch["region_key"].flatten(0, 1)[visible],
        negative_text=full_precision(text.negative_text),
        negative_valid=batch["negative_valid"].to(torch.bool).flatten(0, 1)[visible],  # (M, K)
    )


def embed_micro_batch(model: VideoModel, batch: MicroBatch, index: MicroBatchIndex | None = None) -> WindowEmbeddings:
    """A loader micro-batch (`fgclip.train.batch.MicroBatch`) -> all its embeddings, in one pass with graph
    (the plain computation that `grad_cached_window` is exact against).

    `index` (from `window_indices`) says which regions and negatives are real; without it they
    are planned here, which makes the host wait for the GPU once."""
    if index is None:
        index = window_indices([batch])[0]
    return window_part(batch, index, embed_video(model, batch, index), embed_texts(model, [batch], [index])[0])


def gather_window(local: WindowEmbeddings) -> WindowEmbeddings:
    """All ranks' samples in rank order; gradient flows only to this rank's part."""
    if not distributed.is_distributed():
        return local
    device = local.video.device
    local = local.with_negative_slots(distributed.all_reduce_max(local.negative_valid.shape[1], device))
    gathered = {name: distributed.gather_rows_with_local_grad(value) for name, value in local.embeddings().items()}
    for key in ("global_key", "region_key"):
        gathered[key] = distributed.gather_rows_with_local_grad(getattr(local, key))
    # Bool tensors travel as uint8 (NCCL has no bool all-gather).
    gathered["negative_valid"] = distributed.gather_rows_with_local_grad(local.negative_valid.to(torch.uint8)).bool()
    return WindowEmbeddings(**gathered)


def _detached_leaves(part: VideoPart) -> VideoPart:
    """A copy (at least float32) whose tensors are leaves that collect the loss gradient."""
    return VideoPart(**{f.name: full_precision(getattr(part, f.name).detach()).requires_grad_(True)
                        for f in fields(VideoPart)})


def window_losses(model: VideoModel, window: WindowEmbeddings, weights: LossWeights, *,
                  trainable: bool = True) -> dict[str, Tensor]:
    """The model family's losses of a window, with its scales (and biases) as the model holds them;
    `trainable=False` detaches them (ranks other than 0 in `grad_cached_window`)."""
    temperatures, biases = model.temperatures(), model.logit_biases()
    if not trainable:
        temperatures = {name: value.detach() for name, value in temperatures.items()}
        biases = {name: value.detach() for name, value in biases.items()}
    return fgclip_losses(window, temperatures, weights, objective=model.objective, biases=biases)


def grad_cached_window(model: VideoModel, micro_batches: list[MicroBatch], weights: LossWeights, *,
                       autocast: contextlib.AbstractContextManager | None = None) -> dict[str, float]:
    """Accumulate one optimizer step's gradients into `.grad` with the loss over the whole window.

    `autocast` (e.g. `torch.autocast("cuda", dtype=torch.bfloat16)`) wraps every forward pass and
    is entered once per micro-batch and pass, so it must be re-enterable (torch.autocast is).
    Returns the window's losses as 0-d device tensors (identical on every rank): reading them
    makes the host wait for the step, so read them after launching the optimizer. Under torch.distributed, call
    `distributed.all_reduce_gradients(model)` afterwards: the sum over ranks is the exact gradient.
    """
    if not micro_batches:
        raise ValueError("grad_cached_window needs at least one micro-batch")
    amp = autocast if autocast is not None else contextlib.nullcontext()

    # Which rows are real, for every micro-batch and both passes: the host's one wait of the window.
    indices = window_indices(micro_batches)

    # 1. Video embeddings of the whole window: without graph, but the last micro-batch's graph is
    #    kept (step 3 would only recompute it; the graph of one micro-batch is what step 3 needs anyway).
    cached: list[VideoPart] = []
    with torch.no_grad():
        for batch, index in zip(micro_batches[:-1], indices[:-1]):
            with amp:
                cached.append(_detached_leaves(embed_video(model, batch, index)))
    with amp:
        kept_video = embed_video(model, micro_batches[-1], indices[-1])
    cached.append(_detached_leaves(kept_video))

    # 2. The window's texts with graph; the loss over all ranks' samples, back-propagated into the
    #    text tower and into this rank's cached video embeddings.
    with amp:
        texts = embed_texts(model, micro_batches, indices)
    parts = [window_part(batch, index, video, text) for batch, index, video, text in zip(micro_batches, indices, cached, texts)]
    window = gather_window(concat_embeddings(parts))
    losses = window_losses(model, window, weights, trainable=distributed.rank() == 0)
    losses["total"].backward()

    # 3. The cached embedding gradients, back-propagated through the vision tower: the kept graph
    #    first (freeing it), then each other micro-batch's video again, with graph.
    _backward_cached(kept_video, cached[-1])
    for batch, index, leaves in zip(micro_batches[:-1], indices[:-1], cached[:-1]):
        with amp:
            video = embed_video(model, batch, index)
        _backward_cached(video, leaves)
    return {name: value.detach() for name, value in losses.items()}


def _backward_cached(video: VideoPart, leaves: VideoPart) -> None:
    """Back-propagate the loss gradients that `leaves` collected through `video`'s graph."""
    pairs = [(getattr(video, f.name), getattr(leaves, f.name).grad) for f in fields(VideoPart)]
    surrogate = sum((full_precision(value) * grad).sum() for value, grad in pairs if grad is not None and value.numel())
    if isinstance(surrogate, Tensor) and surrogate.requires_grad:
        surrogate.backward()
