"""Ground truth from the official UCF-Crime temporal annotation file."""

from __future__ import annotations

import numpy as np
import pytest

from fgclip.eval.ground_truth import (
    CONVENTIONS,
    AnnotationFormatError,
    anomaly_class_names,
    camel_case_to_words,
    frame_labels,
    parse_temporal_annotations,
    ranges_past_end,
    read_frame_counts,
    video_key,
)


def test_official_file_frame_totals(shared_data):
    annotations = parse_temporal_annotations(shared_data / "ucf" / "Temporal_Anomaly_Annotation.txt")
    counts = read_frame_counts(shared_data / "ucf" / "UCF_Annotation_with_frame_counts.txt")
    assert len(annotations) == 290
    assert set(annotations) == set(counts)
    assert sum(counts[v] for v in annotations) == 1_111_808
    anomalous = {conv: sum(int(frame_labels(a, counts[v], conv).sum()) for v, a in annotations.items())
                 for conv in CONVENTIONS}
    assert anomalous["inclusive"] == 84_331
    assert anomalous["half-open"] == 84_182
    assert sum(a.is_anomaly for a in annotations.values()) == 140
    assert len(anomaly_class_names(annotations)) == 13
    # Seven official intervals end on or past the last frame; they are cut, and reported.
    assert sum(bool(ranges_past_end(a, counts[v])) for v, a in annotations.items()) == 7


def test_conventions_on_one_line(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("Arson011_x264.mp4  Arson  2  4  7  9\nNormal_Videos_001_x264  Normal  -1  -1  -1  -1\n")
    annotations = parse_temporal_annotations(path)
    arson = annotations["Arson011_x264"]
    assert arson.is_anomaly and not annotations["Normal_Videos_001_x264"].is_anomaly
    assert np.flatnonzero(frame_labels(arson, 12, "inclusive")).tolist() == [2, 3, 4, 7, 8, 9]
    assert np.flatnonzero(frame_labels(arson, 12, "half-open")).tolist() == [2, 3, 7, 8]
    assert np.flatnonzero(frame_labels(arson, 12, "one-based")).tolist() == [1, 2, 3, 6, 7, 8]
    # Cut at the video's end, not an error.
    assert np.flatnonzero(frame_labels(arson, 9, "inclusive")).tolist() == [2, 3, 4, 7, 8]
    assert ranges_past_end(arson, 9) == [(7, 10)]
    assert not frame_labels(annotations["Normal_Videos_001_x264"], 5).any()


def test_bad_lines_name_the_line(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("Abuse028_x264  Abuse  165  240  -1  -1\nAbuse030_x264  Abuse  300  200  -1  -1\n")
    with pytest.raises(AnnotationFormatError, match=r"gt.txt:2: interval \(300, 200\)"):
        parse_temporal_annotations(path)
    path.write_text("Abuse028_x264  Abuse  165  240\nAbuse028_x264.mp4  Abuse  1  2\n")
    with pytest.raises(AnnotationFormatError, match="annotated twice"):
        parse_temporal_annotations(path)
    path.write_text("Abuse028_x264  Abuse  x  240\n")
    with pytest.raises(AnnotationFormatError, match="gt.txt:1"):
        parse_temporal_annotations(path)
    path.write_text("Abuse028_x264  Abuse  1  2\n")
    with pytest.raises(ValueError, match="convention 'closed'"):
        frame_labels(parse_temporal_annotations(path)["Abuse028_x264"], 3, "closed")


def test_names_and_class_words():
    assert video_key("Abuse/Abuse028_x264.mp4") == video_key("Abuse028_x264") == "Abuse028_x264"
    assert camel_case_to_words("RoadAccidents") == "road accidents"
    assert camel_case_to_words("Shoplifting") == "shoplifting"
