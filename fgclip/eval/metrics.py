"""Frame-level anomaly detection metrics (scikit-learn), the field's way.

Every metric works on frame scores and frame labels of whole videos, concatenated:

* `auc`: ROC AUC over all test frames of all videos (the headline number of UCF-Crime papers).
* `auc_anomalous_videos`: ROC AUC over the frames of anomalous videos only (can the model find
  the event inside a video it already flags?).
* `ap`: average precision over all frames, step-wise: sum over thresholds of
  (R_n - R_{n-1}) * P_n (scikit-learn's `average_precision_score`).
* `ap_trapezoid`: the area under the precision-recall curve by the trapezoidal rule
  (`auc(recall, precision)`), the other AP in the literature (XD-Violence's headline is
  reported both ways; the trapezoid interpolates linearly between PR points, which is
  optimistic, so the two differ).
* `per_class_auc`: for each anomaly class, ROC AUC over the frames of that class's videos plus
  all frames of the normal videos.
* `false_alarm_rate`: the fraction of normal-video frames scored above `threshold` (0.5). A
  softmax over 1 + C prompts is not calibrated, so 0.5 means little (a model can put most normal
  frames above it and still rank them well); hence also
* `false_alarm_rate_at_recall`: the fraction of normal-video frames scoring at least
  `threshold_at_recall`, the score that 90% of anomalous frames reach (a threshold that finds
  90% of the anomalies: how many false alarms does it cost?); `..._95` the same at 95% recall
  (the group's ablation tables).
* `detection_map` (beside the frame metrics, for heads): class-agnostic temporal detection mAP at
  IoU 0.1..0.5, the measure of VadCLIP's XD-Violence table without its per-class split: proposals
  are runs of frames above each of several score thresholds, scored by their mean, matched to
  annotated segments greedily by score.

A metric that is undefined (only one kind of frame present) is None, never a made-up number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import auc as curve_area
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

DEFAULT_THRESHOLD = 0.5
TARGET_RECALL = 0.9
HIGH_RECALL = 0.95
DETECTION_IOUS = (0.1, 0.2, 0.3, 0.4, 0.5)
PROPOSAL_THRESHOLDS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))


@dataclass
class VideoFrames:
    """One test video's frame scores and ground truth, both one entry per source frame."""

    video: str
    label: str  # class ("Normal" for normal videos)
    is_anomaly: bool
    scores: np.ndarray  # (F,) float, higher = more anomalous
    gt: np.ndarray  # (F,) bool, True = anomalous frame

    def __post_init__(self) -> None:
        if self.scores.shape != self.gt.shape or self.scores.ndim != 1:
            raise ValueError(f"video {self.video}: scores {self.scores.shape} and ground truth {self.gt.shape} "
                             f"must be 1-D and of the same length")


def concatenate(videos: Sequence[VideoFrames]) -> tuple[np.ndarray, np.ndarray]:
    """All frames of `videos` in order: (scores float64, labels bool)."""
    if not videos:
        return np.zeros(0), np.zeros(0, dtype=bool)
    scores = np.concatenate([v.scores for v in videos]).astype(np.float64)
    labels = np.concatenate([v.gt for v in videos]).astype(bool)
    return scores, labels


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC, or None when the frames are all of one kind."""
    if labels.size == 0 or labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Average precision, or None when no frame is anomalous."""
    if labels.size == 0 or not labels.any():
        return None
    return float(average_precision_score(labels, scores))


def pr_area_trapezoid(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the precision-recall curve, trapezoidal rule; None when no frame is anomalous."""
    if labels.size == 0 or not labels.any():
        return None
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(curve_area(recall, precision))


def false_alarm_rate(normal_scores: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> float | None:
    """Fraction of normal-video frames with a score strictly above `threshold`."""
    if normal_scores.size == 0:
        return None
    return float(np.mean(normal_scores > threshold))


def threshold_at_recall(anomalous_scores: np.ndarray, recall: float = TARGET_RECALL) -> float | None:
    """The highest score t with at least `recall` of the anomalous frames scoring >= t."""
    if anomalous_scores.size == 0:
        return None
    ordered = np.sort(anomalous_scores)[::-1]
    return float(ordered[max(0, int(np.ceil(recall * ordered.size)) - 1)])


def roc_points(videos: Sequence[VideoFrames]) -> tuple[np.ndarray, np.ndarray] | None:
    """(false positive rate, true positive rate) of the all-frames ROC curve, None if undefined."""
    scores, labels = concatenate(videos)
    if labels.size == 0 or labels.all() or not labels.any():
        return None
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=True)
    return fpr, tpr


def compute_metrics(videos: Sequence[VideoFrames], *, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Every metric of the module docstring plus video and frame counts, as a JSON-ready dict."""
    anomalous = [v for v in videos if v.is_anomaly]
    normal = [v for v in videos if not v.is_anomaly]
    scores, labels = concatenate(videos)
    anomalous_scores, anomalous_labels = concatenate(anomalous)
    normal_scores, _ = concatenate(normal)
    recall_threshold = threshold_at_recall(scores[labels])
    high_recall_threshold = threshold_at_recall(scores[labels], HIGH_RECALL)

    per_class_auc: dict[str, float | None] = {}
    per_class_videos: dict[str, int] = {}
    for label in sorted({v.label for v in anomalous}):
        members = [v for v in anomalous if v.label == label]
        class_scores, class_labels = concatenate(members + normal)
        per_class_auc[label] = roc_auc(class_scores, class_labels)
        per_class_videos[label] = len(members)

    return {
        "auc": roc_auc(scores, labels),
        "auc_anomalous_videos": roc_auc(anomalous_scores, anomalous_labels),
        "ap": average_precision(scores, labels),
        "ap_trapezoid": pr_area_trapezoid(scores, labels),
        "false_alarm_rate": false_alarm_rate(normal_scores, threshold),
        "false_alarm_threshold": threshold,
        "threshold_at_recall": recall_threshold,
        "target_recall": TARGET_RECALL,
        "false_alarm_rate_at_recall": (None if recall_threshold is None or normal_scores.size == 0
                                       else float(np.mean(normal_scores >= recall_threshold))),
        "threshold_at_recall_95": high_recall_threshold,
        "false_alarm_rate_at_recall_95": (None if high_recall_threshold is None or normal_scores.size == 0
                                          else float(np.mean(normal_scores >= high_recall_threshold))),
        "per_class_auc": per_class_auc,
        "per_class_videos": per_class_videos,
        "num_videos": len(videos),
        "num_anomalous_videos": len(anomalous),
        "num_normal_videos": len(normal),
        "num_frames": int(labels.size),
        "num_anomalous_frames": int(labels.sum()),
        "mean_score_normal_frames": float(scores[~labels].mean()) if (~labels).any() else None,
        "mean_score_anomalous_frames": float(scores[labels].mean()) if labels.any() else None,
    }


# --- temporal detection (heads' rows) ---------------------------------------------------------------


def runs_above(frame_scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """[start, end) frame runs with score >= threshold."""
    above = np.concatenate([[False], frame_scores >= threshold, [False]])
    edges = np.flatnonzero(above[1:] != above[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def proposals(frame_scores: np.ndarray, thresholds: Sequence[float] = PROPOSAL_THRESHOLDS) -> list[tuple[int, int, float]]:
    """(start, end, score) of every run above each threshold, duplicates once; score = the run's mean."""
    found = {}
    for threshold in thresholds:
        for start, end in runs_above(frame_scores, threshold):
            found[(start, end)] = float(frame_scores[start:end].mean())
    return [(start, end, score) for (start, end), score in found.items()]


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    overlap = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - overlap
    return overlap / union if union > 0 else 0.0


def detection_ap(predicted: dict[str, list[tuple[int, int, float]]], segments: dict[str, list[tuple[int, int]]],
                 iou: float) -> float | None:
    """Average precision (step-wise) of all videos' proposals at one IoU: by descending score, a
    proposal is a hit when it overlaps a not yet matched segment of its video by >= iou."""
    total = sum(len(s) for s in segments.values())
    if total == 0:
        return None
    ranked = sorted(((score, video, (start, end)) for video, items in predicted.items() for start, end, score in items),
                    key=lambda item: -item[0])
    matched = {video: [False] * len(s) for video, s in segments.items()}
    hits = []
    for _, video, interval in ranked:
        best, best_index = 0.0, -1
        for index, segment in enumerate(segments.get(video, [])):
            overlap = interval_iou(interval, segment)
            if overlap >= iou and overlap > best and not matched[video][index]:
                best, best_index = overlap, index
        if best_index >= 0:
            matched[video][best_index] = True
        hits.append(best_index >= 0)
    if not hits:
        return 0.0
    hits_array = np.asarray(hits, dtype=np.float64)
    true_positives = np.cumsum(hits_array)
    precision = true_positives / np.arange(1, len(hits_array) + 1)
    return float(np.sum(precision * hits_array) / total)


def detection_map(videos: Sequence[VideoFrames], segments: dict[str, list[tuple[int, int]]],
                  ious: Sequence[float] = DETECTION_IOUS) -> dict:
    """{"iou_0.1": AP, ..., "mean": mean AP} over `ious`: proposals of each video's frame scores
    against its annotated segments (frames, [start, end)); normal videos' proposals are all false."""
    predicted = {v.video: proposals(v.scores) for v in videos}
    per_iou = {f"iou_{iou:.1f}": detection_ap(predicted, segments, iou) for iou in ious}
    values = [v for v in per_iou.values() if v is not None]
    return {**per_iou, "mean": float(np.mean(values)) if values else None}
