"""Annotation validation: the real files' known figures, crafted bad inputs, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from fgclip.cli import main
from pipeline.annotations import (
    BOX_OVERSHOOT_TOLERANCE,
    ERROR,
    WARNING,
    AnnotationRecord,
    find_test_split,
    label_from_video_path,
    validate_annotations,
)
from pipeline.ucf_split import TEST_SPLIT_ENV, read_split_list, video_key

EN_JSON = "annotations/ucf_fgclip_train_with_timestamps_en.json"
CAPTION2_JSON = "annotations/ucf_fgclip_with_caption2.json"


# --- the real files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def en_report(shared_data):
    return validate_annotations(shared_data / EN_JSON)


@pytest.fixture(scope="module")
def caption2_report(shared_data):
    return validate_annotations(shared_data / CAPTION2_JSON)


def _records_of(report, kind):
    return sorted({p.record_index for p in report.problems if p.kind == kind})


def _official_test_stems(shared_data: Path) -> set[str]:
    # Read independently of pipeline.ucf_split: last path component without extension.
    lines = (shared_data / "ucf/Anomaly_Test.txt").read_text().split()
    return {line.rsplit("/", 1)[-1].rsplit(".", 1)[0] for line in lines}


def test_en_file_figures(en_report, shared_data):
    raw = json.loads((shared_data / EN_JSON).read_text())
    assert en_report.num_source_records == len(raw) == 1559
    assert en_report.test_split == shared_data / "ucf/Anomaly_Test.txt"  # found by the default lookup
    # 5 exact duplicates dropped, nothing else: every other record is usable
    assert _records_of(en_report, "duplicate-record") == [391, 397, 802, 1473, 1544]
    assert en_report.dropped == [391, 397, 802, 1473, 1544]
    assert len(en_report.records) == 1554
    assert len({r.video for r in en_report.records}) == 707
    assert sum(1 for r in en_report.records if any(reg.keyframes for reg in r.regions)) == 232
    assert sum(1 for r in en_report.records if r.window_s is not None) == 1306
    # the one stray Chinese character ("baseball帽"), kept as a warning
    assert _records_of(en_report, "non-english-caption") == [87]
    # test overlap: 140 official test videos in 313 records, all errors
    assert len(en_report.test_overlap) == 140
    assert set(en_report.test_overlap) <= _official_test_stems(shared_data)
    assert en_report.counts() == {
        "test-split-overlap": 313,
        "box-clipped": 21,  # float noise up to 0.00096 past 0..1, in 13 records
        "duplicate-record": 5,
        "duplicate-window": 1,  # record 1509 re-captions the whole of Normal_Videos_935 (record 1508)
        "non-english-caption": 1,
    }
    assert {p.kind for p in en_report.errors()} == {"test-split-overlap"}
    assert len(_records_of(en_report, "box-clipped")) == 13


def test_en_file_records_are_clean(en_report):
    for record in en_report.records:
        assert isinstance(record, AnnotationRecord)
        for region in record.regions:
            frames = [kf.frame for kf in region.keyframes]
            assert frames == sorted(set(frames))
            for kf in region.keyframes:
                x1, y1, x2, y2 = kf.box
                assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0
    labels = {r.label for r in en_report.records}
    assert labels == {"Abuse", "Burglary", "Explosion", "Fighting", "Normal"}
    assert all(r.is_anomaly == (r.label != "Normal") for r in en_report.records)
    first = en_report.records[0]
    assert first.video.endswith("Abuse/Abuse001_x264.mp4") and first.window_s is None
    assert [r.keyframes[0].frame for r in first.regions] == [192, 816, 1912]


def test_en_file_allow_and_drop_overlap(shared_data, en_report):
    allowed = validate_annotations(shared_data / EN_JSON, allow_test_overlap=True)
    assert allowed.errors() == [] and len(allowed.records) == 1554
    assert {p.severity for p in allowed.problems if p.kind == "test-split-overlap"} == {WARNING}
    dropped = validate_annotations(shared_data / EN_JSON, drop_test_overlap=True)
    assert dropped.errors() == [] and len(dropped.records) == 1554 - 313
    assert not any(video_key(r.video) in {video_key(s) for s in en_report.test_overlap} for r in dropped.records)


def test_caption2_file_figures(caption2_report, shared_data):
    report = caption2_report
    assert report.num_source_records == 1962
    assert len(_records_of(report, "non-english-caption")) == 159
    assert _records_of(report, "region-box-mismatch") == [1804, 1814, 1848, 1874, 1921]
    assert len(_records_of(report, "duplicate-record")) == 5
    assert len(report.test_overlap) == 210
    assert report.counts() == {
        "test-split-overlap": 383,
        "region-box-mismatch": 5,
        "non-english-caption": 360,
        "box-clipped": 24,
        "duplicate-record": 5,
        "duplicate-window": 1,
        "no-regions": 1,  # record 1657 (Stealing004) has no region captions at all
    }
    assert len(report.records) == 1962 - 5 - 5
    # a mismatch is an error (the record is dropped) unless the user accepts dropping it
    lenient = validate_annotations(shared_data / CAPTION2_JSON, allow_test_overlap=True, drop_invalid=True)
    assert lenient.errors() == [] and len(lenient.records) == 1952


def test_chinese_captions_are_native_for_the_bilingual_family(shared_data, en_report):
    """The real file's Chinese captions: flagged for CLIP, not for FG-CLIP 2 (siglip2); the records
    and every other finding stay the same."""
    bilingual = validate_annotations(shared_data / CAPTION2_JSON, allow_test_overlap=True, model_family="siglip2")
    clip = validate_annotations(shared_data / CAPTION2_JSON, allow_test_overlap=True)
    assert clip.counts()["non-english-caption"] == 360 and "non-english-caption" not in bilingual.counts()
    assert {k: v for k, v in clip.counts().items() if k != "non-english-caption"} == bilingual.counts()
    assert [r.global_caption for r in bilingual.records] == [r.global_caption for r in clip.records]
    with pytest.raises(ValueError, match="model family"):
        validate_annotations(shared_data / CAPTION2_JSON, model_family="gpt")


def test_caption2_translations_round_trip(shared_data, tmp_path):
    todo = tmp_path / "todo.json"
    result = CliRunner().invoke(main, ["export-captions", str(shared_data / CAPTION2_JSON), "--out", str(todo)])
    assert result.exit_code == 0, result.output
    pending = json.loads(todo.read_text(encoding="utf-8"))
    assert len(pending) == 278 and set(pending.values()) == {""}
    filled = {original: f"english caption {i}" for i, original in enumerate(pending)}
    report = validate_annotations(shared_data / CAPTION2_JSON, allow_test_overlap=True, translations=filled)
    assert "non-english-caption" not in report.counts()
    assert report.translated_captions == 360
    by_index = {r.index: r for r in report.records}
    assert by_index[1803].global_caption == filled["Abuse 异常视频:一个女人虐待小孩。"]
    # half translated: the other half stays listed, and a re-export keeps the filled half
    half = dict(list(filled.items())[:100])
    (tmp_path / "half.json").write_text(json.dumps(half, ensure_ascii=False), encoding="utf-8")
    partial = validate_annotations(shared_data / CAPTION2_JSON, allow_test_overlap=True, translations=half)
    assert 0 < partial.counts()["non-english-caption"] < 360
    result = CliRunner().invoke(main, ["export-captions", str(shared_data / CAPTION2_JSON), "--out", str(todo),
                                       "--translations", str(tmp_path / "half.json")])
    assert result.exit_code == 0, result.output
    again = json.loads(todo.read_text(encoding="utf-8"))
    assert sum(1 for v in again.values() if v) == 100


def test_cli_real_file_fails_on_overlap_and_names_every_test_video(shared_data, en_report, tmp_path):
    path = str(shared_data / EN_JSON)
    result = CliRunner().invoke(main, ["validate", path, "--json-report", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    expected = sorted(en_report.test_overlap)
    assert len(expected) == 140
    listed = [line.split()[0] for line in result.output.splitlines()
              if line.startswith("    ") and line.split()[0] in en_report.test_overlap]
    assert sorted(listed) == expected
    assert "Normal_Videos_003_x264" not in en_report.test_overlap or "Normal_Videos_003_x264" in listed
    saved = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert len(saved["problems"]) == len(en_report.problems) and len(saved["test_overlap"]) == 140

    allowed = CliRunner().invoke(main, ["validate", path, "--allow-test-overlap"])
    assert allowed.exit_code == 0, allowed.output
    assert "OK: 1554 usable records" in allowed.output


# --- crafted inputs ------------------------------------------------------------------------

GOOD_RECORD = {
    "video": "UCF_Crimes/Videos/Abuse/Abuse001_x264.mp4",
    "global_caption": "A man hits a woman in a hallway.",
    "region_captions": ["A man in white.", "A woman in red."],
    "box_infos": [
        [{"frame": 10, "bbox": [0.1, 0.2, 0.5, 0.9]}, {"frame": 40, "bbox": [0.2, 0.2, 0.6, 0.9]}],
        [],
    ],
    "timestamps": None,
}
SPLIT_LIST = "Abuse/Abuse028_x264.mp4\nTesting_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4\n"


def _write(tmp_path: Path, records, *, split: bool = True, name: str = "train.json") -> Path:
    path = tmp_path / name
    path.write_text(records if isinstance(records, str) else json.dumps(records, ensure_ascii=False), encoding="utf-8")
    if split:
        (tmp_path / "Anomaly_Test.txt").write_text(SPLIT_LIST)
    return path


def _with(**changes) -> dict:
    record = json.loads(json.dumps(GOOD_RECORD))
    for key, value in changes.items():
        if value is _DELETE:
            del record[key]
        else:
            record[key] = value
    return record


_DELETE = object()


def _box_infos(bbox, frame=10):
    return [[{"frame": frame, "bbox": bbox}], []]


def test_good_record_passes(tmp_path):
    report = validate_annotations(_write(tmp_path, [GOOD_RECORD]))
    assert report.problems == [] and report.errors() == []
    (record,) = report.records
    assert record.label == "Abuse" and record.is_anomaly and record.window_s is None
    assert [len(r.keyframes) for r in record.regions] == [2, 0]
    assert len(report.source_sha256) == 64


# (name, record or raw text, expected kind, expected field, text the message must contain)
BAD_INPUTS = [
    ("wrong type caption", [_with(global_caption=5)], "wrong-type", "global_caption", "got number 5"),
    ("wrong type regions", [_with(region_captions="a man")], "wrong-type", "region_captions", "list of strings"),
    ("wrong type frame", [_with(box_infos=[[{"frame": "10", "bbox": [0.1, 0.2, 0.5, 0.9]}], []])],
     "wrong-type", "box_infos[0][0].frame", '"10"'),
    ("missing field", [_with(global_caption=_DELETE)], "missing-field", "global_caption", 'no "global_caption"'),
    ("nan coordinate", '[' + json.dumps(_with(box_infos=_box_infos([0.1, 0.2, 0.5, 0.9]))).replace("0.5", "NaN") + ']',
     "non-finite", "box_infos[0][0].bbox", "NaN"),
    ("negative frame", [_with(box_infos=_box_infos([0.1, 0.2, 0.5, 0.9], frame=-3))],
     "negative-frame", "box_infos[0][0].frame", "-3"),
    ("x1 >= x2", [_with(box_infos=_box_infos([0.6, 0.2, 0.5, 0.9]))], "box-degenerate", "box_infos[0][0].bbox", "0.6"),
    ("far outside", [_with(box_infos=_box_infos([10, 20, 300, 200]))], "box-out-of-range", "box_infos[0][0].bbox",
     "pixel coordinates"),
    ("reversed timestamps", [_with(timestamps=[30.0, 12.5])], "timestamps-reversed", "timestamps", "[30.0, 12.5]"),
    ("negative timestamps", [_with(timestamps=[-1.0, 12.5])], "timestamps-negative", "timestamps", "-1.0"),
    ("empty caption", [_with(region_captions=["A man in white.", "  "])], "empty-caption", "region_captions[1]", "empty"),
    ("count mismatch", [_with(box_infos=[[]])], "region-box-mismatch", "box_infos", "2 region captions but 1 box lists"),
    ("bad hard negatives", [_with(hard_negatives=[["A man in black."]])], "hard-negative-mismatch", "hard_negatives",
     "1 hard-negative lists for 2"),
    ("record not object", [GOOD_RECORD, "oops"], "not-an-object", "", "string"),
]


@pytest.mark.parametrize("name, records, kind, field, value", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_record_is_an_error_naming_record_and_field(tmp_path, name, records, kind, field, value):
    path = _write(tmp_path, records)
    report = validate_annotations(path)
    bad_index = len(json.loads(path.read_text())) - 1
    (problem,) = [p for p in report.errors() if p.kind == kind]
    assert problem.record_index == bad_index and problem.field == field and value in problem.message
    assert bad_index in report.dropped and all(r.index != bad_index for r in report.records)

    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped exception
    assert "Traceback" not in result.output
    assert f"record {bad_index}" in result.output and kind in result.output and value in result.output
    if field:
        assert field in result.output

    lenient = CliRunner().invoke(main, ["validate", str(path), "--drop-invalid"])
    assert lenient.exit_code == 0, lenient.output


@pytest.mark.parametrize("text, message", [
    ("[1, 2", "not valid JSON"),
    ('{"video": "a.mp4"}', "top level must be a list"),
    ("[]", "empty list"),
])
def test_bad_file_is_one_line_error(tmp_path, text, message):
    path = _write(tmp_path, text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert message in result.output and str(path) in result.output
    assert len(result.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_warnings_fix_and_keep(tmp_path):
    small = BOX_OVERSHOOT_TOLERANCE / 2
    records = [
        _with(box_infos=[[{"frame": 40, "bbox": [-small, 0.2, 1 + small, 0.9]},
                          {"frame": 10, "bbox": [0.1, 0.2, 0.5, 0.9]},
                          {"frame": 10, "bbox": [0.3, 0.3, 0.4, 0.4]}], []],
              extra_note="by annotator 3"),
        _with(video="UCF_Crimes/Videos/Abuse/Abuse002_x264.mp4", global_caption="Он бьёт женщину."),
        _with(video="UCF_Crimes/Videos/Abuse/Abuse003_x264.mp4", region_captions=[], box_infos=[]),
    ]
    report = validate_annotations(_write(tmp_path, records))
    assert report.errors() == []
    assert report.counts() == {"box-clipped": 1, "unsorted-keyframes": 1, "duplicate-keyframe": 1,
                               "unknown-field": 1, "non-english-caption": 1, "no-regions": 1}
    unknown = next(p for p in report.problems if p.kind == "unknown-field")
    assert unknown.record_index == 0 and unknown.field == "extra_note" and "by annotator 3" in unknown.message
    assert "Cyrillic" in next(p for p in report.problems if p.kind == "non-english-caption").message
    # the bilingual family reads Chinese, not Russian: still flagged there
    bilingual = validate_annotations(_write(tmp_path, records), model_family="siglip2")
    assert "Cyrillic" in next(p for p in bilingual.problems if p.kind == "non-english-caption").message
    first = report.records[0].regions[0].keyframes
    assert [kf.frame for kf in first] == [10, 40]
    assert first[0].box == (0.1, 0.2, 0.5, 0.9)  # the first of the two frame-10 boxes
    assert first[1].box == (0.0, 0.2, 1.0, 0.9)  # clipped
    assert len(report.records) == 3 and report.records[2].regions == ()


def test_hard_negatives(tmp_path):
    good = _with(hard_negatives=[["A man in black.", "A woman in white."], []])
    bad = _with(video="UCF_Crimes/Videos/Abuse/Abuse002_x264.mp4", hard_negatives=[["A man in black."], [""]])
    report = validate_annotations(_write(tmp_path, [good, bad]))
    (record,) = report.records
    assert record.regions[0].hard_negatives == ("A man in black.", "A woman in white.")
    assert record.regions[1].hard_negatives == ()
    (problem,) = report.errors()
    assert problem.record_index == 1 and problem.field == "hard_negatives[1][0]" and problem.kind == "empty-caption"


def test_duplicates_keep_first(tmp_path):
    other = _with(video="UCF_Crimes/Videos/Abuse/Abuse002_x264.mp4")
    report = validate_annotations(_write(tmp_path, [GOOD_RECORD, other, GOOD_RECORD, dict(reversed(GOOD_RECORD.items()))]))
    assert [r.index for r in report.records] == [0, 1]
    assert _records_of(report, "duplicate-record") == [2, 3]
    assert all(p.severity == WARNING for p in report.problems)


def test_keyframes_outside_window_need_an_fps_hint(tmp_path):
    record = _with(timestamps=[10.0, 20.0],
                   box_infos=[[{"frame": 299, "bbox": [0.1, 0.2, 0.5, 0.9]}, {"frame": 450, "bbox": [0.1, 0.2, 0.5, 0.9]},
                               {"frame": 601, "bbox": [0.1, 0.2, 0.5, 0.9]}], []])
    path = _write(tmp_path, [record])
    assert validate_annotations(path).problems == []  # frame rate unknown: left to stage 1
    report = validate_annotations(path, fps_hint=30.0)
    outside = [p for p in report.problems if p.kind == "keyframe-outside-window"]
    assert [p.field for p in outside] == ["box_infos[0][0].frame", "box_infos[0][2].frame"]
    assert report.errors() == [] and len(report.records) == 1


# --- test split ---------------------------------------------------------------------------


def test_overlap_is_an_error_with_exact_names(tmp_path):
    records = [
        _with(video="Videos/Abuse/Abuse028_x264.mp4"),  # in the test list
        _with(video="Videos/Abuse/Abuse028.mp4"),  # same video without the _x264 suffix
        _with(video="Videos/Training_Normal_Videos_Anomaly/Normal_Videos003_x264.mp4"),  # training normal 003
        _with(video="Videos/Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4"),  # test normal 003
        _with(video="Videos/Abuse/Abuse0280_x264.mp4"),
    ]
    path = _write(tmp_path, records)
    report = validate_annotations(path)
    assert _records_of(report, "test-split-overlap") == [0, 1, 3]
    assert {p.severity for p in report.problems if p.kind == "test-split-overlap"} == {ERROR}
    assert report.test_overlap == {"Abuse028_x264": [0, 1], "Normal_Videos_003_x264": [3]}
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and "Abuse028_x264" in result.output and "Normal_Videos_003_x264" in result.output
    conflict = CliRunner().invoke(main, ["validate", str(path), "--allow-test-overlap", "--drop-test-overlap"])
    assert conflict.exit_code == 2 and "exclude each other" in conflict.output


def test_overlap_is_reported_for_dropped_records_too(tmp_path):
    broken = _with(video="Videos/Abuse/Abuse028_x264.mp4", box_infos=[[]])
    report = validate_annotations(_write(tmp_path, [broken]), drop_invalid=True)
    assert report.records == [] and report.test_overlap == {"Abuse028_x264": [0]}
    assert [p.kind for p in report.errors()] == ["test-split-overlap"]


def test_missing_test_split_is_never_a_silent_pass(tmp_path, monkeypatch):
    monkeypatch.delenv(TEST_SPLIT_ENV, raising=False)
    path = _write(tmp_path, [GOOD_RECORD], split=False)
    assert find_test_split(path) is None
    report = validate_annotations(path)
    (problem,) = report.errors()
    assert problem.kind == "test-split-missing" and "--test-split" in problem.message and "--allow-test-overlap" in problem.message
    assert report.test_split is None
    allowed = validate_annotations(path, allow_test_overlap=True)
    assert allowed.errors() == [] and allowed.counts() == {"test-split-missing": 1}
    # a named split list that does not exist is an error even when overlap is allowed
    typo = validate_annotations(path, test_split=tmp_path / "Anomaly_Tset.txt", allow_test_overlap=True)
    assert [p.kind for p in typo.errors()] == ["test-split-unreadable"]
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and "--test-split" in result.output


def test_find_test_split_order(tmp_path, monkeypatch):
    monkeypatch.delenv(TEST_SPLIT_ENV, raising=False)
    json_path = tmp_path / "data" / "annotations" / "train.json"
    json_path.parent.mkdir(parents=True)
    json_path.write_text("[]")
    grand = tmp_path / "ucf" / "Anomaly_Test.txt"
    grand.parent.mkdir()
    grand.write_text(SPLIT_LIST)
    assert find_test_split(json_path) == grand  # ../../ucf/
    sibling = tmp_path / "data" / "ucf" / "Anomaly_Test.txt"
    sibling.parent.mkdir()
    sibling.write_text(SPLIT_LIST)
    assert find_test_split(json_path) == sibling  # ../ucf/ before ../../ucf/
    beside = json_path.parent / "Anomaly_Test.txt"
    beside.write_text(SPLIT_LIST)
    assert find_test_split(json_path) == beside  # next to the JSON first
    monkeypatch.setenv(TEST_SPLIT_ENV, str(tmp_path / "elsewhere.txt"))
    assert find_test_split(json_path) == tmp_path / "elsewhere.txt"  # env wins, reported if missing


def test_split_list_formats(shared_data):
    entries = read_split_list(shared_data / "ucf/Anomaly_Test.txt")
    assert len(entries) == 290
    assert sum(e.is_anomaly for e in entries) == 140 and sum(not e.is_anomaly for e in entries) == 150
    temporal = read_split_list(shared_data / "ucf/Temporal_Anomaly_Annotation.txt")
    assert {e.stem: e.label for e in temporal} == {e.stem: e.label for e in entries}
    train = read_split_list(shared_data / "ucf/Anomaly_Train.txt")
    assert len(train) == 1610 and not {e.key for e in train} & {e.key for e in entries}


@pytest.mark.parametrize("video, expected", [
    ("UCF_Crimes/Videos/Abuse/Abuse001_x264.mp4", ("Abuse", True)),
    ("Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4", ("Normal", False)),
    ("Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4", ("Normal", False)),
    ("RoadAccidents012_x264.mp4", ("RoadAccidents", True)),
    ("clips/Normal_Videos_050_x264.mp4", ("Normal", False)),
    ("clips/Stealing019_x264.mp4", ("Stealing", True)),
])
def test_label_from_video_path(video, expected):
    assert label_from_video_path(video) == expected


def test_translation_file_errors_are_one_line(tmp_path):
    path = _write(tmp_path, [GOOD_RECORD])
    bad = tmp_path / "tr.json"
    bad.write_text('["not", "a", "mapping"]')
    result = CliRunner().invoke(main, ["validate", str(path), "--translations", str(bad)])
    assert result.exit_code == 1 and "expected a JSON object" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_no_nan_survives(tmp_path):
    text = '[' + json.dumps(_with(timestamps=[0.0, 5.0])).replace("5.0", "Infinity") + ']'
    report = validate_annotations(_write(tmp_path, text))
    assert report.records == [] and [p.kind for p in report.errors()] == ["non-finite"]
    assert all(math.isfinite(v) for r in report.records for v in (r.window_s or ()))
