"""The spatial metric: does the patch map point at the anomalous actors?

On every anomalous test frame that has boxes of the event's actors (`pipeline.event_boxes`),
with the patch map upsampled to the stored frame (`fgclip.eval.patch_map.upsample_maps`):

* pointing game: a hit when the map's highest pixel lies inside one of the boxes; accuracy =
  hits / frames. A point drawn uniformly at random hits with probability equal to the boxes'
  share of the frame, so that share, averaged over the same frames, is the chance level.
* mean map inside the boxes against outside them (per frame, then averaged): how much more
  anomalous the model finds the actors than the rest of the scene.

Boxes are fractions of the displayed frame; a stored frame squashed to a square covers the
whole displayed frame, so the fractions apply to it unchanged (center-cropped shards do not
qualify: the crop is not stored with the test shards).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def box_mask(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) bool: pixels whose centre lies inside any of the (K, 4) x1 y1 x2 y2 boxes (0..1)."""
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        mask |= ((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]
    return mask


def pointing_hits(maps: np.ndarray, boxes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame of (N, H, W) maps and their boxes: (hit bool, box share, mean inside, mean outside).

    The mean inside (outside) is NaN on a frame the boxes cover not at all (wholly)."""
    count, height, width = maps.shape
    hits = np.zeros(count, dtype=bool)
    share = np.zeros(count)
    inside = np.full(count, np.nan)
    outside = np.full(count, np.nan)
    for i in range(count):
        mask = box_mask(boxes[i], height, width)
        peak = np.unravel_index(int(np.argmax(maps[i])), (height, width))
        hits[i] = mask[peak]
        share[i] = mask.mean()
        if mask.any():
            inside[i] = maps[i][mask].mean()
        if not mask.all():
            outside[i] = maps[i][~mask].mean()
    return hits, share, inside, outside


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def summarise_hits(hits: np.ndarray, share: np.ndarray, inside: np.ndarray, outside: np.ndarray,
                   labels: Sequence[str]) -> dict:
    """The metric of the module docstring from `pointing_hits`' per-frame arrays, overall and per
    class (`labels`: the class of each frame's video); None where no frame qualifies."""
    labels = np.asarray(labels)

    def summary(selected: np.ndarray) -> dict:
        if not selected.any():
            return {"frames": 0, "pointing_game": None, "chance": None, "mean_map_inside": None,
                    "mean_map_outside": None}
        return {"frames": int(selected.sum()), "pointing_game": float(hits[selected].mean()),
                "chance": float(share[selected].mean()), "mean_map_inside": _mean(inside[selected]),
                "mean_map_outside": _mean(outside[selected])}

    result = summary(np.ones(len(hits), dtype=bool))
    result["per_class"] = {label: summary(labels == label) for label in sorted(set(labels.tolist()))}
    return result


def spatial_metrics(maps: np.ndarray, boxes: Sequence[np.ndarray], labels: Sequence[str]) -> dict:
    """`summarise_hits` of (N, H, W) upsampled maps and their frames' boxes."""
    return summarise_hits(*pointing_hits(np.asarray(maps, dtype=np.float32), boxes), labels)
