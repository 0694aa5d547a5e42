"""Whole-window contrastive gradients at the memory of one micro-batch (gradient caching).

With 2 videos per micro-batch the global loss has a single negative; accumulating gradients
over micro-batches does not add negatives. Here the loss sees every sample of the optimizer
step's window (micro-batch x accumulation steps x ranks), exactly:

1. embed every micro-batch without a graph (activation memory of one micro-batch);
2. gather the window's embeddings from all ranks, compute the loss once, and its gradient with
   respect to this rank's embeddings (every rank computes the same full loss);
3. re-run each micro-batch with a graph and back-propagate the cached embedding gradients,
   which accumulates exactly d(window loss)/d(parameters) into `.grad`.

Cost: one extra forward pass. It relies on a deterministic forward (the model has no dropout).
The temperatures (and the sigmoid family's biases) receive their gradient directly from step 2
(on rank 0 only, so that the gradient sum of `distributed.all_reduce_gradients` counts it once).
Nothing here depends on the loss's form: any loss of the whole window's embeddings (InfoNCE or
sigmoid, `model.objective`) gets its exact gradient.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from fgclip import distributed
from fgclip.batch import MicroBatch
from fgclip.families import VideoModel
from fgclip.losses import LossWeights, WindowEmbeddings, concat_embeddings, fgclip_losses, full_precision
from fgclip.region_index import MicroBatchIndex, window_indices


def embed_micro_batch(model: VideoModel, batch: MicroBatch, index: MicroBatchIndex | None = None) -> WindowEmbeddings:
    """A loader micro-batch (`fgclip.batch.MicroBatch`) -> its embeddings.

    `index` (from `window_indices`) says which regions and negatives are real; without it they
    are planned here, which makes the host wait for the GPU once."""
    if index is None:
        index = window_indices([batch])[0]
    video = model.encode_video(batch["pixels"], batch["boxes"], batch["box_mask"], index.boxes)
    global_text = model.encode_text(batch["global_ids"], "long")
    # Regions that exist and are visible somewhere; the others have no embedding to contrast.
    visible = index.visible_regions
    slots = batch["negative_valid"].shape[2]
    region = video.region_embeds.flatten(0, 1)[visible]
    negative_valid = batch["negative_valid"].to(torch.bool).flatten(0, 1)[visible]  # (M, K)
    region_ids = batch["region_ids"].flatten(0, 1)[visible]
    negative_ids = batch["negative_ids"].flatten(0, 2)[index.negative_rows]  # (number of negatives, L)
    short_ids = torch.cat([region_ids, negative_ids])
    dim = video.video_embeds.shape[1]
    if short_ids.shape[0]:
        short_text = model.encode_text(short_ids, "box")  # one text pass for captions and negatives
    else:
        short_text = video.video_embeds.new_zeros((0, dim))
    region_text = short_text[: region_ids.shape[0]]
    negative_text = short_text.new_zeros((visible.shape[0] * slots, dim))
    if index.negative_count:
        negative_text = negative_text.index_copy(0, index.negative_places, short_text[region_ids.shape[0]:])
    return WindowEmbeddings(
        video=video.video_embeds,
        global_text=global_text,
        global_key=batch["global_key"],
        region=region,
        region_text=region_text,
        region_key=batch["region_key"].flatten(0, 1)[visible],
        negative_text=negative_text.view(visible.shape[0], slots, dim),
        negative_valid=negative_valid,
    )


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


def _detached_leaves(emb: WindowEmbeddings) -> WindowEmbeddings:
    """A copy (at least float32) whose embedding tensors are leaves that collect the loss gradient."""
    leaves = {name: full_precision(value.detach()).requires_grad_(True) for name, value in emb.embeddings().items()}
    return emb.replace(**leaves)


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
    Returns the window's losses (identical on every rank). Under torch.distributed, call
    `distributed.all_reduce_gradients(model)` afterwards: the sum over ranks is the exact gradient.
    """
    if not micro_batches:
        raise ValueError("grad_cached_window needs at least one micro-batch")
    amp = autocast if autocast is not None else contextlib.nullcontext()

    # Which rows are real, for every micro-batch and both passes: the host's one wait of the window.
    indices = window_indices(micro_batches)

    # 1. Embeddings of the whole window, without graph.
    cached: list[WindowEmbeddings] = []
    with torch.no_grad():
        for batch, index in zip(micro_batches, indices):
            with amp:
                cached.append(_detached_leaves(embed_micro_batch(model, batch, index)))

    # 2. The loss over all ranks' samples and its gradient w.r.t. this rank's embeddings.
    window = gather_window(concat_embeddings(cached))
    losses = window_losses(model, window, weights, trainable=distributed.rank() == 0)
    losses["total"].backward()

    # 3. Each micro-batch again, with graph, back-propagating its cached embedding gradients.
    for batch, index, leaves in zip(micro_batches, indices, cached):
        with amp:
            emb = embed_micro_batch(model, batch, index)
        pairs = [(value, leaves.embeddings()[name].grad) for name, value in emb.embeddings().items()]
        surrogate = sum((full_precision(value) * grad).sum() for value, grad in pairs if grad is not None and value.numel())
        if isinstance(surrogate, Tensor) and surrogate.requires_grad:
            surrogate.backward()
    return {name: float(value.detach()) for name, value in losses.items()}
