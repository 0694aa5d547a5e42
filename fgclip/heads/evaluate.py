"""A head run on test features: every seed's chosen head scores every test video, the scores are
measured against BOTH ground-truth constructions, each named:

* "anchors' T x 16": VadCLIP's `gt_<dataset>.npy` (per video in list order T x 16 frames, annotated
  [start, end) set to 1), the snippet scores repeated 16 times (what the published numbers use);
* "our exact frames": `gt_frames_<dataset>.npz` (each video's true frame count, the annotation file's
  stated convention), the snippet scores expanded to every frame as prompt scoring does.

Rows: each seed's metrics and the mean ± std over seeds of every headline. Test features are read
only here, after training has finished and chosen its heads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fgclip.eval.evaluate import expand_to_frames
from fgclip.eval.metrics import VideoFrames, compute_metrics, detection_map
from fgclip.features.files import SNIPPET_FRAMES, read_feature_list, read_features_dir, save_atomic, vadclip_ground_truth
from fgclip.heads.data import HeadDataError, group_test_videos
from fgclip.heads.train import chosen_heads, load_head
from pipeline.datasets import get_dataset

GROUND_TRUTHS = {"anchors": "anchors' T x 16 (VadCLIP's gt_<dataset>.npy)",
                 "exact": "our exact frames (true frame count, the annotation's convention)"}
HEADLINE_KEYS = ("auc", "ap", "auc_anomalous_videos", "false_alarm_rate_at_recall", "false_alarm_rate_at_recall_95")


@dataclass
class HeadTestSet:
    """A test list and its ground truth files."""

    list_path: Path
    dataset: str
    anchors_gt: Path | None  # gt_<dataset>.npy
    exact_gt: Path | None  # gt_frames_<dataset>.npz
    path_map: Sequence[tuple[str, str]] = ()


def test_features_of(features_dir: os.PathLike | str) -> HeadTestSet:
    """A features directory's test list and its two ground truths (from its manifest)."""
    features = read_features_dir(features_dir)
    files = features.ground_truth_files
    if not features.test:
        raise HeadDataError(f"{features_dir}: no test list (lists/vadclip_test.csv)")
    return HeadTestSet(features.root / "lists" / "vadclip_test.csv", features.dataset, files.get("vadclip"),
                        files.get("exact"))


def write_anchors_ground_truth(test: HeadTestSet, annotations: os.PathLike | str, out_dir: Path) -> Path:
    """VadCLIP's T x 16 ground truth of a released test list (no gt file given) from the dataset's
    annotation file, written into the head run (`gt_<dataset>.npy`); only this construction: the
    true frame counts are not in the features."""
    entries = read_feature_list(test.list_path, path_map=test.path_map, dataset=test.dataset)
    frames = vadclip_ground_truth(entries, annotations, dataset=test.dataset)
    path = Path(out_dir) / f"gt_{test.dataset}.npy"
    save_atomic(path, lambda handle: np.save(handle, frames))
    return path


def anchors_frames(gt_file: Path, lengths: Sequence[int]) -> list[np.ndarray]:
    """gt_<dataset>.npy cut into each video's T x 16 frames; a named error when the lengths disagree."""
    gt = np.load(gt_file)
    needed = sum(lengths) * SNIPPET_FRAMES
    if len(gt) != needed:
        raise HeadDataError(f"{gt_file}: {len(gt)} frames, the test list's features need {needed} (T x 16 per video): "
                            f"the ground truth belongs to other features or another list order")
    bounds = np.cumsum([0] + [t * SNIPPET_FRAMES for t in lengths])
    return [gt[a:b].astype(bool) for a, b in zip(bounds[:-1], bounds[1:])]


def segments_of(gt: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], gt, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def frames_by_ground_truth(videos, snippet_scores: list[np.ndarray], test: HeadTestSet, normal_label: str
                           ) -> dict[str, list[VideoFrames]]:
    """Per ground-truth construction (when its file is there), each video's frame scores and labels."""
    out: dict[str, list[VideoFrames]] = {}
    if test.anchors_gt is not None and Path(test.anchors_gt).is_file():
        gts = anchors_frames(Path(test.anchors_gt), [len(s) for s in snippet_scores])
        out["anchors"] = [VideoFrames(v.video, v.label, v.label != normal_label, np.repeat(s, SNIPPET_FRAMES), gt)
                          for v, s, gt in zip(videos, snippet_scores, gts)]
    if test.exact_gt is not None and Path(test.exact_gt).is_file():
        exact = np.load(test.exact_gt)
        missing = [v.video for v in videos if v.video not in exact.files]
        if missing:
            raise HeadDataError(f"{test.exact_gt}: no ground truth for {len(missing)} test videos, e.g. {missing[:3]}")
        out["exact"] = [VideoFrames(v.video, v.label, v.label != normal_label,
                                    expand_to_frames(s, len(exact[v.video]), SNIPPET_FRAMES), exact[v.video].astype(bool))
                        for v, s in zip(videos, snippet_scores)]
    if not out:
        raise HeadDataError(f"{test.list_path}: no ground truth file (gt_<dataset>.npy or gt_frames_<dataset>.npz); "
                            f"run `fgclip-vad features` with --annotations, or pass --gt")
    return out


def evaluate_head(head_dir: Path, test: HeadTestSet, *, test_crop: str = "listed", device: str = "cpu") -> dict:
    """One chosen head on the test list: metrics under each ground truth, detection mAP."""
    head, record = load_head(head_dir, device)
    dataset = get_dataset(test.dataset)
    entries = read_feature_list(test.list_path, path_map=test.path_map, dataset=dataset.name)
    videos = group_test_videos(entries, dataset, crop=test_crop, width=record["feature_width"])
    scores = [head.score(torch.from_numpy(v.features).to(device)).float().cpu().numpy() for v in videos]
    results = {}
    for name, frames in frames_by_ground_truth(videos, scores, test, dataset.normal_label).items():
        metrics = compute_metrics(frames)
        metrics["detection_map"] = detection_map(frames, {f.video: segments_of(f.gt) for f in frames})
        results[name] = metrics
    crops = sorted({c for v in videos for c in v.crops if c is not None})
    return {"head": str(head_dir), "seed": record.get("seed"), "method": record["method"],
            "selection": record.get("selection"), "test_crop": test_crop, "crops_used": crops, "metrics": results}


def mean_std(values: Sequence[float | None]) -> dict:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(present)), "std": float(np.std(present, ddof=1)) if len(present) > 1 else 0.0,
            "n": len(present)}


def evaluate_head_run(run_dir: os.PathLike | str, test: HeadTestSet, *, name: str | None = None,
                      test_crop: str = "listed", device: str = "cpu") -> dict:
    """Every seed of a head run: per-seed results and mean ± std of the headlines, per ground truth."""
    seeds = [evaluate_head(head, test, test_crop=test_crop, device=device) for head in chosen_heads(run_dir)]
    summary = {gt: {key: mean_std([s["metrics"][gt][key] for s in seeds]) for key in HEADLINE_KEYS}
               for gt in seeds[0]["metrics"]}
    for gt in summary:
        summary[gt]["detection_map"] = mean_std([s["metrics"][gt]["detection_map"]["mean"] for s in seeds])
    return {"name": name or Path(run_dir).name, "run": str(run_dir), "test_list": str(test.list_path),
            "dataset": test.dataset, "method": seeds[0]["method"], "ground_truths": {g: GROUND_TRUTHS[g] for g in summary},
            "test_crop": test_crop, "seeds": seeds, "summary": summary}
