"""Box tracks: a box and a visibility flag for every region on every sampled frame.

A region's keyframes (source frame number + box in 0..1) become a track over the sampled
frames:

* between the first and last keyframe the box is interpolated linearly, coordinate by
  coordinate, and the region is visible (mask true);
* a sampled frame within half a sampling stride before the first or after the last keyframe
  gets that keyframe's box (held), so every annotated region covers at least one sampled frame
  even with a single keyframe between two samples;
* elsewhere the mask is false and the box is all zeros;
* a region without keyframes covers the whole frame on every sample.

Keyframes outside a record's window stay in the track: interpolation toward them gives the
right boxes inside the window, and one within half a stride of the window's edge is held onto
the edge sample. A region whose track meets no sample gets an all-false mask; stage 1 drops
such regions from the record and lists them in the manifest.

With center-crop resizing, boxes move into the crop's coordinates and are clipped to it; a
box entirely outside the crop makes that frame invisible.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.annotations import Keyframe, Region

WHOLE_FRAME = (0.0, 0.0, 1.0, 1.0)


class TrackError(ValueError):
    """Keyframes that cannot form a track (unsorted, empty or out-of-range boxes)."""


def check_keyframes(keyframes: Sequence[Keyframe]) -> None:
    """Raise TrackError unless frames strictly increase and each box has 0 <= x1 < x2 <= 1 (same for y)."""
    previous = -1
    for k, keyframe in enumerate(keyframes):
        if keyframe.frame <= previous:
            raise TrackError(f"keyframe {k} at frame {keyframe.frame} is not after frame {previous}; "
                             f"keyframes must be sorted and unique")
        previous = keyframe.frame
        x1, y1, x2, y2 = keyframe.box
        if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
            raise TrackError(f"keyframe {k} (frame {keyframe.frame}) has box {list(keyframe.box)}; "
                             f"needs 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1")


def box_track(keyframes: Sequence[Keyframe], frame_index: np.ndarray, half_stride: float) -> tuple[np.ndarray, np.ndarray]:
    """(S, 4) float32 boxes and (S,) bool mask of one region over the sampled `frame_index`."""
    frame_index = np.asarray(frame_index, dtype=np.int64)
    num_samples = len(frame_index)
    if not keyframes:
        return np.tile(np.asarray(WHOLE_FRAME, dtype=np.float32), (num_samples, 1)), np.ones(num_samples, dtype=bool)
    check_keyframes(keyframes)
    key_frames = np.array([kf.frame for kf in keyframes], dtype=np.float64)
    key_boxes = np.array([kf.box for kf in keyframes], dtype=np.float64)
    # np.interp holds the end values outside [first, last]: exactly the hold we want, masked below.
    boxes = np.stack([np.interp(frame_index, key_frames, key_boxes[:, c]) for c in range(4)], axis=1)
    first, last = key_frames[0], key_frames[-1]
    mask = (frame_index >= first - half_stride) & (frame_index <= last + half_stride)
    boxes[~mask] = 0.0
    return boxes.astype(np.float32), mask


def crop_boxes(boxes: np.ndarray, mask: np.ndarray,
               crop: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the full frame -> boxes of the crop (x0, y0, w, h in 0..1 of the full frame), clipped.

    Frames whose box falls entirely outside the crop become invisible (mask false, box zeros).
    """
    x0, y0, width, height = crop
    offset = np.array([x0, y0, x0, y0], dtype=np.float64)
    scale = np.array([width, height, width, height], dtype=np.float64)
    cropped = np.clip((boxes.astype(np.float64) - offset) / scale, 0.0, 1.0)
    visible = mask & (cropped[..., 2] > cropped[..., 0]) & (cropped[..., 3] > cropped[..., 1])
    cropped[~visible] = 0.0
    return cropped.astype(np.float32), visible


def region_tracks(
    regions: Sequence[Region], frame_index: np.ndarray, half_stride: float,
    crop: tuple[float, float, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(R, S, 4) boxes and (R, S) mask of all regions of a record, in the stored frame's coordinates."""
    num_samples = len(frame_index)
    boxes = np.zeros((len(regions), num_samples, 4), dtype=np.float32)
    mask = np.zeros((len(regions), num_samples), dtype=bool)
    for r, region in enumerate(regions):
        region_boxes, region_mask = box_track(region.keyframes, frame_index, half_stride)
        if crop is not None:
            region_boxes, region_mask = crop_boxes(region_boxes, region_mask, crop)
        boxes[r], mask[r] = region_boxes, region_mask
    return boxes, mask
