"""Frame-level metrics on hand-built score arrays whose AUC/AP are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fgclip.eval.metrics import VideoFrames, compute_metrics, roc_auc


def _video(name, label, scores, gt):
    return VideoFrames(video=name, label=label, is_anomaly=label != "Normal",
                       scores=np.array(scores, dtype=np.float32), gt=np.array(gt, dtype=bool))


VIDEOS = [
    _video("Arson001", "Arson", [0.1, 0.9, 0.8, 0.2], [0, 1, 1, 0]),
    _video("Shooting001", "Shooting", [0.4, 0.2], [1, 0]),
    _video("Normal001", "Normal", [0.3, 0.85], [0, 0]),
]


def test_known_values():
    m = compute_metrics(VIDEOS)
    # positives 0.9 0.8 0.4; negatives 0.1 0.2 0.2 0.3 0.85: 5 + 4 + 4 of 15 pairs ordered right.
    assert m["auc"] == pytest.approx(13 / 15)
    # ranked: 0.9 P, 0.85 N, 0.8 P, 0.4 P -> precisions 1, 2/3, 3/4 at each positive.
    assert m["ap"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert m["auc_anomalous_videos"] == pytest.approx(1.0)
    assert m["per_class_auc"]["Arson"] == pytest.approx(7 / 8)  # 0.8 loses to the normal 0.85
    assert m["per_class_auc"]["Shooting"] == pytest.approx(2 / 3)
    assert m["false_alarm_rate"] == pytest.approx(0.5)  # 0.85 of the normal frames 0.3, 0.85
    assert (m["num_videos"], m["num_anomalous_videos"], m["num_normal_videos"]) == (3, 2, 1)
    assert (m["num_frames"], m["num_anomalous_frames"]) == (8, 3)
    # 90% of the 3 anomalous frames (0.9, 0.8, 0.4) means all 3: threshold 0.4; normal frames
    # 0.3, 0.85 -> one of two at or above it.
    assert m["threshold_at_recall"] == pytest.approx(0.4) and m["false_alarm_rate_at_recall"] == pytest.approx(0.5)


def test_threshold_at_recall_finds_the_share_of_anomalous_frames():
    from fgclip.eval.metrics import threshold_at_recall

    scores = np.arange(1, 21) / 20.0  # 0.05 .. 1.0
    threshold = threshold_at_recall(scores, 0.9)
    assert np.mean(scores >= threshold) >= 0.9 and np.mean(scores >= threshold + 1e-9) < 0.9
    assert threshold_at_recall(np.zeros(0)) is None


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    by_pairs = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert roc_auc(scores, labels) == pytest.approx(by_pairs)


def test_undefined_metrics_are_none():
    only_normal = compute_metrics([VIDEOS[2]])
    assert only_normal["auc"] is None and only_normal["ap"] is None and only_normal["per_class_auc"] == {}
    only_anomalous = compute_metrics(VIDEOS[:1])
    assert only_anomalous["false_alarm_rate"] is None and only_anomalous["auc"] == pytest.approx(1.0)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="Arson002"):
        _video("Arson002", "Arson", [0.1, 0.2], [0, 1, 1])
