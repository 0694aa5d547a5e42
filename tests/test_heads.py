"""train-head end to end on generated feature directories (the files `fgclip-vad features` writes),
a released list of another dataset through --path-map, bad input, and both ground truths."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fgclip.cli import main
from fgclip.features.files import save_feature
from fgclip.heads.evaluate import anchors_frames, frames_by_ground_truth, HeadTestSet
from fgclip.heads.data import VideoTestFeatures, class_of_label
from pipeline.datasets import get_dataset
from head_features import write_features_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WIDTH = 32  # the micro model's embedding width
TINY = ["--batch-size", "4", "--clip-snippets", "32", "--prompt-prefix", "2", "--prompt-postfix", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory, model_dir):
    return write_features_dir(tmp_path_factory.mktemp("features"), model_dir, width=WIDTH, signal=2.0)


def train_head(*args: str):
    result = CliRunner().invoke(main, ["train-head", *args], catch_exceptions=False)
    return result


def test_vadclip_head_trains_selects_on_training_videos_and_resumes(features_dir, tmp_path):
    out = tmp_path / "run"
    result = train_head("--features", str(features_dir), "--out", str(out), "--epochs", "6", "--lr", "1e-3",
                        "--seeds", "0,1", "--val-fraction", "0.2", *TINY)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "run_config.json").read_text())
    assert config["method"] == "vadclip" and config["window"] == 8 and config["seeds"] == [0, 1]
    for seed in (0, 1):
        seed_dir = out / f"seed-{seed}"
        summary = json.loads((seed_dir / "summary.json").read_text())
        assert summary["chosen"] == "best" and "held-out training videos" in summary["selection"]
        assert (seed_dir / "best" / "head.pt").is_file() and (seed_dir / "final" / "head.pt").is_file()
        assert len(list(seed_dir.glob("checkpoint-*"))) == 2  # the last two kept
        assert "val_video_auc" in (seed_dir / "trainer_log.txt").read_text()
        assert list((seed_dir / "tensorboard").iterdir())
    results = json.loads((out / "test_results.json").read_text())
    assert set(results["summary"]) == {"anchors", "exact"} and len(results["seeds"]) == 2
    assert results["summary"]["anchors"]["auc"]["mean"] > 0.9, result.output
    assert "detection_map" in results["seeds"][0]["metrics"]["exact"]
    again = train_head("--features", str(features_dir), "--out", str(out), "--epochs", "6", "--lr", "1e-3",
                       "--seeds", "0,1", "--val-fraction", "0.2", *TINY)
    assert again.exit_code == 0 and again.output.count("finished earlier") == 2


def test_vadclip_resumes_from_its_last_checkpoint(features_dir, tmp_path):
    out = tmp_path / "run"
    assert train_head("--features", str(features_dir), "--out", str(out), "--epochs", "2", *TINY).exit_code == 0
    (out / "seed-0" / "summary.json").unlink()  # as if killed after epoch 2 of a longer schedule
    result = train_head("--features", str(features_dir), "--out", str(out), "--epochs", "3", *TINY)
    assert result.exit_code == 0, result.output
    assert "resumed from" in (out / "seed-0" / "trainer_log.txt").read_text()
    assert json.loads((out / "seed-0" / "summary.json").read_text())["epochs"] == 3
    other = train_head("--features", str(features_dir), "--out", str(out), "--epochs", "3", "--lr", "1e-2", *TINY)
    assert other.exit_code != 0 and "trained with other settings or features (lr differ)" in other.output


def test_mil_ranking_head_learns(features_dir, tmp_path):
    result = train_head("--features", str(features_dir), "--out", str(tmp_path / "mil"), "--method", "mil",
                        "--epochs", "8", "--lr", "1e-2", "--crop", "0", *TINY)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "mil" / "test_results.json").read_text())
    assert results["summary"]["exact"]["auc"]["mean"] > 0.9


def test_released_xd_violence_list_through_path_map(tmp_path, model_dir):
    """VadCLIP's XD-Violence list format: absolute paths of another machine, label codes."""
    rng = np.random.default_rng(0)
    rows, direction = ["path,label"], rng.normal(size=WIDTH).astype(np.float32)
    for index, code in enumerate(["A", "B2-0-0", "A", "G-B2-B6", "A", "B1-0-0", "A", "B4-0-0"]):
        name = f"v{index}__label_{code}"
        for crop in range(2):
            features = rng.normal(size=(30, WIDTH)).astype(np.float32)
            if code != "A":
                features[10:16] += direction
            save_feature(tmp_path / "xd" / f"{name}__{crop}.npy", features)
            rows.append(f"/data/elsewhere/XDTrainClipFeatures/{name}__{crop}.npy,{code}")
    (tmp_path / "xd_CLIP_rgb.csv").write_text("\n".join(rows) + "\n")
    result = train_head("--train-list", str(tmp_path / "xd_CLIP_rgb.csv"), "--dataset", "xd-violence",
                        "--path-map", f"/data/elsewhere/XDTrainClipFeatures={tmp_path / 'xd'}",
                        "--text-model", str(model_dir), "--out", str(tmp_path / "run"), "--epochs", "1", *TINY)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["window"] == 64  # XD-Violence's
    xd = get_dataset("xd-violence")
    assert [class_of_label(c, xd) for c in ("A", "B2-0-0", "G-B2-B6")] == ["Normal", "Shooting", "Explosion"]


def test_bad_inputs_are_named(features_dir, tmp_path, model_dir):
    good = (features_dir / "lists" / "vadclip_train.csv").read_text().splitlines()
    cases = {
        "missing": good + [f"{tmp_path}/Abuse/Gone001_x264__0.npy,Abuse"],
        "label": good[:3] + [good[3].rpartition(",")[0] + ",Jaywalking"],
    }
    nan_file = tmp_path / "Abuse" / "Nan001_x264__0.npy"
    nan = np.zeros((20, WIDTH), dtype=np.float32)
    nan[3, 5] = np.nan
    nan_file.parent.mkdir(parents=True)
    np.save(nan_file, nan)
    cases["nan"] = good + [f"{nan_file},Abuse"]
    expected = {"missing": "Gone001_x264__0.npy: no such feature file", "label": "'Jaywalking' is not a class",
                "nan": "non-finite value at snippet 3"}
    for name, lines in cases.items():
        listing = tmp_path / f"{name}.csv"
        listing.write_text("\n".join(lines) + "\n")
        result = train_head("--train-list", str(listing), "--dataset", "ucf-crime", "--text-model", str(model_dir),
                            "--out", str(tmp_path / name), "--epochs", "1", *TINY)
        assert result.exit_code != 0 and expected[name] in result.output, (name, result.output)
    wide = tmp_path / "wide.csv"
    wide_file = tmp_path / "Normal_Videos_999__0.npy"
    np.save(wide_file, np.zeros((20, 2 * WIDTH), dtype=np.float32))
    wide.write_text(f"path,label\n{wide_file},Normal\n")
    result = train_head("--train-list", str(wide), "--dataset", "ucf-crime", "--text-model", str(model_dir),
                        "--out", str(tmp_path / "wide"), "--epochs", "1", *TINY)
    assert result.exit_code != 0 and f"features of width {2 * WIDTH}, the text tower" in result.output


def test_the_two_ground_truth_constructions(tmp_path):
    """Anchors: T x 16 frames per video, snippet scores repeated 16 times; ours: the true frame count."""
    gt = np.zeros(2 * 16 + 3 * 16, dtype=np.float32)
    gt[16 + 4:16 + 9] = 1  # video 0, frames [20, 25)
    np.save(tmp_path / "gt.npy", gt)
    pieces = anchors_frames(tmp_path / "gt.npy", [2, 3])
    assert [len(p) for p in pieces] == [32, 48] and pieces[0][20:25].all() and pieces[0].sum() == 5
    with pytest.raises(ValueError, match="need 96"):
        anchors_frames(tmp_path / "gt.npy", [3, 3])
    exact = {"a": np.r_[np.zeros(20), np.ones(5), np.zeros(4)].astype(np.uint8), "b": np.zeros(40, dtype=np.uint8)}
    np.savez(tmp_path / "exact.npz", **exact)
    videos = [VideoTestFeatures("a", "Abuse", np.zeros((2, 4)), [0]), VideoTestFeatures("b", "Normal", np.zeros((3, 4)), [0])]
    scores = [np.array([0.1, 0.9]), np.array([0.2, 0.3, 0.4])]
    frames = frames_by_ground_truth(videos, scores, HeadTestSet(tmp_path / "x.csv", "ucf-crime", tmp_path / "gt.npy",
                                                                 tmp_path / "exact.npz"), "Normal")
    anchors, ours = frames["anchors"], frames["exact"]
    assert len(anchors[0].scores) == 32 and anchors[0].scores[16] == 0.9
    assert len(ours[0].scores) == 29 and ours[0].scores[28] == 0.9 and ours[0].gt.sum() == 5
    assert len(ours[1].scores) == 40 and ours[1].scores[39] == 0.4  # the last snippet repeated past 3 x 16


def test_eval_head_rows_beside_prompt_scoring(features_dir, tmp_path):
    """`eval --head`: each head run's seeds on its features' test list, both ground truths, in the report's table."""
    from fgclip.eval.head_rows import head_headline, head_rows
    from fgclip.eval.metrics import VideoFrames, compute_metrics
    from fgclip.eval.report_content import _head_blocks

    out = tmp_path / "run"
    assert train_head("--features", str(features_dir), "--out", str(out), "--epochs", "2", "--seeds", "0,1",
                      *TINY).exit_code == 0
    rows = head_rows([f"ours={out}"], test_crop="0")
    assert rows[0]["name"] == "ours" and rows[0]["features_model"] == "micro" and len(rows[0]["seeds"]) == 2
    assert "anchors' T x 16" in head_headline(rows[0]) and "our exact frames" in head_headline(rows[0])
    prompt = compute_metrics([VideoFrames("v", "Abuse", True, np.array([0.1, 0.9]), np.array([False, True]))])
    blocks = _head_blocks({"models": [{"name": "trained", "metrics": prompt}], "heads": rows})
    table = next(b for b in blocks if b.kind == "table")
    assert [row[0] for row in table.rows] == ["prompt scoring: trained", "ours"]
    assert " ± " in table.rows[1][2] and " ± " in table.rows[1][3]


def test_vadclip_released_ucf_lists_as_distributed(shared_data, tmp_path, model_dir):
    """VadCLIP's real UCF-Crime lists (absolute paths of its authors' machine, ten crops per training video,
    the test list naming crop __5): rows of 3 anomalous and 3 normal videos, features generated at their paths."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=WIDTH).astype(np.float32)
    prefix = "/home/xbgydx/Desktop/UCFClipFeatures"
    lists = {}
    for split, name in (("train", "ucf_CLIP_rgb.csv"), ("test", "ucf_CLIP_rgbtest.csv")):
        lines = (shared_data / "vadclip" / name).read_text().splitlines()
        per_kind = 30 if split == "train" else 3  # whole videos: ten crop rows each in training
        rows = [line for line in lines[1:] if not line.endswith(",Normal")][:per_kind] + \
               [line for line in lines[1:] if line.endswith(",Normal")][:per_kind]
        for row in rows:
            path, label = row.rsplit(",", 1)
            snippets = 30 if split == "train" else 100  # 1,600 frames: the annotated events of these test videos fit
            features = rng.normal(size=(snippets, WIDTH)).astype(np.float32)
            if label != "Normal":
                features[5:12] += direction
            save_feature(tmp_path / "feat" / path[len(prefix) + 1:], features)
        lists[split] = tmp_path / name
        lists[split].write_text("\n".join([lines[0]] + rows) + "\n")
    test_rows = lists["test"].read_text().splitlines()[1:]
    assert all("__5.npy" in row for row in test_rows)
    result = train_head("--train-list", str(lists["train"]), "--test-list", str(lists["test"]), "--method", "mil",
                        "--path-map", f"{prefix}={tmp_path / 'feat'}", "--out", str(tmp_path / "run"), "--epochs", "1",
                        *TINY)
    # no ground truth for the generated test videos: trained, then a named error for the scoring
    assert result.exit_code != 0 and "no ground truth file" in result.output, result.output
    summary = json.loads((tmp_path / "run" / "seed-0" / "summary.json").read_text())
    assert summary["epochs"] == 1
    assert "60 training samples (6 videos)" in result.output
    # with the official annotation file, VadCLIP's T x 16 ground truth of the list is built and used
    result = train_head("--train-list", str(lists["train"]), "--test-list", str(lists["test"]), "--method", "mil",
                        "--path-map", f"{prefix}={tmp_path / 'feat'}", "--out", str(tmp_path / "run"), "--epochs", "1",
                        "--annotations", str(shared_data / "ucf" / "Temporal_Anomaly_Annotation.txt"), *TINY)
    assert result.exit_code == 0, result.output
    gt = np.load(tmp_path / "run" / "gt_ucf-crime.npy")
    assert len(gt) == 6 * 100 * 16 and gt[165:240].all() and gt[:165].sum() == 0  # Abuse028_x264: 165 240
    results = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert list(results["summary"]) == ["anchors"]
