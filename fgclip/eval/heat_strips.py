"""Evaluation's patch-map pass: heat strips of anomalous test videos and the spatial metric.

After the frame scores, a few stored frames per anomalous test video get patch maps
(`fgclip.eval.patch_map`) from every model:

* heat strips: the frame at the first model's score peak, then up to `strip_gt_frames` frames
  evenly spaced inside the ground-truth intervals; the report draws them per video, one row per model;
* the spatial metric (`fgclip.eval.spatial`): every stored frame inside the ground truth that has
  boxes of the event's actors (`--boxes`, or the embedded generator's side file).

Frames are read from the test shards per video, so memory holds one video's chosen frames at a
time plus the strips' frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from fgclip.eval.prompts import anomaly_scores, prompt_logits
from fgclip.eval.patch_map import frame_maps, upsample_maps
from fgclip.eval.spatial import pointing_hits, summarise_hits
from pipeline.event_boxes import boxes_near
from pipeline.shards import ShardReader

DEFAULT_STRIP_GT_FRAMES = 4


@dataclass
class VideoMapPlan:
    """Which stored rows of one anomalous test video get maps."""

    key: str
    label: str
    shard: str
    local_index: int
    strip_rows: list[int]  # peak first, then frames inside the ground truth (may repeat the peak)
    strip_frame_numbers: list[int]
    boxed_rows: list[int]
    boxed_boxes: list[np.ndarray]
    strip_frames: np.ndarray | None = None  # (n, H, W, 3) uint8, read once for all models


@dataclass
class ModelMaps:
    """One model's output on the planned frames."""

    strip_maps: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (n, g, g)
    strip_scores: dict[str, list[float]] = field(default_factory=dict)  # frame score of each strip frame
    strip_classes: dict[str, list[str]] = field(default_factory=dict)  # top class of each strip frame
    spatial: dict | None = None  # `fgclip.eval.spatial` summary, None without boxes


def _evenly(rows: np.ndarray, count: int) -> list[int]:
    if len(rows) <= count:
        return rows.tolist()
    picks = np.linspace(0, len(rows) - 1, count + 2)[1:-1].round().astype(int)
    return rows[picks].tolist()


def plan_map_frames(videos: Sequence, frame_gt: Mapping[str, np.ndarray], labels: Mapping[str, str],
                    peak_scores: Mapping[str, np.ndarray], event_boxes: Mapping[str, Mapping[int, np.ndarray]] | None,
                    *, strip_gt_frames: int = DEFAULT_STRIP_GT_FRAMES) -> list[VideoMapPlan]:
    """Plans for the `videos` (evaluate's TestVideo) with anomalous frames: their ground truth per
    source frame and class (by video key), the first model's snippet scores (the peak) and the boxes
    keyed by video key (or None)."""
    plans = []
    for video in videos:
        gt = frame_gt[video.key]
        if not gt.any():
            continue
        with ShardReader(video.shard) as reader:
            frame_numbers = reader.read_frame_index(video.local_index).astype(np.int64)
        inside = np.flatnonzero(gt[np.minimum(frame_numbers, len(gt) - 1)])
        peak = int(np.argmax(peak_scores[video.key]))
        strip_rows = [peak] + _evenly(inside, strip_gt_frames)
        boxed_rows, boxed_boxes = [], []
        frames_boxes = (event_boxes or {}).get(video.key)
        if frames_boxes:
            for row in inside.tolist():
                boxes = boxes_near(frames_boxes, int(frame_numbers[row]), video.stride // 2)
                if boxes is not None and len(boxes):
                    boxed_rows.append(row)
                    boxed_boxes.append(boxes)
        plans.append(VideoMapPlan(key=video.key, label=labels[video.key], shard=video.shard, local_index=video.local_index,
                                  strip_rows=strip_rows, strip_frame_numbers=frame_numbers[strip_rows].tolist(),
                                  boxed_rows=boxed_rows, boxed_boxes=boxed_boxes))
    return plans


def _read_rows(plan: VideoMapPlan, rows: list[int], height: int, width: int) -> np.ndarray:
    """The stored frames at `rows` (any order, repeats allowed), (len(rows), H, W, 3) uint8."""
    unique, position = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
    out = np.empty((len(unique), height, width, 3), dtype=np.uint8)
    with ShardReader(plan.shard) as reader:
        reader.read_frames_into(plan.local_index, out, unique)
    return out[position]


def read_strip_frames(plans: list[VideoMapPlan], height: int, width: int) -> None:
    for plan in plans:
        plan.strip_frames = _read_rows(plan, plan.strip_rows, height, width)


@torch.inference_mode()
def model_maps(model, prompt_embeds: torch.Tensor, class_names: Sequence[str], plans: list[VideoMapPlan], *,
               height: int, width: int, device: torch.device, batch_frames: int = 64) -> ModelMaps:
    """Patch maps of one model on the planned frames: strips kept, boxed frames reduced to the
    spatial metric (maps upsampled to the stored H x W)."""
    device = torch.device(device)
    temperature = model.temperatures()["global"].float().to(device)
    bias = model.logit_biases().get("global")
    bias = None if bias is None else bias.float().to(device)
    result = ModelMaps()
    per_frame: list[tuple[np.ndarray, ...]] = []
    labels: list[str] = []
    for plan in plans:
        frames = plan.strip_frames if plan.strip_frames is not None else _read_rows(plan, plan.strip_rows, height, width)
        result.strip_maps[plan.key] = frame_maps(model, frames, prompt_embeds, device=device, batch_frames=batch_frames)
        embeds = model.encode_frames(model.preprocess(torch.from_numpy(frames).to(device)))
        result.strip_scores[plan.key] = anomaly_scores(embeds, prompt_embeds, temperature, objective=model.objective,
                                                       bias=bias).cpu().tolist()
        logits = prompt_logits(embeds, prompt_embeds, temperature).cpu()
        result.strip_classes[plan.key] = [class_names[int(k)] for k in logits[:, 1:].argmax(dim=1)]
        if plan.boxed_rows:
            boxed = _read_rows(plan, plan.boxed_rows, height, width)
            maps = upsample_maps(frame_maps(model, boxed, prompt_embeds, device=device, batch_frames=batch_frames),
                                 height, width)
            per_frame.append(pointing_hits(maps, plan.boxed_boxes))
            labels += [plan.label] * len(plan.boxed_rows)
    if per_frame:
        result.spatial = summarise_hits(*(np.concatenate(column) for column in zip(*per_frame)), labels)
    return result
