"""`fgclip-vad score` on real videos, its agreement with evaluation, and evaluation's heat maps,
spatial metric and report.html (rendered in headless chromium)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from test_heatmaps import check_report_in_browser

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STRIDE = 16


MICRO_IMAGE_SIZE = 32  # tests/train_data.py's micro model: test shards stored at its input size


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The tiny synthetic dataset and its stride-mode test shards, built by stage 1 at the micro
    model's input size (so that `score`, which decodes at that size, sees the same pixels)."""
    from pipeline import embedded
    from pipeline.frames import build_test_shards
    from pipeline.synth import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    synth = generate_dataset(root / "synth", size="tiny", workers=1)
    shard_dir = root / "test_shards"
    build_test_shards(synth / embedded.TEST_LIST.name,
                      video_root=synth / embedded.TEST_VIDEO_ROOT.relative_to(embedded.SYNTH_DIR),
                      out_dir=shard_dir, stride=STRIDE, size=MICRO_IMAGE_SIZE, workers=1, progress=False)
    return synth, shard_dir


def test_evaluation_heat_maps_spatial_metric_html_and_score_agree(tmp_path, model_dir, synthetic):
    from fgclip.eval.evaluate import evaluate
    from fgclip.eval.ground_truth import anomaly_class_names, parse_temporal_annotations
    from fgclip.eval.score import score_files
    from pipeline import embedded

    synth, shard_dir = synthetic
    annotations = synth / embedded.TEMPORAL_ANNOTATIONS.name
    boxes = synth / embedded.TEST_EVENT_BOXES.name
    out = tmp_path / "eval"
    report = evaluate([model_dir], shard_dir, annotations, out, baseline=model_dir, boxes=boxes, device="cpu",
                      num_readers=0, batch_frames=16, progress=False)

    truth = parse_temporal_annotations(annotations)
    anomalous = [key for key, a in truth.items() if a.is_anomaly]
    assert sorted(report["outputs"]["heat_strips"]) == sorted(anomalous)
    for relative in report["outputs"]["heat_strips"].values():
        assert (out / relative).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for model in report["models"]:
        spatial = model["spatial"]
        assert spatial["frames"] > 0 and 0.0 <= spatial["pointing_game"] <= 1.0 and 0.0 < spatial["chance"] < 1.0
        assert spatial["mean_map_inside"] is not None and spatial["mean_map_outside"] is not None
    # The same model twice: the same spatial numbers.
    assert report["models"][0]["spatial"] == report["models"][1]["spatial"]
    assert "1 of 1 anomalous test videos have them" in report["config"]["spatial"]
    metrics = report["models"][0]["metrics"]
    assert 0.0 <= metrics["threshold_at_recall"] <= 1.0 and metrics["false_alarm_rate_at_recall"] is not None
    markdown = (out / "report.md").read_text()
    assert "## Spatial metric" in markdown and "pointing game" in markdown and "false alarms @ 90% recall" in markdown
    assert "not calibrated" in markdown
    check_report_in_browser(out, tmp_path)

    # `score` on the test videos themselves gives evaluation's snippet scores: same decode, same scoring.
    videos = sorted((synth / "videos").rglob("*95*.mp4"))
    assert len(videos) == len(truth)
    summary = score_files(videos, model_dir, tmp_path / "scores", classes=anomaly_class_names(truth), device="cpu",
                          progress=False, echo=lambda _: None)
    assert not summary["skipped"] and len(summary["videos"]) == len(videos)
    with np.load(out / report["outputs"]["scores"][report["models"][0]["name"]]) as saved:
        for video in videos:
            with open(tmp_path / "scores" / video.stem / "scores.csv", newline="") as handle:
                rows = list(csv.DictReader(handle))
            np.testing.assert_allclose([float(r["score"]) for r in rows], saved[video.stem], rtol=1e-4, atol=1e-5)


def test_score_cli_on_a_real_clip_skips_what_it_cannot_decode(tmp_path, model_dir, shared_data):
    from fgclip.cli import main
    from pipeline.decode import probe_video

    clip = shared_data / "videos" / "vtest_campus_cctv.mp4"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    out = tmp_path / "scores"
    result = CliRunner().invoke(main, ["score", str(clip), str(broken), "--checkpoint", str(model_dir), "--out", str(out),
                                       "--classes", "Fighting,Explosion", "--video", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"skipped {broken}: " in result.output and "1 scored, 1 skipped" in result.output

    info = probe_video(clip)
    scored = -(-info.num_frames // STRIDE)
    with open(out / "vtest_campus_cctv" / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["frame", "time_s", "score", "top_class"] and len(rows) == scored
    assert [int(r["frame"]) for r in rows] == [min(k * STRIDE + STRIDE // 2, info.num_frames - 1) for k in range(scored)]
    assert float(rows[3]["time_s"]) == pytest.approx(int(rows[3]["frame"]) / info.fps, abs=1e-3)
    assert {r["top_class"] for r in rows} <= {"Fighting", "Explosion"}
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
    for png in ("curve.png", "contact_sheet.png"):
        assert (out / "vtest_campus_cctv" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    overlay = probe_video(out / "vtest_campus_cctv" / "overlay.mp4")
    assert overlay.num_frames == scored and overlay.fps == pytest.approx(info.fps / STRIDE, rel=0.01)  # ffmpeg prints 2 decimals
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["Fighting", "Explosion"] and summary["skipped"][0]["video"] == str(broken)
    assert summary["videos"][0]["peak"]["top_class"] in ("Fighting", "Explosion")


def test_score_cli_with_an_fgclip2_checkpoint(tmp_path, shared_data):
    """`score` loads through the family interface: an `init-model --preset tiny-siglip2` directory
    (FG-CLIP 2's layout) scores a real clip, patch maps included, as a CLIP one does."""
    from fgclip.cli import main
    from pipeline.decode import probe_video

    runner = CliRunner()
    model = tmp_path / "fgclip2"
    result = runner.invoke(main, ["init-model", "--preset", "tiny-siglip2", "--out", str(model)])
    assert result.exit_code == 0, result.output
    assert json.loads((model / "config.json").read_text())["model_type"] == "fgclip2"
    clip = shared_data / "videos" / "car_traffic.mp4"
    out = tmp_path / "scores"
    result = runner.invoke(main, ["score", str(clip), "--checkpoint", str(model), "--out", str(out), "--device", "cpu",
                                  "--quiet"])
    assert result.exit_code == 0, result.output
    with open(out / "car_traffic" / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == -(-probe_video(clip).num_frames // STRIDE)
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
    assert (out / "car_traffic" / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    from fgclip.eval.prompts import ANOMALY_SCORE_DEFINITIONS
    assert list(summary["score"].values()) == [ANOMALY_SCORE_DEFINITIONS["sigmoid"]]  # the family's own rule
