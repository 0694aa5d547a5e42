"""Datasets beyond UCF-Crime: the registry, mixed files, annotation-tool paths, XD-Violence / MSAD /
ShanghaiTech ground truth and AP, keyframes past a video's end. Real clips, real ffmpeg, real shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fgclip.cli import main as cli
from fgclip.eval.ground_truth import complete_with_normals, frame_labels, load_ground_truth
from fgclip.eval.metrics import average_precision, compute_metrics, pr_area_trapezoid, VideoFrames
from pipeline.annotations import AnnotationRecord, Keyframe, Region, validate_annotations
from pipeline.datasets import dataset_of_path, get_dataset, label_from_path
from pipeline.frames import FramesError, build_shards
from pipeline.shards import ShardReader, list_shards, read_manifest
from pipeline.video_paths import PathMap, resolve_video

SHORT_CLIP = "megamind_xvid.avi"  # 270 frames at 23.98 fps (11.26 s)
BOX = [0.1, 0.2, 0.5, 0.6]


def raw(video: str, **extra) -> dict:
    return {"video": video, "global_caption": "a person in a shop", "region_captions": ["a person"],
            "box_infos": [[{"frame": 5, "bbox": BOX}]], "timestamps": None, **extra}


# --- the registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("video, dataset, label", [
    ("UCF_Crimes/Videos/Abuse/Abuse001_x264.mp4", "ucf-crime", ("Abuse", True)),
    ("Abuse/Abuse001_x264.mp4", "ucf-crime", ("Abuse", True)),
    ("/data/local-files/?d=MSAD/MSAD_Videos/MSAD_anomaly_videos/Traffic_accident/Traffic_accident_3.mp4", "msad",
     ("Traffic_accident", True)),
    ("MSAD/normal/MSAD_normal_testing_12.mp4", "msad", ("Normal", False)),
    ("XD/test/Bad.Boys.1995__#01-11-55_01-12-40_label_B2-G-0.mp4", "xd-violence", ("Shooting", True)),
    ("XD/test/A.Beautiful.Mind.2001__#00-25-20_00-29-20_label_A.mp4", "xd-violence", ("Normal", False)),
    ("ShanghaiTech/train/normal/01_001.avi", "shanghaitech", ("Normal", False)),
])
def test_dataset_and_label_from_path(video, dataset, label):
    found = dataset_of_path(video)
    assert found.name == dataset
    assert label_from_path(video, found) == label
    assert get_dataset(found.aliases[0]) is found


def test_label_studio_and_mapped_paths_resolve_under_the_video_root(tmp_path):
    (tmp_path / "MSAD" / "a b").mkdir(parents=True)
    (tmp_path / "MSAD" / "a b" / "Fire_1.mp4").write_bytes(b"x")
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "9f3e2a1b-Fire_2.mp4").write_bytes(b"x")
    (tmp_path / "nas").mkdir()
    (tmp_path / "nas" / "Fire_3.mp4").write_bytes(b"x")
    assert resolve_video("/data/local-files/?d=MSAD/a%20b/Fire_1.mp4", tmp_path).path == tmp_path / "MSAD/a b/Fire_1.mp4"
    assert resolve_video("/data/upload/7/9f3e2a1b-Fire_2.mp4", tmp_path).path == tmp_path / "7/9f3e2a1b-Fire_2.mp4"
    mapped = PathMap.parse(["/mnt/old=nas", "/mnt=elsewhere"])
    assert resolve_video("/mnt/old/Fire_3.mp4", tmp_path, mapped).path == tmp_path / "nas/Fire_3.mp4"
    missing = resolve_video("/data/upload/7/Fire_4.mp4", tmp_path)
    assert missing.path is None and missing.tried == [tmp_path / "7/Fire_4.mp4", tmp_path / "Fire_4.mp4"]


# --- a mixed UCF-Crime + MSAD file --------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(link_real_clips, tmp_path_factory, shared_data):
    """Videos under one root, a file mixing UCF-Crime records and MSAD records with Label Studio
    URLs, and MSAD's test list (UCF-Crime's is the real one)."""
    base = tmp_path_factory.mktemp("mixed")
    root = link_real_clips(base / "videos", {
        "UCF_Crimes/Videos/Abuse/Abuse901_x264.avi": SHORT_CLIP,
        "MSAD/MSAD_Videos/MSAD_anomaly_videos/Assault/Assault_1.avi": SHORT_CLIP,
        "12/4f1c2d3e-Fire_3.avi": SHORT_CLIP,  # Label Studio upload to project 12
    })
    records = [
        raw("UCF_Crimes/Videos/Abuse/Abuse901_x264.avi"),
        raw("UCF_Crimes/Videos/Abuse/Abuse028_x264.mp4"),  # official UCF-Crime test video
        raw("/data/local-files/?d=MSAD/MSAD_Videos/MSAD_anomaly_videos/Assault/Assault_1.avi"),
        raw("/data/local-files/?d=MSAD/MSAD_Videos/MSAD_anomaly_videos/Assault/Assault_2.mp4"),  # MSAD test video
        raw("/data/upload/12/4f1c2d3e-Fire_3.avi", dataset="MSAD"),
        raw("/data/local-files/?d=MSAD/MSAD_Videos/MSAD_anomaly_videos/Fire/Fire_9.mp4"),  # not on disk
        # in UCF-Crime's test list by name, but an MSAD video: not UCF-Crime's leak
        raw("/data/local-files/?d=MSAD/MSAD_Videos/MSAD_anomaly_videos/Abuse/Abuse030_x264.mp4"),
    ]
    annotations = base / "annotations" / "mixed.json"
    annotations.parent.mkdir()
    annotations.write_text(json.dumps(records))
    msad_test = base / "msad" / "MSAD_Test.txt"  # found by its place: ../msad/ of the annotation file
    msad_test.parent.mkdir()
    msad_test.write_text("Assault_2\nFire_7\nMSAD_normal_testing_1\n")
    return annotations, root, shared_data / "ucf" / "Anomaly_Test.txt"


def test_mixed_file_gets_a_leak_check_and_classes_per_dataset(mixed):
    annotations, _, ucf_test = mixed
    report = validate_annotations(annotations, test_split=ucf_test)
    overlaps = sorted(p.record_index for p in report.problems if p.kind == "test-split-overlap")
    assert overlaps == [1, 3]  # Abuse028 against UCF-Crime's list, Assault_2 against MSAD's
    assert report.test_splits == {"ucf-crime": ucf_test, "msad": annotations.parent.parent / "msad" / "MSAD_Test.txt"}
    assert {r.index: (r.dataset, r.label) for r in report.records}[4] == ("msad", "Fire")
    assert report.datasets["msad"]["classes"] == {"Abuse": 1, "Assault": 2, "Fire": 2}
    assert report.datasets["msad"]["unknown_labels"] == ["Abuse"]  # Abuse is no MSAD class: reported
    assert report.datasets["ucf-crime"]["test_videos_overlapped"] == 1

    result = CliRunner().invoke(cli, ["validate", str(annotations), "--test-split", str(ucf_test)])
    assert result.exit_code == 1
    assert "dataset UCF-Crime: 2 records" in result.output and "dataset MSAD (Multi-Scenario Anomaly Detection): 5 records" in result.output
    assert "unknown-label" in result.output


def test_mixed_file_frames_resolve_label_studio_paths_and_list_the_unresolved(mixed, tmp_path):
    annotations, root, ucf_test = mixed
    result = CliRunner().invoke(cli, [
        "frames", str(annotations), "--video-root", str(root), "--out", str(tmp_path / "out"), "-t", "4",
        "--size", "16", "--workers", "1", "--test-split", str(ucf_test), "--drop-test-overlap"])
    assert result.exit_code == 0, result.output
    shard_dir = tmp_path / "out" / "train_t4"
    metas = [m for path in list_shards(shard_dir) for m in ShardReader(path).metas()]
    assert sorted((m.record_index, m.label) for m in metas) == [(0, "Abuse"), (2, "Assault"), (4, "Fire")]
    manifest = read_manifest(shard_dir)
    missing = {s["record_index"]: s for s in manifest["skipped"] if s["kind"] == "video-missing"}
    assert missing[5]["tried"] == [str(root / "MSAD/MSAD_Videos/MSAD_anomaly_videos/Fire/Fire_9.mp4")]
    assert missing[6]["tried"] == [str(root / "MSAD/MSAD_Videos/MSAD_anomaly_videos/Abuse/Abuse030_x264.mp4")]
    assert manifest["summary"]["unresolved_videos"] == 2


# --- keyframes and windows past the end ---------------------------------------------------------------


def test_keyframes_past_the_end_are_reported_per_record(link_real_clips, tmp_path):
    root = link_real_clips(tmp_path / "videos", {"Abuse/Abuse901_x264.avi": SHORT_CLIP})
    region = Region("a person", (Keyframe(100, tuple(BOX)), Keyframe(300, tuple(BOX)), Keyframe(420, tuple(BOX))))
    records = [
        AnnotationRecord(0, "Abuse/Abuse901_x264.avi", "a fight", (region,), None, "Abuse", True),
        AnnotationRecord(1, "Abuse/Abuse901_x264.avi", "the end", (), (8.0, 11.6), "Abuse", True),  # 0.34 s past
        AnnotationRecord(2, "Abuse/Abuse901_x264.avi", "fine", (), (1.0, 5.0), "Abuse", True),
    ]
    out = tmp_path / "t4"
    build_shards(records, video_root=root, out_dirs={4: out}, size=16, workers=1, progress=False)
    warnings = read_manifest(out)["warnings"]
    assert [(w["record_index"], w["kind"], w["num_frames"]) for w in warnings] == [
        (0, "keyframe-past-end", 270), (1, "window-past-end", 270)]
    assert warnings[0]["keyframes"] == [300, 420] and abs(warnings[0]["fps"] - 23.976) < 0.01
    assert "270 frames at 23.98 fps" in warnings[0]["message"]
    assert read_manifest(out)["summary"]["records"] == 3  # warned records are kept

    with pytest.raises(FramesError, match=r"--strict: record 0 .*270 frames at 23.98 fps"):
        build_shards(records, video_root=root, out_dirs={4: tmp_path / "strict"}, size=16, workers=1,
                     strict=True, progress=False)


# --- XD-Violence, MSAD, ShanghaiTech ground truth ------------------------------------------------------

XD_VIOLENT = "Bad.Boys.1995__#01-11-55_01-12-40_label_B2-0-0"
XD_NORMAL = "A.Beautiful.Mind.2001__#00-25-20_00-29-20_label_A"


def test_xd_violence_ground_truth_and_ap_both_ways(tmp_path):
    annotations = tmp_path / "annotations.txt"
    annotations.write_text(f"{XD_VIOLENT} 2 4 7 8\n")
    dataset, gt = load_ground_truth(annotations)
    assert dataset == "xd-violence" and gt[XD_VIOLENT].label == "Shooting"
    gt = complete_with_normals(gt, [(XD_VIOLENT, f"{XD_VIOLENT}.mp4"), (XD_NORMAL, f"x/{XD_NORMAL}.mp4"),
                                    ("Heat.1995__label_B1-0-0", "Heat.1995__label_B1-0-0.mp4")], dataset)
    assert sorted(gt) == sorted([XD_VIOLENT, XD_NORMAL])  # a violent video without annotation is not made normal
    labels = frame_labels(gt[XD_VIOLENT], 10, "half-open")
    assert labels.astype(int).tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 0, 0]
    assert frame_labels(gt[XD_VIOLENT], 10, "inclusive").astype(int).tolist() == [0, 0, 1, 1, 1, 0, 0, 1, 1, 0]

    # Hand-checked: scores 0.9, 0.8, 0.7, 0.6 on frames anomalous, normal, anomalous, normal.
    # PR points by threshold: (R 1/2, P 1), (1/2, 1/2), (1, 2/3), (1, 1/2).
    # step-wise AP = 1/2 * 1 + 1/2 * 2/3 = 5/6; trapezoid from (0, 1): 1/2 * (1 + 1)/2 + 1/2 * (1/2 + 2/3)/2 = 19/24
    scores, frame_gt = np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False])
    assert average_precision(scores, frame_gt) == pytest.approx(5 / 6)
    assert pr_area_trapezoid(scores, frame_gt) == pytest.approx(19 / 24)
    metrics = compute_metrics([VideoFrames("v", "Shooting", True, scores, frame_gt)])
    assert (metrics["ap"], metrics["ap_trapezoid"]) == (pytest.approx(5 / 6), pytest.approx(19 / 24))


def test_msad_csv_and_shanghaitech_masks(tmp_path):
    csv_path = tmp_path / "anomaly_annotation.csv"
    csv_path.write_text("name,scenario,total frames,starting frame of anomaly,ending frame of anomaly\n"
                        "Assault_1,shop,20,5,9\nPeople_falling_3,street,12,0,3\n")
    dataset, gt = load_ground_truth(csv_path)
    assert dataset == "msad" and (gt["Assault_1"].label, gt["People_falling_3"].label) == ("Assault", "People_falling")
    gt = complete_with_normals(gt, [("MSAD_normal_testing_4", "MSAD_normal_testing_4.mp4")], dataset)
    assert gt["MSAD_normal_testing_4"].intervals == () and not gt["MSAD_normal_testing_4"].is_anomaly
    assert frame_labels(gt["Assault_1"], 20, "inclusive").nonzero()[0].tolist() == [5, 6, 7, 8, 9]

    masks = tmp_path / "test_frame_mask"
    masks.mkdir()
    np.save(masks / "01_0014.npy", np.array([0, 1, 1, 0, 0, 1]))
    dataset, gt = load_ground_truth(masks)
    assert dataset == "shanghaitech" and gt["01_0014"].intervals == ((1, 3), (5, 6))
    # masks are exact: the interval convention does not move them
    for convention in ("inclusive", "half-open", "one-based"):
        assert frame_labels(gt["01_0014"], 6, convention).astype(int).tolist() == [0, 1, 1, 0, 0, 1]
    assert "01_001" in complete_with_normals(gt, [("01_001", "01_001.avi")], dataset)


def test_xd_violence_test_shards_and_evaluation_headline_ap(link_real_clips, tmp_path):
    """Test shards from XD-Violence's own names (list without extensions), evaluated with
    annotations.txt: the normal video comes from its name, the headline is AP, both ways."""
    from fgclip.models.factory import BUILTIN_CAPTIONS, init_model
    from pipeline.frames import build_test_shards

    root = link_real_clips(tmp_path / "videos", {f"{XD_VIOLENT}.mp4": SHORT_CLIP, f"{XD_NORMAL}.mp4": SHORT_CLIP})
    test_list = tmp_path / "XD_Test.txt"
    test_list.write_text(f"{XD_VIOLENT}\n{XD_NORMAL}\n")
    shards = tmp_path / "test_stride16"
    build_test_shards(test_list, video_root=root, out_dir=shards, size=16, workers=1, progress=False)
    metas = [m for path in list_shards(shards) for m in ShardReader(path).metas()]
    assert [(m.label, m.is_anomaly, m.num_source_frames) for m in metas] == [("Shooting", True, 270), ("Normal", False, 270)]

    annotations = tmp_path / "annotations.txt"
    annotations.write_text(f"{XD_VIOLENT} 16 63 200 215\n")
    model = init_model("tiny", tmp_path / "tiny", captions=BUILTIN_CAPTIONS)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(model), "--test-shards", str(shards), "--annotations",
                                      str(annotations), "--no-baseline", "--out", str(out), "--no-video-plots",
                                      "--readers", "0", "--quiet", "--convention", "half-open"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    metrics = report["models"][0]["metrics"]
    assert report["dataset"]["name"] == "xd-violence" and report["dataset"]["headline_metric"] == "ap"
    assert f"frame AP {metrics['ap']:.4f} (step-wise; trapezoidal PR area {metrics['ap_trapezoid']:.4f})" in report["headline"]
    assert (metrics["num_videos"], metrics["num_normal_videos"], metrics["num_anomalous_frames"]) == (2, 1, 47 + 15)
    assert "AP (step-wise) | AP (trapezoid)" in (out / "report.md").read_text()
