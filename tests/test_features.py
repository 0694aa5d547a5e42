"""`fgclip-vad features` on real videos: the two routes to test features agree, ten crops in
VadCLIP's order, the field's lists and ground truth, resuming, bad input, and two ranks (gloo)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fgclip.features import extract as fx
from fgclip.features.files import (
    FeatureFileError,
    load_feature,
    parse_path_maps,
    read_feature_list,
    read_features_dir,
    snippet_ground_truth,
    vadclip_ground_truth,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
MICRO_IMAGE_SIZE = 32  # tests/train_data.py's micro model


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The tiny synthetic dataset, its test split list and stride-16 test shards at the micro model's size."""
    from pipeline import embedded
    from pipeline.frames import build_test_shards
    from pipeline.synth import generate_dataset

    root = tmp_path_factory.mktemp("features_data")
    synth = generate_dataset(root / "synth", size="tiny", workers=1)
    shard_dir = root / "test_shards"
    build_test_shards(synth / embedded.TEST_LIST.name, video_root=synth / "videos", out_dir=shard_dir, stride=16,
                      size=MICRO_IMAGE_SIZE, workers=1, progress=False)
    return synth, shard_dir


def _plan(synth: Path, split: str = "test") -> list[fx.VideoItem]:
    return fx.items_from_list(synth / "Anomaly_Test.txt", synth / "videos", split, "ucf-crime")


def _settings(synth: Path, **changes) -> fx.ExtractionSettings:
    settings = fx.ExtractionSettings(crop=fx.CropRule(crops=1, size=MICRO_IMAGE_SIZE), batch_frames=64,
                                     annotations=synth / "Temporal_Anomaly_Annotation.txt", decode_workers=1)
    for name, value in changes.items():
        setattr(settings, name, value)
    return settings


def _run(videos, model_dir, out: Path, settings, **kwargs) -> dict:
    models = [fx.FeatureModel("micro", Path(model_dir), out / "micro")]
    return fx.extract(videos, models, settings, device=torch.device("cpu"), progress=False, echo=lambda _: None,
                      **kwargs)


def test_test_features_from_test_shards_equal_decoded_ones(tmp_path, synthetic, model_dir):
    synth, shard_dir = synthetic
    videos = _plan(synth)
    _run(videos, model_dir, tmp_path / "decoded", _settings(synth))
    manifests = _run(videos, model_dir, tmp_path / "shards", _settings(synth), test_shards=shard_dir)
    assert {v["source"].split(" ")[0] for v in manifests["micro"]["videos"]} == {"test"}  # none decoded again
    for video in videos:
        decoded = load_feature(tmp_path / "decoded" / "micro" / video.folder / f"{video.key}__0.npy")
        from_shards = load_feature(tmp_path / "shards" / "micro" / video.folder / f"{video.key}__0.npy")
        assert decoded.shape == from_shards.shape and decoded.dtype == np.float32
        np.testing.assert_array_equal(decoded, from_shards)


def test_lists_ground_truth_and_manifest(tmp_path, synthetic, model_dir):
    synth, _ = synthetic
    videos = _plan(synth)
    manifest = _run(videos, model_dir, tmp_path, _settings(synth))["micro"]
    root = tmp_path / "micro"
    # Every list row names an existing float32 [T, D] file; lists agree with each other.
    rows = list(csv.DictReader(open(root / "lists" / "vadclip_test.csv")))
    assert [Path(r["path"]).name for r in rows] == [f"{v.key}__0.npy" for v in videos]
    for row in rows:
        features = np.load(row["path"])
        assert features.dtype == np.float32 and features.ndim == 2 and features.shape[1] == manifest["model"]["embed_dim"]
    rtfm = (root / "lists" / "rtfm_test.list").read_text().split()
    pel4vad = (root / "lists" / "pel4vad_test.list").read_text().split()
    assert rtfm == [r["path"] for r in rows] and [str(root / p) for p in pel4vad] == rtfm
    assert [e.label for e in read_feature_list(root / "lists" / "rtfm_test.list")] == [r["label"] for r in rows]
    # T = ceil(frames / 16) per video, from stage 1's snippet rule.
    for record in manifest["videos"]:
        assert record["snippets"] == -(-record["num_source_frames"] // 16)
    # VadCLIP's ground truth, rebuilt here from the annotation file's raw columns.
    truth = {}
    for line in (synth / "Temporal_Anomaly_Annotation.txt").read_text().splitlines():
        name, _, *bounds = line.split()
        truth[name.removesuffix(".mp4")] = [int(b) for b in bounds]
    expected = []
    for row in rows:
        gt = np.zeros(np.load(row["path"]).shape[0] * 16)
        bounds = truth.get(Path(row["path"]).name.rsplit("__", 1)[0], [])
        for start, end in zip(bounds[0::2], bounds[1::2]):
            if start >= 0:
                gt[start:end] = 1
        expected.append(gt)
    np.testing.assert_array_equal(np.load(root / "gt" / "gt_ucf-crime.npy"), np.concatenate(expected))
    segments = np.load(root / "gt" / "gt_segment_ucf-crime.npy", allow_pickle=True)
    labels = np.load(root / "gt" / "gt_label_ucf-crime.npy", allow_pickle=True)
    assert len(segments) == len(labels) == len(rows)
    exact = np.load(root / "gt" / "gt_frames_ucf-crime.npz")
    for record in manifest["videos"]:
        assert len(exact[record["key"]]) == record["num_source_frames"]
    features_dir = read_features_dir(root)
    assert features_dir.dataset == "ucf-crime" and len(features_dir.test) == len(videos)
    assert features_dir.model_dir == Path(model_dir).resolve()
    assert manifest["model"]["weights_sha256"] and manifest["snippet"]["offset"] == 8


def test_ten_crops_in_vadclip_order(tmp_path, synthetic, model_dir):
    synth, _ = synthetic
    frames = torch.randint(0, 255, (3, 37, 37, 3), dtype=torch.uint8)
    rule = fx.CropRule(crops=10, size=32)
    crops = rule.apply(frames)
    assert crops.shape == (10, 3, 32, 32, 3)
    torch.testing.assert_close(crops[0], frames[:, 2:34, 2:34])  # centre
    torch.testing.assert_close(crops[1], frames[:, :32, :32])  # top-left
    torch.testing.assert_close(crops[4], frames[:, 5:, 5:])  # bottom-right
    for k in range(5):
        torch.testing.assert_close(crops[5 + k], crops[k].flip(2))  # horizontal flips

    # The extractor never stacks the ten crops: it copies them a batch at a time, in the same order.
    batches = list(fx.crop_batches(rule.views(frames), batch_frames=4))
    assert [len(b) for b in batches] == [4] * 7 + [2]
    torch.testing.assert_close(torch.cat(batches), crops.reshape(30, 32, 32, 3))

    video = _plan(synth)[:1]
    settings = _settings(synth, crop=fx.CropRule(crops=10, size=MICRO_IMAGE_SIZE), annotations=None)
    _run(video, model_dir, tmp_path, settings)
    folder = tmp_path / "micro" / video[0].folder
    assert sorted(p.name for p in folder.iterdir()) == [f"{video[0].key}__{k}.npy" for k in range(10)]
    # __5 is __0's crop flipped: the model on the flipped centre crops gives exactly file __5.
    from fgclip.models.families import load_video_model

    decoded = fx.decode_video(video[0], settings)
    assert decoded.frames_uint8.shape[1] == round(MICRO_IMAGE_SIZE * 256 / 224)  # decoded larger, then cropped
    centre = settings.crop.apply(torch.from_numpy(decoded.frames_uint8))[0]
    model = load_video_model(model_dir).eval()
    flipped = fx.snippet_features(model, centre.flip(2)[None], device=torch.device("cpu"), batch_frames=64)[0]
    np.testing.assert_allclose(np.load(folder / f"{video[0].key}__5.npy"), flipped, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.load(folder / f"{video[0].key}__0.npy"), flipped)


def test_a_killed_run_resumes_and_a_finished_one_skips(tmp_path, synthetic, model_dir):
    synth, _ = synthetic
    videos = _plan(synth)
    settings = _settings(synth)
    _run(videos[:2], model_dir, tmp_path, settings)  # as if killed after two videos
    first = {v.key: (tmp_path / "micro" / v.folder / f"{v.key}__0.npy").stat().st_mtime_ns for v in videos[:2]}
    _run(videos, model_dir, tmp_path, settings)
    for video in videos[:2]:
        assert (tmp_path / "micro" / video.folder / f"{video.key}__0.npy").stat().st_mtime_ns == first[video.key]
    manifest = json.loads((tmp_path / "micro" / "manifest.json").read_text())
    assert sorted(v["key"] for v in manifest["videos"]) == sorted(v.key for v in videos)
    stamp = (tmp_path / "micro" / "manifest.json").stat().st_mtime_ns
    _run(videos, model_dir, tmp_path, settings)  # all done: nothing decoded, lists rewritten from the record
    assert not list((tmp_path / "micro").rglob(".*.tmp"))
    assert (tmp_path / "micro" / "manifest.json").stat().st_mtime_ns >= stamp
    # Other rules into the same folder: refused by name, nothing of the finished run touched.
    with pytest.raises(fx.FeaturesError, match="snippet_offset: 8 there, 0 now"):
        _run(videos, model_dir, tmp_path, _settings(synth, snippet=fx.SnippetRule(offset=0)))
    for video in videos[:2]:
        assert (tmp_path / "micro" / video.folder / f"{video.key}__0.npy").stat().st_mtime_ns == first[video.key]
    # The embedded default's own folders are extracted again instead (make demo after make clean-data).
    manifest = _run(videos, model_dir, tmp_path, _settings(synth, snippet=fx.SnippetRule(offset=0)), replace_stale=True)
    assert manifest["micro"]["snippet"]["offset"] == 0 and len(manifest["micro"]["videos"]) == len(videos)


def test_bad_videos_are_skipped_and_listed_short_ones_give_one_snippet(tmp_path, synthetic, model_dir, shared_data):
    synth, _ = synthetic
    root = tmp_path / "videos"
    (root / "Fighting").mkdir(parents=True)
    (root / "Fighting" / "Broken001_x264.mp4").write_bytes(b"not a video" * 50)
    short = root / "Fighting" / "Fighting002_x264.mp4"
    subprocess.run([_ffmpeg(), "-loglevel", "error", "-i", str(shared_data / "videos" / "car_traffic.mp4"), "-frames:v", "5",
                    "-an", str(short)], check=True)
    videos = fx.items_from_folder(root, "train", "ucf-crime")
    videos.append(fx.VideoItem(path=root / "Fighting" / "Missing003_x264.mp4", folder="Fighting", key="Missing003_x264",
                               label="Fighting", split="train"))
    manifest = _run(videos, model_dir, tmp_path / "out", _settings(synth, annotations=None))["micro"]
    assert [v["key"] for v in manifest["videos"]] == ["Fighting002_x264"] and manifest["videos"][0]["snippets"] == 1
    assert load_feature(tmp_path / "out" / "micro" / "Fighting" / "Fighting002_x264__0.npy").shape[0] == 1
    reasons = {s["key"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"Broken001_x264", "Missing003_x264"} and "no such file" in reasons["Missing003_x264"]
    # The missing video turns up: the rerun extracts it and lists only what is still skipped.
    (root / "Fighting" / "Missing003_x264.mp4").write_bytes(short.read_bytes())
    progress = tmp_path / "out" / ".progress"  # as if the first run had had two ranks
    (progress / "skipped-rank-1.json").write_text((progress / "skipped-rank-0.json").read_text())
    manifest = _run(videos, model_dir, tmp_path / "out", _settings(synth, annotations=None))["micro"]
    assert sorted(v["key"] for v in manifest["videos"]) == ["Fighting002_x264", "Missing003_x264"]
    assert [s["key"] for s in manifest["skipped"]] == ["Broken001_x264"]


def test_xd_violence_lists_carry_the_code_of_the_name(tmp_path, synthetic, model_dir):
    synth, _ = synthetic
    root = tmp_path / "xd"
    root.mkdir()
    sources = [v.path for v in _plan(synth)[:2]]
    names = ["Bad.Boys.1995__#01-11-55_01-12-40_label_B2-0-0.mp4", "v=8cTqh9tMz_I__#1_label_A.mp4"]
    for source, name in zip(sources, names):
        (root / name).symlink_to(source)
    videos = fx.items_from_folder(root, "train", "xd-violence")
    assert sorted(v.label for v in videos) == ["Normal", "Shooting"]  # the registry's classes, in the manifest
    _run(videos, model_dir, tmp_path / "out", _settings(synth, annotations=None, dataset="xd-violence"))
    rows = list(csv.DictReader(open(tmp_path / "out" / "micro" / "lists" / "vadclip_train.csv")))
    assert sorted(r["label"] for r in rows) == ["A", "B2-0-0"]  # as VadCLIP's XD lists write them
    assert sorted(e.label for e in read_features_dir(tmp_path / "out" / "micro").train) == ["A", "B2-0-0"]


def test_a_checkpoint_of_an_unknown_layout_is_refused(tmp_path, synthetic):
    synth, _ = synthetic
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (bad / "model.safetensors").write_bytes(b"{}")  # another model's directory: weights beside its config
    result = CliRunner().invoke(_cli(), ["features", "--test-list", str(synth / "Anomaly_Test.txt"), "--video-root",
                                         str(synth / "videos"), "--checkpoint", str(bad), "--out", str(tmp_path / "o"),
                                         "--no-progress", "--device", "cpu"])
    assert result.exit_code != 0 and "bert" in result.output and "is not a family" in result.output


def test_readers_of_the_fields_lists(tmp_path, shared_data):
    entries = read_feature_list(shared_data / "vadclip" / "ucf_CLIP_rgbtest.csv",
                                path_map=parse_path_maps(["/home/xbgydx/Desktop/UCFClipFeatures=/data/ucf"]))
    assert len(entries) == 290 and entries[0].path == Path("/data/ucf/Abuse/Abuse028_x264__5.npy")
    assert entries[0].label == "Abuse" and entries[0].video == "Abuse028_x264" and entries[0].crop == 5
    (tmp_path / "train").mkdir()
    pel4vad = tmp_path / "train.list"
    pel4vad.write_text("train/Abuse001_x264.npy\ntrain/Abuse001_x264__1.npy\ntrain/Normal_Videos001_x264__1.npy\n")
    rows = read_feature_list(pel4vad)
    assert [(r.video, r.crop, r.label) for r in rows] == [("Abuse001_x264", None, "Abuse"), ("Abuse001_x264", 1, "Abuse"),
                                                          ("Normal_Videos001_x264", 1, "Normal")]
    assert rows[0].path == tmp_path / "train" / "Abuse001_x264.npy"
    xd = tmp_path / "xd.list"  # RTFM-style XD-Violence list: the label is read from the name's code
    xd.write_text("/x/A.Beautiful.Mind.2001__#00-01-45_00-02-50_label_B2-0-0__3.npy\n/x/v=def__#1_label_A__0.npy\n")
    assert [(r.label, r.crop) for r in read_feature_list(xd, dataset="xd-violence")] == [("B2-0-0", 3), ("A", 0)]
    with pytest.raises(FeatureFileError, match="no such feature file"):
        load_feature(tmp_path / "missing.npy")
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]], dtype=np.float32))
    with pytest.raises(FeatureFileError, match="non-finite value at snippet 0, dimension 1"):
        load_feature(tmp_path / "nan.npy")
    np.save(tmp_path / "wide.npy", np.zeros((3, 8), dtype=np.float32))
    with pytest.raises(FeatureFileError, match="width 8, the model needs 16"):
        load_feature(tmp_path / "wide.npy", width=16)


def test_vadclip_ground_truth_cuts_at_t_times_16(tmp_path):
    from fgclip.eval.ground_truth import VideoAnnotation

    annotations = {"a": VideoAnnotation("a", "Fighting", ((5, 20), (40, 100)), 1)}
    gt = snippet_ground_truth(["a", "n"], [3, 1], annotations, "Normal")
    expected = np.zeros(64)
    expected[5:20] = 1
    expected[40:48] = 1
    np.testing.assert_array_equal(gt.vadclip_frames, expected)
    assert gt.segments == [[[5, 20], [40, 100]], [[0, 16]]] and gt.segment_labels == [["Fighting"] * 2, ["Normal"]]
    # The heads' entry point: a test list's rows (T from each file, a video's further crops adding
    # nothing) and the annotation file itself, in the official format.
    for name, snippets in (("a", 3), ("n", 1)):
        for crop in (0, 5):
            np.save(tmp_path / f"{name}__{crop}.npy", np.zeros((snippets, 4), dtype=np.float32))
    rows = ["path,label"] + [f"{tmp_path / f'{n}__{c}.npy'},{label}" for n, label in (("a", "Fighting"), ("n", "Normal"))
                             for c in (0, 5)]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "Temporal_Anomaly_Annotation.txt").write_text("a.mp4  Fighting  5  20  40  100\nn.mp4  Normal  -1  -1  -1  -1\n")
    entries = read_feature_list(tmp_path / "test.csv")
    np.testing.assert_array_equal(vadclip_ground_truth(entries, tmp_path / "Temporal_Anomaly_Annotation.txt"), expected)
    np.testing.assert_array_equal(vadclip_ground_truth(entries, annotations), expected)


def test_two_ranks_split_the_videos_and_rank_0_writes_the_lists(tmp_path, synthetic, model_dir):
    synth, _ = synthetic
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fgclip.cli",
               "features", "--test-list", str(synth / "Anomaly_Test.txt"), "--video-root", str(synth / "videos"),
               "--checkpoint", f"micro={model_dir}", "--out", str(tmp_path), "--size", str(MICRO_IMAGE_SIZE),
               "--annotations", str(synth / "Temporal_Anomaly_Annotation.txt"), "--no-progress", "--workers", "1"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    progress = sorted(p.name for p in (tmp_path / "micro" / ".progress").glob("rank-*"))
    assert progress == ["rank-0.jsonl", "rank-1.jsonl"]
    manifest = json.loads((tmp_path / "micro" / "manifest.json").read_text())
    assert len(manifest["videos"]) == len(_plan(synth))
    rows = list(csv.DictReader(open(tmp_path / "micro" / "lists" / "vadclip_test.csv")))
    assert [Path(r["path"]).name for r in rows] == [f"{v.key}__0.npy" for v in _plan(synth)]


def test_the_embedded_default_takes_the_demo_model_and_the_model_it_started_from(tmp_path, synthetic, model_dir):
    """`make features` with no options after `make demo`: two feature trees, the demo run's chosen
    model and its starting model, over the embedded default's training and test videos."""
    import shutil

    synth, _ = synthetic
    run = tmp_path / "checkpoints" / "fgclip_demo"
    shutil.copytree(model_dir, run / "final")
    (run / "run_config.json").write_text(json.dumps({"model": str(model_dir)}))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               FGCLIP_DATA_ROOT=str(synth.parent))  # the embedded default's paths, at the tiny dataset
    result = subprocess.run([sys.executable, "-m", "fgclip.cli", "features", "--no-progress", "--device", "cpu",
                             "--workers", "1", "--size", str(MICRO_IMAGE_SIZE)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    trees = sorted(p.parent.name for p in (tmp_path / "features" / "fgclip_demo").glob("*/manifest.json"))
    assert trees == sorted(["fgclip_demo-final", Path(model_dir).name])
    train_videos = {Path(r["video"]).stem for r in json.loads((synth / "train.json").read_text())}
    test_videos = _plan(synth)
    for tree in trees:
        features_dir = read_features_dir(tmp_path / "features" / "fgclip_demo" / tree)
        assert {e.video for e in features_dir.train} == train_videos
        assert [e.video for e in features_dir.test] == [v.key for v in test_videos]
        assert all(e.path.is_file() for e in features_dir.train + features_dir.test)
        assert features_dir.ground_truth_files["vadclip"].is_file()


def _cli():
    from fgclip.cli import main

    return main


def _ffmpeg() -> str:
    from pipeline.decode import find_ffmpeg

    return find_ffmpeg()


def test_bench_features_rows_on_the_cpu(tmp_path):
    """`make bench`'s features rows in the smoke mode: extraction with decoding, against bare
    inference and the decode rate, 1 and 10 crops, the bound named."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "fgclip.cli", "bench", "--smoke", "--only-features", "--out",
                             str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = json.loads((tmp_path / "bench-smoke.json").read_text())["features"]
    assert sorted(rows) == ["crops_1", "crops_10"]
    for crops, row in ((1, rows["crops_1"]), (10, rows["crops_10"])):
        assert row["model_frames"] == row["snippets"] * crops > 0
        assert row["extraction_frames_per_s"] > 0 and row["bare_inference_frames_per_s"] > 0
        assert row["of_bare_inference"] == pytest.approx(row["extraction_frames_per_s"] / row["bare_inference_frames_per_s"])
        assert row["bound"] in ("decoding", "inference")
    assert "5 features, 1 crop" in result.stdout and "5 features, 10 crops" in result.stdout
