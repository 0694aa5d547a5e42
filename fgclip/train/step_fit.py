"""`--batch-size auto`: the largest micro-batch, and checkpointing on or off, that fit the card.

The contrastive batch of a step (micro-batch x accumulation, per GPU) is the preset's and stays
fixed, so the loss and its gradient are the same whatever is chosen (gradient caching makes the
window's loss exact for any split, `tests/test_step_fit.py`); only speed and memory change.
Larger micro-batches keep the GPU busier (fewer, larger kernels); checkpointing trades about a
third more compute for far less activation memory.

How a choice is found: the activation memory of one video's forward and backward is measured
at two frame counts, with checkpointing off and on (eager, which needs more memory than the
compiled blocks, so the estimate errs on the safe side), and extended linearly to the
micro-batch's frames. With the weights, their gradients, AdamW's two moments and the loader's
batches on the device added, a setting fits when the sum stays under the card's free memory
less a margin. Without checkpointing is preferred while at least two videos fit per micro-batch
(on a 139 GiB H200: 4 x 256 frames); otherwise checkpointing with the largest micro-batch that
fits (a 24 GB card: 2 x 256).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

MARGIN_SHARE = 0.10  # of the card's memory, kept free for fragmentation and the allocator's rounding
_GIB = 2**30


@dataclass(frozen=True)
class StepFit:
    batch_size: int  # videos per micro-batch
    grad_accum: int
    gradient_checkpointing: bool
    predicted_peak_gib: float
    budget_gib: float

    def describe(self) -> str:
        return (f"{self.batch_size} videos per micro-batch x {self.grad_accum}, checkpointing "
                f"{'on' if self.gradient_checkpointing else 'off'} (predicted peak {self.predicted_peak_gib:.1f} GiB "
                f"of {self.budget_gib:.1f} GiB usable)")


def micro_batch_choices(contrastive_batch: int) -> list[int]:
    """Micro-batch sizes that split the contrastive batch exactly, largest first."""
    return [size for size in range(contrastive_batch, 0, -1) if contrastive_batch % size == 0]


def _trial_batch(model, frames: int, regions: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    size = model.image_size
    pixels = torch.randn(1, frames, 3, size, size, device=device)
    boxes = torch.tensor([0.1, 0.1, 0.8, 0.9], device=device).expand(1, regions, frames, 4)
    return pixels, boxes, torch.ones(1, regions, frames, dtype=torch.bool, device=device)


def activation_bytes(model, *, frames: int, checkpointing: bool, autocast, regions: int = 2) -> int:
    """Peak device memory of one video's forward and backward above what was allocated before
    (gradients included), eager. Leaves checkpointing set as asked (the caller sets it). Raises torch.cuda.OutOfMemoryError if even that does not fit."""
    device = next(model.parameters()).device
    model.train()  # checkpointing applies in training only
    model.set_gradient_checkpointing(checkpointing)
    eager = getattr(torch.compiler, "set_stance", None)
    try:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with (eager("force_eager") if eager else contextlib.nullcontext()), (autocast or contextlib.nullcontext()):
            out = model.encode_video(*_trial_batch(model, frames, regions, device))
            loss = out.video_embeds.float().sum() + out.region_embeds.float().sum()
        loss.backward()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    finally:
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


def choose_step_fit(model, *, contrastive_batch: int, num_frames: int, frame_bytes: int, prefetch: int,
                    autocast, checkpointing: bool | None = None, margin_share: float = MARGIN_SHARE) -> StepFit:
    """The micro-batch (and checkpointing, unless given) for `contrastive_batch` videos per step
    on this process's GPU. `frame_bytes`: one stored uint8 frame (the loader keeps those and
    the preprocessed float32 pixels of every batch of the window on the device)."""
    device = next(model.parameters()).device
    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    budget = allocated + free - margin_share * total
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    optimizer_bytes = 2 * parameter_bytes  # AdamW's two moments (the gradients are in the trial)
    pixel_bytes = model.image_size**2 * 3 * 4

    def predicted(batch: int, ckpt: bool, slope: float, at_small: int, small: int) -> float:
        frames = batch * num_frames
        loader = (contrastive_batch + prefetch * batch) * num_frames * (frame_bytes + pixel_bytes)
        return allocated + optimizer_bytes + loader + at_small + slope * (frames - small)

    small, large = max(1, num_frames // 4), max(2, num_frames // 2)
    estimates: dict[bool, tuple[float, int] | None] = {}
    for ckpt in ((False, True) if checkpointing is None else (checkpointing,)):
        try:
            at_small = activation_bytes(model, frames=small, checkpointing=ckpt, autocast=autocast)
            at_large = activation_bytes(model, frames=large, checkpointing=ckpt, autocast=autocast)
            estimates[ckpt] = ((at_large - at_small) / (large - small), at_small)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            estimates[ckpt] = None

    def peak(batch: int, ckpt: bool) -> float | None:
        if estimates.get(ckpt) is None:
            return None
        slope, at_small = estimates[ckpt]
        loader = (contrastive_batch + prefetch * batch) * num_frames * (frame_bytes + pixel_bytes)
        return allocated + optimizer_bytes + loader + at_small + slope * (batch * num_frames - small)

    return pick_fit(contrastive_batch, peak, budget, checkpointing)


def pick_fit(contrastive_batch: int, peak_bytes, budget_bytes: float, checkpointing: bool | None = None) -> StepFit:
    """The rule, given `peak_bytes(batch, checkpointing)` (None: not measurable, e.g. out of memory):
    without checkpointing the largest micro-batch of at least 2 videos that fits; else (or when
    checkpointing is forced) with checkpointing the largest that fits; else 1 video, with a warning."""

    def largest(ckpt: bool) -> StepFit | None:
        for batch in micro_batch_choices(contrastive_batch):
            peak = peak_bytes(batch, ckpt)
            if peak is not None and peak <= budget_bytes:
                return StepFit(batch, contrastive_batch // batch, ckpt, peak / _GIB, budget_bytes / _GIB)
        return None

    if checkpointing is None:
        fit = largest(False)
        if fit is not None and fit.batch_size >= 2:
            return fit
    ckpt = True if checkpointing is None else checkpointing
    fit = largest(ckpt)
    if fit is not None:
        return fit
    log.warning("not even one video per micro-batch is predicted to fit in %.1f GiB; trying 1 anyway", budget_bytes / _GIB)
    return StepFit(1, contrastive_batch, ckpt, float("nan"), budget_bytes / _GIB)
