"""The metrics the heads' rows added: false alarms at 95% recall and class-agnostic detection mAP."""

from __future__ import annotations

import numpy as np
import pytest

from fgclip.eval.metrics import VideoFrames, compute_metrics, detection_ap, detection_map, proposals, runs_above


def test_false_alarms_at_95_percent_recall_by_hand():
    # 20 anomalous frames scored 0.05..1.0: 95% recall needs 19 of them, so the threshold is 0.10
    anomalous = VideoFrames("a", "Abuse", True, np.arange(1, 21) / 20, np.ones(20, dtype=bool))
    normal = VideoFrames("n", "Normal", False, np.array([0.0, 0.09, 0.1, 0.5]), np.zeros(4, dtype=bool))
    metrics = compute_metrics([anomalous, normal])
    assert metrics["threshold_at_recall_95"] == pytest.approx(0.10)
    assert metrics["false_alarm_rate_at_recall_95"] == pytest.approx(2 / 4)  # 0.1 and 0.5
    assert metrics["threshold_at_recall"] == pytest.approx(0.15)  # 90%: 18 of 20
    assert metrics["false_alarm_rate_at_recall"] == pytest.approx(1 / 4)


def test_proposals_are_runs_above_each_threshold():
    scores = np.array([0.0, 0.6, 0.8, 0.2, 0.7, 0.0])
    assert runs_above(scores, 0.5) == [(1, 3), (4, 5)]
    found = {(s, e): round(score, 4) for s, e, score in proposals(scores, thresholds=(0.1, 0.5))}
    assert found == {(1, 5): round((0.6 + 0.8 + 0.2 + 0.7) / 4, 4), (1, 3): 0.7, (4, 5): 0.7}


def test_detection_ap_by_hand():
    segments = {"a": [(10, 20)], "b": [(0, 10)]}
    predicted = {"a": [(10, 20, 0.9), (30, 40, 0.8)], "b": [(0, 4, 0.7)], "n": [(0, 5, 0.95)]}
    # by score: n (miss), a1 (hit), a2 (miss), b (IoU 0.4: hit at 0.3, miss at 0.5)
    assert detection_ap(predicted, segments, 0.3) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert detection_ap(predicted, segments, 0.5) == pytest.approx((1 / 2) / 2)


def test_detection_map_means_over_ious():
    video = VideoFrames("a", "Abuse", True, np.r_[np.zeros(10), np.ones(10), np.zeros(10)], np.zeros(30, dtype=bool))
    result = detection_map([video], {"a": [(10, 20)]})
    assert result["iou_0.1"] == result["iou_0.5"] == 1.0 and result["mean"] == 1.0
