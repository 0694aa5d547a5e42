"""The trainer on CPU with real shards and a real (micro) CLIP: the loss falls, a resumed run
continues bit-exactly, non-finite steps are skipped and never saved, torchrun with 2 gloo
processes writes one log, and the CLI's train/doctor commands fail with one-line messages."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from fgclip.train.checkpoint import load_trainer_state
from fgclip.cli import main
from fgclip.models.clip_video import FGCLIPVideo
from fgclip.train.presets import resolve_config
from fgclip.run_dir import RUN_CONFIG_NAME, STATE_FILE, list_checkpoints
from fgclip.train.loop import Trainer, TrainingError, parameter_groups
from train_data import write_square_shards

REPO_ROOT = Path(__file__).resolve().parent.parent
NUM_RECORDS = 16
BATCH, ACCUM = 4, 2  # effective batch 8, 2 optimizer steps per epoch
EPOCHS = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    return write_square_shards(tmp_path_factory.mktemp("shards"), num_records=NUM_RECORDS, num_frames=8)


def make_config(shard_dir, model_dir, output_dir, **overrides):
    settings = dict(shards=str(shard_dir), model=str(model_dir), output_dir=str(output_dir), num_frames=4,
                    batch_size=BATCH, grad_accum=ACCUM, epochs=EPOCHS, lr=2e-3, text_lr=2e-3, warmup_ratio=0.1,
                    workers=1, save_every=100, keep_last=2)
    settings.update(overrides)
    return resolve_config("demo", settings)


def read_metrics(output_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, shard_dir, model_dir):
    """One uninterrupted run of EPOCHS epochs (16 optimizer steps)."""
    output_dir = tmp_path_factory.mktemp("reference")
    summary = Trainer(make_config(shard_dir, model_dir, output_dir), show_progress=False).run()
    return output_dir, summary


def test_short_training_lowers_the_global_loss(reference_run, model_dir):
    output_dir, summary = reference_run
    assert summary["reason"] == "complete" and summary["step"] == EPOCHS * 2
    metrics = read_metrics(output_dir)
    assert [m["step"] for m in metrics] == list(range(1, EPOCHS * 2 + 1))
    first = metrics[0]["loss_global"]
    last = sum(m["loss_global"] for m in metrics[-2:]) / 2
    chance = math.log(BATCH * ACCUM)  # a contrastive loss that learns nothing sits at ln(effective batch)
    assert first > 0.9 * chance
    assert last < 0.75 * chance and last < first - 0.8, (first, last)
    assert all(m["skipped_steps"] == 0 for m in metrics)

    # the files the user watches
    log_lines = (output_dir / "trainer_log.txt").read_text().splitlines()
    loss_lines = [line for line in log_lines if " loss " in line]
    assert len(loss_lines) == EPOCHS * 2 and loss_lines[-1].startswith(f"step {EPOCHS * 2}/{EPOCHS * 2} |")
    for field in ("global", "region", "hard", "lr", "grad_norm", "frames/s", "data_wait", "eta"):
        assert f"| {field} " in loss_lines[0]
    assert list((output_dir / "tensorboard").glob("events.out.tfevents.*"))
    config = json.loads((output_dir / RUN_CONFIG_NAME).read_text())
    assert config["model"] == str(model_dir)  # evaluation's baseline
    assert config["effective_batch"] == BATCH * ACCUM and config["total_steps"] == EPOCHS * 2
    final = FGCLIPVideo.from_pretrained(output_dir / "final")
    assert all(torch.isfinite(p).all() for p in final.parameters())
    assert [p.name for p in list_checkpoints(output_dir)] == [f"checkpoint-{EPOCHS * 2}"]


def test_resume_continues_bit_exactly(reference_run, shard_dir, model_dir, tmp_path):
    reference_dir, _ = reference_run
    output_dir = tmp_path / "resumed"
    # stop mid-epoch (step 5 of 16 = first window of epoch 3), then continue with --resume auto
    first = Trainer(make_config(shard_dir, model_dir, output_dir), stop_after_step=5, show_progress=False).run()
    assert first["reason"].startswith("stopped") and first["step"] == 5
    assert [p.name for p in list_checkpoints(output_dir)] == ["checkpoint-5"]
    state = load_trainer_state(output_dir / "checkpoint-5")
    assert (state["epoch"], state["batch_in_epoch"]) == (2, 2)
    second = Trainer(make_config(shard_dir, model_dir, output_dir), resume="auto", show_progress=False).run()
    assert second["reason"] == "complete"

    keys = ("loss", "loss_global", "loss_region", "loss_hard", "grad_norm", "lr", "text_lr")
    reference = {m["step"]: m for m in read_metrics(reference_dir)}
    resumed = {m["step"]: m for m in read_metrics(output_dir)}
    assert sorted(resumed) == list(range(1, EPOCHS * 2 + 1))
    for step in range(6, EPOCHS * 2 + 1):
        assert [resumed[step][k] for k in keys] == [reference[step][k] for k in keys], step
    final_reference = load_file(str(reference_dir / "final" / "model.safetensors"))
    final_resumed = load_file(str(output_dir / "final" / "model.safetensors"))
    assert all(torch.equal(final_reference[name], final_resumed[name]) for name in final_reference)
    assert "resumed from" in (output_dir / "trainer_log.txt").read_text()

    # other settings cannot continue the same run exactly
    with pytest.raises(TrainingError, match="batch_size"):
        Trainer(make_config(shard_dir, model_dir, output_dir, batch_size=2), resume="auto", show_progress=False)


def test_scale_lr_gives_the_temperatures_a_group_of_their_own(shard_dir, model_dir, tmp_path):
    model = FGCLIPVideo.from_pretrained(model_dir)
    scale_names = {f"logit_scales.{term}" for term in ("global", "region", "hard")}
    by_id = {id(param): name for name, param in model.named_parameters()}

    def groups_of(config) -> dict[str, tuple[float, set[str]]]:
        return {group["name"]: (group["lr"], {by_id[id(p)] for p in group["params"]})
                for group in parameter_groups(model, config)}

    plain = groups_of(make_config(shard_dir, model_dir, tmp_path, lr=2e-3, text_lr=1e-3))
    assert not any(name.startswith("scale") for name in plain)  # unset: the groups of earlier runs
    assert scale_names <= plain["vision_no_decay"][1] and plain["vision_no_decay"][0] == 2e-3

    split = groups_of(make_config(shard_dir, model_dir, tmp_path, lr=2e-3, text_lr=1e-3, scale_lr=5e-2))
    assert split["scale_no_decay"] == (5e-2, scale_names)  # no decay: a temperature is not a weight
    assert "scale" not in split
    assert split["text"][0] == 1e-3 and split["vision"][0] == 2e-3
    rest = set().union(*(names for group, (_, names) in split.items() if not group.startswith("scale")))
    assert rest == set().union(*(names for _, names in plain.values())) - scale_names


def test_nonfinite_steps_are_skipped_then_stop_the_run(shard_dir, model_dir, tmp_path):
    output_dir = tmp_path / "nan"
    config = make_config(shard_dir, model_dir, output_dir, epochs=3, save_every=1, keep_last=0, max_nonfinite=2)
    trainer = Trainer(config, show_progress=False)
    poisoned_steps = {2, 4, 5}

    def poison(_module, _inputs, output):
        if trainer.step + 1 in poisoned_steps:  # trainer.step = steps completed so far
            return output * float("nan")
        return None

    trainer.model.clip.visual_projection.register_forward_hook(poison)
    with pytest.raises(TrainingError) as info:
        trainer.run()
    message = str(info.value)
    assert "step 5" in message and "--lr" in message and "--text-lr" in message and "--max-grad-norm" in message

    metrics = read_metrics(output_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    assert [m["nonfinite"] for m in metrics] == [False, True, False, True, True]
    assert metrics[2]["skipped_steps"] == 1 and math.isfinite(metrics[2]["loss"])
    assert "NON-FINITE" in (output_dir / "trainer_log.txt").read_text()
    checkpoints = list_checkpoints(output_dir)
    assert [p.name for p in checkpoints] == ["checkpoint-1", "checkpoint-2", "checkpoint-3", "checkpoint-4"]
    for checkpoint in checkpoints:
        for name in ("model.safetensors", "fgclip_video.safetensors"):
            for tensor_name, tensor in load_file(str(checkpoint / name)).items():
                assert torch.isfinite(tensor).all(), (checkpoint, tensor_name)
        state = torch.load(checkpoint / STATE_FILE, weights_only=True)
        for index, param_state in state["optimizer"]["state"].items():
            assert all(torch.isfinite(v).all() for v in param_state.values() if torch.is_tensor(v)), (checkpoint, index)
    # the skipped step changed nothing: checkpoint-2 holds checkpoint-1's weights
    one = load_file(str(checkpoints[0] / "model.safetensors"))
    two = load_file(str(checkpoints[1] / "model.safetensors"))
    assert all(torch.equal(one[name], two[name]) for name in one)


def test_torchrun_with_two_gloo_processes_writes_one_log(shard_dir, model_dir, tmp_path):
    output_dir = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fgclip.cli",
        "train", "--preset", "demo", "--shards", str(shard_dir), "--model", str(model_dir), "--output-dir", str(output_dir),
        "--num-frames", "4", "--batch-size", "2", "--grad-accum", "2", "--epochs", "2", "--workers", "1",
        "--lr", "2e-3", "--text-lr", "2e-3", "--no-progress",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((output_dir / RUN_CONFIG_NAME).read_text())
    assert config["world_size"] == 2 and config["effective_batch"] == 8
    # 16 records / 2 ranks / batch 2 = 4 micro-batches per rank and epoch = 2 steps per epoch
    metrics = read_metrics(output_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    loss_lines = [line for line in (output_dir / "trainer_log.txt").read_text().splitlines() if " loss " in line]
    assert len(loss_lines) == 4  # one writer
    assert all(math.isfinite(m["loss"]) for m in metrics)
    assert (output_dir / "final" / "model.safetensors").is_file()
    assert "training complete: 4 steps" in result.stdout


def test_cli_train_and_doctor(shard_dir, model_dir, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["train", "--preset", "demo", "--shards", str(tmp_path / "nowhere"),
                                   "--model", str(model_dir), "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert missing.exit_code == 1 and "Error:" in missing.output and "Traceback" not in missing.output
    assert str(tmp_path / "nowhere") in missing.output

    too_many_frames = runner.invoke(main, ["train", "--preset", "demo", "--shards", str(shard_dir), "--model", str(model_dir),
                                           "--output-dir", str(tmp_path / "out"), "--num-frames", "64", "--no-progress"])
    assert too_many_frames.exit_code == 1 and "64 asked" in too_many_frames.output

    ok = runner.invoke(main, ["doctor", "--shards", str(shard_dir), "--model", str(model_dir),
                              "--output-dir", str(tmp_path / "out"), "--min-free-gb", "0", "--num-frames", "4"])
    assert ok.exit_code == 0, ok.output
    assert "[ OK ] shards" in ok.output and "[ OK ] model" in ok.output and "[ OK ] disk" in ok.output
    assert ("[ OK ] gpu" in ok.output) if torch.cuda.is_available() else ("[WARN] gpu" in ok.output)

    bad = runner.invoke(main, ["doctor", "--shards", str(shard_dir), "--model", str(tmp_path / "no-model"),
                               "--output-dir", str(tmp_path / "out"), "--min-free-gb", "1e9", "--num-frames", "4"])
    assert bad.exit_code == 1
    assert "[FAIL] model" in bad.output and "[FAIL] disk" in bad.output and "2 required check(s) failed" in bad.output


def test_doctor_checks_the_annotation_file_and_its_videos(shared_data, tmp_path):
    from fgclip.train.doctor import check_annotations, check_videos

    # the group's real training file: usable, but 140 of its videos are official test videos
    real = shared_data / "annotations" / "ucf_fgclip_train_with_timestamps_en.json"
    check, records = check_annotations(real)
    assert check.status == "WARN" and "140 videos also in the official test split" in check.detail
    assert check_videos(records, shared_data / "videos").status == "FAIL"  # UCF-Crime itself is not here

    annotations = tmp_path / "clips.json"
    annotations.write_text(json.dumps([
        {"video": "car_traffic.mp4", "global_caption": "Cars drive along a busy road in the daytime.",
         "region_captions": ["a white car driving"], "box_infos": [[{"frame": 10, "bbox": [0.1, 0.2, 0.4, 0.5]}]],
         "timestamps": None},
        {"video": "vtest_campus_cctv.mp4", "global_caption": "People walk across a campus square.",
         "region_captions": [], "box_infos": [], "timestamps": None},
    ]))
    check, records = check_annotations(annotations)
    assert check.status == "OK" and len(records) == 2
    videos = check_videos(records, shared_data / "videos")
    assert videos.status == "OK" and "2 videos" in videos.detail
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 100)
    broken = check_videos([dataclasses.replace(records[0], video="broken.mp4")], tmp_path)
    assert broken.status == "FAIL" and "broken.mp4" in broken.detail
