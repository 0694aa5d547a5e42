"""Checkpoint selection without the test set: the validation split (by video, never a test video),
best/ chosen by validation scores, and the evaluation report saying how its checkpoint was chosen."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from safetensors.torch import load_file

from fgclip.eval.evaluate import choose_models, selection_summary
from fgclip.train.presets import resolve_config
from fgclip.run_dir import read_selection
from fgclip.train.loop import Trainer
from fgclip.train.validation import RETRIEVAL, VIDEO_LABEL_AUC, ValidationError, ValidationSet
from pipeline.shards import SCHEMA_VERSION, ShardAttrs, shard_name, write_manifest, write_shard
from pipeline.ucf_split import video_key
from train_data import square_record

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Two windows per video; Abuse028 and Normal_Videos_003 are official UCF-Crime test videos.
VIDEOS = ["Abuse/Abuse001_x264.mp4", "Abuse/Abuse002_x264.mp4", "Abuse/Abuse028_x264.mp4",
          "Arson/Arson003_x264.mp4", "Arson/Arson004_x264.mp4", "Arson/Arson005_x264.mp4",
          "Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4",
          "Training_Normal_Videos_Anomaly/Normal_Videos002_x264.mp4",
          "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4",
          "Training_Normal_Videos_Anomaly/Normal_Videos004_x264.mp4"]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, shared_data):
    """Uniform shards of 20 records (2 windows of each of VIDEOS) whose manifest names an annotation
    file next to which the real Anomaly_Test.txt lies, as stage 1 writes it."""
    base = tmp_path_factory.mktemp("val")
    (base / "annotations").mkdir()
    (base / "annotations" / "Anomaly_Test.txt").symlink_to(shared_data / "ucf" / "Anomaly_Test.txt")
    out = base / "shards"
    out.mkdir()
    attrs = ShardAttrs(sampling="uniform", num_frames=8, stride=0, height=32, width=32, resize_mode="squash")
    records = []
    for index in range(2 * len(VIDEOS)):
        video = VIDEOS[index // 2]
        label = video.split("/")[0] if "Normal" not in video else "Normal"
        records.append(dataclasses.replace(square_record(index, 8, 32), video=video, label=label,
                                           is_anomaly=label != "Normal", record_index=index))
    entries = []
    for shard_id, start in enumerate(range(0, len(records), 4)):
        chunk = records[start:start + 4]
        write_shard(out / shard_name(shard_id), chunk, attrs)
        entries.append({"file": shard_name(shard_id), "records": [r.record_index for r in chunk], "num_frames": 8})
    write_manifest(out, {"schema_version": SCHEMA_VERSION, "sampling": "uniform", "num_frames": 8, "size": 32,
                         "shards": entries, "skipped": [], "source": str(base / "annotations" / "train.json")})
    return out


def config(shard_dir, model_dir, output_dir, **overrides):
    settings = dict(shards=str(shard_dir), model=str(model_dir), output_dir=str(output_dir), num_frames=4,
                    batch_size=4, grad_accum=1, epochs=2, lr=2e-3, text_lr=2e-3, workers=0, save_every=1,
                    keep_last=0, val_fraction=0.4, val_every=1)
    settings.update(overrides)
    return resolve_config("demo", settings)


def test_validation_split_is_by_video_and_never_a_test_video(shard_dir, model_dir, tmp_path):
    trainer = Trainer(config(shard_dir, model_dir, tmp_path / "run"), show_progress=False)
    try:
        held_out = trainer.validation.videos
        trained = {video_key(m.video) for m in trainer.loader.metas}
        assert held_out and not held_out & trained
        assert not held_out & {"abuse028", "normal_videos_003"}  # test videos are never held out
        assert {"abuse028", "normal_videos_003"} <= trained  # (they stay where the user put them)
        # every window of a held-out video is in the validation set, none in training
        assert sorted(m.record_index for m in trainer.validation.metas) == [
            i for i in range(2 * len(VIDEOS)) if video_key(VIDEOS[i // 2]) in held_out]
        assert trainer.validation.test_split_files and trainer.validation.metric == RETRIEVAL
        assert len(trainer.loader.metas) + len(trainer.validation.metas) == 2 * len(VIDEOS)
    finally:
        trainer.loader.close()
        trainer.release()


def test_video_label_auc_scores_frames_against_the_videos_own_labels(shard_dir, model_dir, tmp_path):
    trainer = Trainer(config(shard_dir, model_dir, tmp_path / "run", val_metric="video_label_auc"), show_progress=False)
    try:
        validation = trainer.validation
        assert validation.metric == VIDEO_LABEL_AUC and "videos' labels" in validation.describe()
        assert {m.is_anomaly for m in validation.metas} == {True, False}
        assert validation.class_names == ["Abuse", "Arson"]  # the training records' anomaly classes
        auc = validation.score(trainer.model, trainer.tokenizer, trainer.device)
        assert 0 <= auc <= 1
        # the labels are the videos' own: swapping normal and anomalous turns the AUC around
        swapped = dataclasses.replace(validation, metas=[dataclasses.replace(m, is_anomaly=not m.is_anomaly)
                                                         for m in validation.metas])
        assert swapped.score(trainer.model, trainer.tokenizer, trainer.device) == pytest.approx(1 - auc, abs=1e-6)
    finally:
        trainer.loader.close()
        trainer.release()

    # held-out videos of one kind only: no AUC, said before training starts
    anomalous = [m for m in trainer.loader.metas + validation.metas if m.is_anomaly]
    with pytest.raises(ValidationError, match="all anomalous"):
        ValidationSet.hold_out(anomalous, shard_dir, fraction=0.4, seed=0, num_frames=4, metric="video_label_auc")
    with pytest.raises(ValueError, match="frame_auc needs val_annotations"):
        Trainer(config(shard_dir, model_dir, tmp_path / "run2", val_metric="frame_auc"), show_progress=False)


def test_best_is_the_checkpoint_validation_scored_highest(shard_dir, model_dir, tmp_path):
    run = tmp_path / "run"
    Trainer(config(shard_dir, model_dir, run), show_progress=False).run()
    scores = [(int(step), float(value)) for step, value in
              re.findall(r"validation at step (\d+): retrieval_top1 ([0-9.]+)", (run / "trainer_log.txt").read_text())]
    assert len(scores) >= 4
    best_value = max(value for _, value in scores)
    best_step = max(step for step, value in scores if value == best_value)  # ties: the later step
    selection = read_selection(run)
    assert (selection["step"], selection["value"]) == (best_step, pytest.approx(best_value))
    best_weights = load_file(run / "best" / "model.safetensors")
    same_step = load_file(run / f"checkpoint-{best_step}" / "model.safetensors")
    assert all((best_weights[k] == same_step[k]).all() for k in best_weights)

    # evaluation picks best/ for the run and says how it was chosen; several checkpoints = test-set selection
    [chosen] = choose_models([run], None)
    assert chosen.path == run / "best" and "best on the validation split" in chosen.selection
    assert f"at step {best_step} of" in chosen.selection and "test set played no part" in chosen.selection
    assert not selection_summary([chosen])["on_test_set"]
    several = choose_models([run, run / "checkpoint-1", run / "final"], None)
    summary = selection_summary(several)
    assert summary["on_test_set"] and "SELECTION ON THE TEST SET: 3 checkpoints" in summary["note"]
