"""The micro-batch: what the training loader hands the model and the losses, key by key.

`fgclip.train.loader.ShardLoader` produces it (on the training device); `fgclip.train.grad_cache` embeds
it, `fgclip.bench` times steps on it and the tests build random ones in the same format. It is
a plain dict of tensors (a `MicroBatch`), so it moves, clones and slices like any dict.

Sizes: B videos, T frames per video, S the model's image side, R region slots, K hard-negative
slots per region, Lg / Ls token positions of the long (global) and short (region, negative)
captions. R, K, Lg and Ls are the largest of this micro-batch, not of the dataset: the loader
cuts the padding every record of the batch shares, so they change from batch to batch.

    key             shape              dtype    meaning
    pixels          (B, T, 3, S, S)    float    frames after `model.preprocess` (resized,
                                                normalised) and augmentation
    boxes           (B, R, T, 4)       float    region box per frame: x1, y1, x2, y2 in 0..1 of
                                                the frame (after augmentation)
    box_mask        (B, R, T)          bool     region r is visible in frame t (False for
                                                padding regions)
    region_valid    (B, R)             bool     region slot r holds one of the record's regions
    global_ids      (B, Lg)            int64    token ids of the global caption (Lg <= 248)
    global_key      (B,)               int64    `text.caption_key` of the global caption: equal
                                                keys are the same sentence, positives of each other
    region_ids      (B, R, Ls)         int64    token ids of each region's caption (Ls <= 77)
    region_key      (B, R)             int64    `caption_key` of each region caption
    negative_ids    (B, R, K, Ls)      int64    token ids of each region's hard negatives
    negative_valid  (B, R, K)          bool     negative slot k of region r holds a caption
    record_index    (B,)               int64    the record's index in the annotation file

The loader's floating tensors are float32; the tests use float64 for exact comparisons.
Token ids are cut after the batch's longest caption: the text encoder is causal and pools at the
end token, so the padding after it could not change an embedding.
"""

from __future__ import annotations

from typing import Sequence, TypedDict

import torch
from torch import Tensor


class MicroBatch(TypedDict):
    """One micro-batch; the module docstring gives each key's shape, dtype and meaning."""

    pixels: Tensor
    boxes: Tensor
    box_mask: Tensor
    region_valid: Tensor
    global_ids: Tensor
    global_key: Tensor
    region_ids: Tensor
    region_key: Tensor
    negative_ids: Tensor
    negative_valid: Tensor
    record_index: Tensor


# Each key's axes by size name ("3" and "4" are fixed sizes) and dtype (None: any floating type).
AXES: dict[str, tuple[tuple[str, ...], torch.dtype | None]] = {
    "pixels": (("B", "T", "3", "S", "S"), None),
    "boxes": (("B", "R", "T", "4"), None),
    "box_mask": (("B", "R", "T"), torch.bool),
    "region_valid": (("B", "R"), torch.bool),
    "global_ids": (("B", "Lg"), torch.int64),
    "global_key": (("B",), torch.int64),
    "region_ids": (("B", "R", "Ls"), torch.int64),
    "region_key": (("B", "R"), torch.int64),
    "negative_ids": (("B", "R", "K", "Ls"), torch.int64),
    "negative_valid": (("B", "R", "K"), torch.bool),
    "record_index": (("B",), torch.int64),
}


def check_micro_batch(batch: MicroBatch) -> dict[str, int]:
    """Check every key, dtype and shape against the table above; returns the sizes by name.

    Raises ValueError naming the key at fault, e.g. for a hand-built batch in a test or script.
    """
    missing, extra = set(AXES) - set(batch), set(batch) - set(AXES)
    if missing or extra:
        raise ValueError(f"micro-batch keys: missing {sorted(missing)}, unexpected {sorted(extra)}")
    sizes: dict[str, int] = {}
    for key, (axes, dtype) in AXES.items():
        tensor = batch[key]
        if (dtype is None and not tensor.is_floating_point()) or (dtype is not None and tensor.dtype != dtype):
            raise ValueError(f"micro-batch {key}: dtype {tensor.dtype}, expected {dtype or 'a floating type'}")
        if tensor.dim() != len(axes):
            raise ValueError(f"micro-batch {key}: shape {tuple(tensor.shape)}, expected axes {axes}")
        for name, size in zip(axes, tensor.shape):
            expected = int(name) if name.isdigit() else sizes.setdefault(name, int(size))
            if size != expected:
                raise ValueError(f"micro-batch {key}: shape {tuple(tensor.shape)} (axes {axes}) has {name}={size}, "
                                 f"other keys have {name}={expected}")
    return sizes


def frames_in(batch: MicroBatch) -> int:
    """Video frames in a micro-batch (B x T)."""
    return int(batch["pixels"].shape[0] * batch["pixels"].shape[1])


def window_frames(window: Sequence[MicroBatch], world_size: int = 1) -> int:
    """Video frames of one optimizer step's window, over all `world_size` ranks."""
    return sum(frames_in(batch) for batch in window) * world_size


def first_frames(batch: MicroBatch, frames: int) -> MicroBatch:
    """The micro-batch with every video cut to its first `frames` frames (its boxes and masks too)."""
    cut = dict(batch)
    for key, (axes, _) in AXES.items():
        if "T" in axes:
            index = [slice(None)] * len(axes)
            index[axes.index("T")] = slice(0, frames)
            cut[key] = batch[key][tuple(index)]
    return cut  # type: ignore[return-value]
