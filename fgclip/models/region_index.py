"""Which boxes, regions and hard negatives of a micro-batch are real: planned on the host, once.

The region path picks its rows with masks (`box_mask`, `region_valid`, `negative_valid`).
Indexing a GPU tensor with a boolean mask, `nonzero` and `unique` each make the host wait for
the GPU (the result's size decides the next launch), and the GPU then idles while the host
launches the next kernels. A training step used to do this about ten times per micro-batch and
pass. Here the masks of a whole accumulation window come to the host in one copy, the indices
are computed there with numpy, and go back to the device in one copy; the model and the
gradient cache then only gather and scatter with index tensors, which never wait.

Every index keeps the row-major order that boolean indexing of the same masks gives, so the
results are identical to the masked version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class BoxIndex:
    """Visible boxes of a (B, R, T) `box_mask`, K of them, in (b, r, t) order."""

    box: Tensor  # (K,) position of each visible box in boxes.reshape(B * R * T, 4)
    slot: Tensor  # (K,) its region slot b * R + r
    frame_of_box: Tensor  # (K,) row of needed_frames that holds its frame
    needed_frames: Tensor  # (F,) frames b * T + t with at least one visible box, ascending


@dataclass(frozen=True)
class MicroBatchIndex:
    """Everything the region path and the gradient cache select from one micro-batch."""

    boxes: BoxIndex
    visible_regions: Tensor  # (M,) slots b * R + r of real regions visible on some frame
    negative_rows: Tensor  # (N,) rows of negative_ids.reshape(B * R * K, L) that are real, visible regions' negatives
    negative_places: Tensor  # (N,) where each lands in the (M * K) grid of the visible regions' negatives
    negative_count: int  # N


def _box_index_arrays(box_mask: np.ndarray) -> dict[str, np.ndarray]:
    batch, regions, frames = box_mask.shape
    b, r, t = np.nonzero(box_mask)
    frame = b * frames + t
    needed, frame_of_box = np.unique(frame, return_inverse=True)
    return {"box": (b * regions + r) * frames + t, "slot": b * regions + r,
            "frame_of_box": frame_of_box.reshape(-1), "needed_frames": needed}


def _micro_batch_arrays(box_mask: np.ndarray, region_valid: np.ndarray, negative_valid: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {f"boxes.{name}": value for name, value in _box_index_arrays(box_mask).items()}
    slots = negative_valid.shape[2]
    visible = region_valid & box_mask.any(axis=-1)  # (B, R)
    arrays["visible_regions"] = np.flatnonzero(visible)
    valid = negative_valid.reshape(visible.size, slots)[arrays["visible_regions"]]  # (M, K)
    row_in_visible, k = np.nonzero(valid)
    arrays["negative_rows"] = arrays["visible_regions"][row_in_visible] * slots + k
    arrays["negative_places"] = row_in_visible * slots + k
    return arrays


def _to_device(arrays: list[dict[str, np.ndarray]], device: torch.device) -> list[dict[str, Tensor]]:
    """All index arrays in one pinned host buffer and one copy; device views of it."""
    flat = [value.astype(np.int64, copy=False).reshape(-1) for part in arrays for value in part.values()]
    host = torch.from_numpy(np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64))
    if device.type == "cuda":
        host = host.pin_memory()
    on_device = host.to(device, non_blocking=True)
    out, start = [], 0
    for part in arrays:
        views = {}
        for name, value in part.items():
            views[name] = on_device[start:start + value.size]
            start += value.size
        out.append(views)
    return out


def _index_from(views: dict[str, Tensor]) -> MicroBatchIndex:
    boxes = BoxIndex(**{name.split(".", 1)[1]: value for name, value in views.items() if name.startswith("boxes.")})
    return MicroBatchIndex(boxes=boxes, visible_regions=views["visible_regions"], negative_rows=views["negative_rows"],
                           negative_places=views["negative_places"], negative_count=int(views["negative_rows"].numel()))


def window_indices(micro_batches: list[dict[str, Tensor]]) -> list[MicroBatchIndex]:
    """The index of every micro-batch of a window: one device-to-host and one host-to-device copy."""
    device = micro_batches[0]["box_mask"].device
    masks = [(b["box_mask"], b["region_valid"], b["negative_valid"]) for b in micro_batches]
    packed = torch.cat([m.reshape(-1).to(torch.uint8) for triple in masks for m in triple]).cpu().numpy().astype(bool)
    arrays, start = [], 0
    for triple in masks:
        host = []
        for mask in triple:
            host.append(packed[start:start + mask.numel()].reshape(mask.shape))
            start += mask.numel()
        arrays.append(_micro_batch_arrays(*host))
    return [_index_from(views) for views in _to_device(arrays, device)]


def box_index(box_mask: Tensor) -> BoxIndex:
    """The box index of one `box_mask` (its own host copy; for callers outside a training window)."""
    arrays = {f"boxes.{name}": value for name, value in _box_index_arrays(box_mask.to(torch.bool).cpu().numpy()).items()}
    views = _to_device([arrays], box_mask.device)[0]
    return BoxIndex(**{name.split(".", 1)[1]: value for name, value in views.items()})
