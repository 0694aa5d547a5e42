"""Training augmentation of whole videos: random resized crop and horizontal flip.

One crop and one flip per video, identical for all its frames (the temporal model must see one
consistent scene), and the region boxes go through the same transform so they keep pointing at
the same pixels. The parameters are drawn on the CPU from a generator seeded per batch, so a
resumed run draws exactly the same ones; the pixels are cut and flipped wherever they live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CropFlip:
    """A crop window in stored-frame pixels, then an optional left-right flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


def sample_crop_flip(
    generator: torch.Generator,
    frame_height: int,
    frame_width: int,
    *,
    scale: tuple[float, float] = (0.6, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_probability: float = 0.5,
) -> CropFlip:
    """Draw a crop covering `scale` of the frame area with aspect in `ratio` (like
    RandomResizedCrop), falling back to the whole frame when ten tries do not fit."""
    area = frame_height * frame_width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    crop = CropFlip(0, 0, frame_height, frame_width, False)
    for _ in range(10):
        u = torch.rand(4, generator=generator).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        width = int(round(math.sqrt(target_area * aspect)))
        height = int(round(math.sqrt(target_area / aspect)))
        if 0 < width <= frame_width and 0 < height <= frame_height:
            top = min(int(u[2] * (frame_height - height + 1)), frame_height - height)
            left = min(int(u[3] * (frame_width - width + 1)), frame_width - width)
            crop = CropFlip(top, left, height, width, False)
            break
    flip = bool(torch.rand(1, generator=generator).item() < flip_probability)
    return CropFlip(crop.top, crop.left, crop.height, crop.width, flip)


def crop_flip_frames(frames_uint8: torch.Tensor, params: CropFlip) -> torch.Tensor:
    """(..., H, W, 3) -> (..., h, w, 3): the crop window, mirrored left-right if asked."""
    out = frames_uint8[..., params.top : params.top + params.height, params.left : params.left + params.width, :]
    if params.flip:
        out = torch.flip(out, dims=(-2,))
    return out


def crop_flip_boxes(
    boxes: torch.Tensor, box_mask: torch.Tensor, params: CropFlip, frame_height: int, frame_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map (..., 4) boxes (x1, y1, x2, y2 in 0..1 of the stored frame) into the crop window.

    Boxes are clipped to the window; a box left with no area (it lay outside the crop) is
    masked off on that frame. Returns new boxes and mask; the inputs are not modified.
    """
    x_scale = frame_width / params.width
    y_scale = frame_height / params.height
    x_shift = params.left / frame_width
    y_shift = params.top / frame_height
    x1 = ((boxes[..., 0] - x_shift) * x_scale).clamp(0.0, 1.0)
    y1 = ((boxes[..., 1] - y_shift) * y_scale).clamp(0.0, 1.0)
    x2 = ((boxes[..., 2] - x_shift) * x_scale).clamp(0.0, 1.0)
    y2 = ((boxes[..., 3] - y_shift) * y_scale).clamp(0.0, 1.0)
    if params.flip:
        x1, x2 = 1.0 - x2, 1.0 - x1
    out = torch.stack([x1, y1, x2, y2], dim=-1)
    visible = box_mask & (x2 - x1 > 0) & (y2 - y1 > 0)
    return out * visible.unsqueeze(-1), visible
