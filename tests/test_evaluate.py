"""Evaluation: scoring real stride-mode shards with a real tiny model, expansion, the report."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fgclip.eval.reader import RecordSource, UnitReader, plan_units
from fgclip.eval.evaluate import (
    anomaly_scores,
    class_prompts,
    evaluate,
    expand_to_frames,
    prompt_embeddings,
    score_videos,
    smooth_snippets,
)
from fgclip.run_dir import latest_model_dir, starting_model
from fgclip.models.text import load_tokenizer
from pipeline.shards import SCHEMA_VERSION, ShardAttrs, ShardReader, ShardRecord, shard_name, write_manifest, write_shard

STRIDE = 16
SIZE = 40  # stored frames smaller than the tiny model's 112 px: preprocess resizes on the way

# (video path as the split list writes it, class, source frames)
VIDEOS = [
    ("Arson/Arson011_x264.mp4", "Arson", 300),
    ("RoadAccidents/RoadAccidents021_x264.mp4", "RoadAccidents", 155),
    ("Testing_Normal_Videos_Anomaly/Normal_Videos_872_x264.mp4", "Normal", 530),  # 34 snippets: split over slots
    ("Testing_Normal_Videos_Anomaly/Normal_Videos_873_x264.mp4", "Normal", 90),
    ("Shooting/Shooting015_x264.mp4", "Shooting", 64),  # in the shards, not annotated
]
ANNOTATIONS = """\
Arson011_x264.mp4  Arson  20  80  200  310
RoadAccidents021_x264.mp4  RoadAccidents  30  90  -1  -1
Normal_Videos_872_x264.mp4  Normal  -1  -1  -1  -1
Normal_Videos_873_x264.mp4  Normal  -1  -1  -1  -1
Explosion008_x264.mp4  Explosion  1005  1245  -1  -1
"""


def write_test_shards(shard_dir, videos=VIDEOS, records_per_shard=2, seed=0):
    """Stride-mode test shards in the real format: one stored frame per 16 source frames."""
    rng = np.random.default_rng(seed)
    records = []
    for index, (video, label, num_source) in enumerate(videos):
        stored = math.ceil(num_source / STRIDE)
        frames = rng.integers(0, 256, size=(stored, SIZE, SIZE, 3), dtype=np.uint8)
        records.append(ShardRecord(
            frames_uint8=frames,
            frame_index=np.minimum(np.arange(stored) * STRIDE + STRIDE // 2, num_source - 1).astype(np.int64),
            boxes=np.zeros((0, stored, 4), np.float32), box_mask=np.zeros((0, stored), bool),
            global_caption="", region_captions=[], video=video, label=label, is_anomaly=label != "Normal",
            window_s=(0.0, num_source / 30.0), fps=30.0, num_source_frames=num_source, record_index=index,
        ))
    attrs = ShardAttrs(sampling="stride", num_frames=0, stride=STRIDE, height=SIZE, width=SIZE, resize_mode="squash")
    entries = []
    for shard_id, start in enumerate(range(0, len(records), records_per_shard)):
        chunk = records[start:start + records_per_shard]
        write_shard(shard_dir / shard_name(shard_id), chunk, attrs)
        entries.append({"file": shard_name(shard_id), "records": [r.record_index for r in chunk],
                        "num_frames": sum(r.num_frames for r in chunk)})
    write_manifest(shard_dir, {"schema_version": SCHEMA_VERSION, "sampling": "stride", "stride": STRIDE, "size": SIZE,
                               "shards": entries,
                               "skipped": [{"record_index": 99, "video": "Explosion/Explosion008_x264.mp4",
                                            "reason": "unreadable video (test fixture)"}]})
    return records


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from fgclip.models.factory import BUILTIN_CAPTIONS, init_model

    return init_model("tiny", tmp_path_factory.mktemp("model") / "tiny", captions=BUILTIN_CAPTIONS)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    shard_dir = tmp_path_factory.mktemp("test_shards")
    return shard_dir, write_test_shards(shard_dir)


def test_expand_cut_and_pad():
    snippets = np.array([0.1, 0.5, 0.9], dtype=np.float32)
    # 40 frames need ceil(40/16) = 3 snippets: frames 32..39 get the third, cut at 40.
    frames = expand_to_frames(snippets, 40, 16)
    assert frames.shape == (40,)
    assert (frames[:16] == 0.1).all() and (frames[16:32] == 0.5).all() and (frames[32:] == 0.9).all()
    # A true length needing more snippets than stored repeats the last one.
    padded = expand_to_frames(snippets, 70, 16)
    assert padded.shape == (70,) and (padded[48:] == 0.9).all()
    assert expand_to_frames(snippets, 5, 16).tolist() == pytest.approx([0.1] * 5)
    with pytest.raises(ValueError):
        expand_to_frames(np.zeros(0, np.float32), 10, 16)


def test_smoothing_is_a_centred_moving_average():
    x = np.array([0, 0, 3, 0, 0], dtype=np.float32)
    assert smooth_snippets(x, 1) is x
    assert smooth_snippets(x, 3).tolist() == pytest.approx([0, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="odd"):
        smooth_snippets(x, 4)


def test_prompts():
    rows = class_prompts(["RoadAccidents"], templates=["a photo of {}.", "cctv: {}"], normal_phrase="nothing")
    assert rows == [["a photo of nothing.", "cctv: nothing"], ["a photo of road accidents.", "cctv: road accidents"]]
    with pytest.raises(ValueError, match="exactly one"):
        class_prompts(["Arson"], templates=["no placeholder"])


def test_plan_units_packs_and_splits():
    sources = [RecordSource("a.h5", 0, 5), RecordSource("a.h5", 1, 20), RecordSource("b.h5", 0, 3)]
    units = plan_units(sources, slot_rows=8)
    assert [u.num_rows for u in units] == [8, 8, 8, 4]
    covered = {}
    for unit in units:
        slot_rows = [p.slot_row for p in unit.pieces]
        assert slot_rows == sorted(slot_rows) and unit.pieces[0].slot_row == 0
        for p in unit.pieces:
            covered.setdefault(p.source_number, []).extend(range(p.first_row, p.first_row + p.num_rows))
    assert {k: sorted(v) for k, v in covered.items()} == {0: list(range(5)), 1: list(range(20)), 2: list(range(3))}


def test_plan_units_starts_with_short_lead_units():
    sources = [RecordSource("a.h5", 0, 5), RecordSource("a.h5", 1, 20), RecordSource("b.h5", 0, 3)]
    units = plan_units(sources, slot_rows=8, lead_units=2, lead_rows=3)
    assert [u.num_rows for u in units] == [3, 3, 8, 8, 6]
    assert [(p.source_number, p.first_row, p.num_rows, p.slot_row) for p in units[1].pieces] == [(0, 3, 2, 0), (1, 0, 1, 2)]
    rows = [(p.source_number, r) for u in units for p in u.pieces for r in range(p.first_row, p.first_row + p.num_rows)]
    assert rows == [(n, r) for n, s in enumerate(sources) for r in range(s.stored_frames)]
    with pytest.raises(ValueError, match="lead_rows"):
        plan_units(sources, slot_rows=8, lead_units=1, lead_rows=9)


def _sources(shard_dir) -> list[RecordSource]:
    sources = []
    for path in sorted(shard_dir.glob("shard-*.h5")):
        with ShardReader(path) as reader:
            sources += [RecordSource(str(path), i, m.num_frames) for i, m in enumerate(reader.metas())]
    return sources


@pytest.mark.parametrize("num_readers", [0, 1])
def test_unit_reader_returns_the_shard_frames(shards, num_readers):
    shard_dir, records = shards
    sources = _sources(shard_dir)
    units = plan_units(sources, slot_rows=16)
    rebuilt = [np.zeros_like(r.frames_uint8) for r in records]
    with UnitReader(sources, units, height=SIZE, width=SIZE, slot_rows=16, num_readers=num_readers) as reader:
        for unit_number, slot in reader:
            for p in units[unit_number].pieces:
                rebuilt[p.source_number][p.first_row:p.first_row + p.num_rows] = \
                    reader.slots[slot, p.slot_row:p.slot_row + p.num_rows]
            reader.release(slot)
    for record, frames in zip(records, rebuilt):
        np.testing.assert_array_equal(frames, record.frames_uint8)


def _read_all(shard_dir, num_readers=2, slot_rows=16):
    """Every record's frames through a UnitReader, and the pids of its reader processes."""
    sources = _sources(shard_dir)
    units = plan_units(sources, slot_rows=slot_rows)
    frames = [np.zeros((s.stored_frames, SIZE, SIZE, 3), np.uint8) for s in sources]
    with UnitReader(sources, units, height=SIZE, width=SIZE, slot_rows=slot_rows, num_readers=num_readers) as reader:
        pids = [worker.proc.pid for worker in reader._pool.workers]
        for unit_number, slot in reader:
            for p in units[unit_number].pieces:
                frames[p.source_number][p.first_row:p.first_row + p.num_rows] = reader.slots[slot, p.slot_row:p.slot_row + p.num_rows]
            reader.release(slot)
    return frames, pids


def test_unit_readers_of_one_layout_share_their_reader_processes(tmp_path):
    """Scoring a second model reuses the readers of the first; shards rewritten at the same paths
    in between are read anew (the readers close the files they kept open)."""
    first_records = write_test_shards(tmp_path, seed=1)
    first_frames, first_pids = _read_all(tmp_path)
    for path in tmp_path.glob("shard-*.h5"):
        path.unlink()
    second_records = write_test_shards(tmp_path, seed=2)
    second_frames, second_pids = _read_all(tmp_path)
    assert second_pids == first_pids and len(first_pids) == 2
    for records, frames in ((first_records, first_frames), (second_records, second_frames)):
        for record, got in zip(records, frames):
            np.testing.assert_array_equal(got, record.frames_uint8)
    assert not np.array_equal(first_records[0].frames_uint8, second_records[0].frames_uint8)
    # Another layout gets readers of its own; the spare ones are stopped.
    _, other_pids = _read_all(tmp_path, slot_rows=8)
    assert set(other_pids).isdisjoint(first_pids)


def test_a_unit_reader_left_with_reads_pending_is_not_reused(shards):
    shard_dir, _ = shards
    sources = _sources(shard_dir)
    units = plan_units(sources, slot_rows=4)
    with UnitReader(sources, units, height=SIZE, width=SIZE, slot_rows=4, num_readers=2) as reader:
        pids = [worker.proc.pid for worker in reader._pool.workers]
        pool = reader._pool
        next(iter(reader))  # the other reads are still owed
    assert not pool.workers  # closed, not kept
    _, later_pids = _read_all(shard_dir)
    assert set(later_pids).isdisjoint(pids)


def test_scores_match_one_video_at_a_time(tiny_model, shards):
    """Batches spanning videos and videos split over slots give each frame its own score."""
    from fgclip.models.clip_video import FGCLIPVideo

    shard_dir, records = shards
    model = FGCLIPVideo.from_pretrained(tiny_model)
    tokenizer = load_tokenizer(tiny_model)
    classes = ["Arson", "RoadAccidents", "Shooting"]
    scores = score_videos(model, tokenizer, shard_dir, class_names=classes, device="cpu", batch_frames=8,
                          slot_batches=2, num_readers=1, progress=False)
    assert set(scores) == {"Arson011_x264", "RoadAccidents021_x264", "Normal_Videos_872_x264",
                           "Normal_Videos_873_x264", "Shooting015_x264"}
    prompts = prompt_embeddings(model, tokenizer, classes, device=torch.device("cpu"))
    with torch.inference_mode():
        temperature = model.temperatures()["global"]
        for record in records:
            pixels = model.preprocess(torch.from_numpy(record.frames_uint8))
            expected = anomaly_scores(model.encode_frames(pixels), prompts, temperature).numpy()
            got = scores[record.video.split("/")[-1][:-4]]
            assert got.num_frames == record.num_source_frames and got.stride == STRIDE
            np.testing.assert_allclose(got.snippet_scores, expected, rtol=1e-4, atol=1e-5)
            assert ((got.snippet_scores >= 0) & (got.snippet_scores <= 1)).all()


def test_sigmoid_anomaly_score_is_normals_share_of_the_prompt_probabilities():
    """The siglip2 family's score: 1 - p[normal] / sum(p), p = sigmoid(scale * cosine + bias), stable
    at SigLIP's bias of -10 (where every p is tiny) and close to the softmax score there."""
    generator = torch.Generator().manual_seed(0)
    frames = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    prompts = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-2.0)
    p = torch.sigmoid(scale * frames @ prompts.t() + bias)
    expected = 1 - p[:, 0] / p.sum(dim=-1)
    got = anomaly_scores(frames, prompts, scale, objective="sigmoid", bias=bias)
    torch.testing.assert_close(got, expected)
    deep = anomaly_scores(frames, prompts, scale, objective="sigmoid", bias=torch.tensor(-60.0))
    assert torch.isfinite(deep).all()
    torch.testing.assert_close(deep, anomaly_scores(frames, prompts, scale), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        anomaly_scores(frames, prompts, scale, objective="sigmoid")


def _training_run(tmp_path, tiny_model):
    """A training output dir as the trainer writes it (its own checkpoint writer): run_config.json
    naming the start model, checkpoint-5 and checkpoint-10, no final model yet."""
    from fgclip.train.checkpoint import write_model_dir
    from fgclip.models.clip_video import FGCLIPVideo
    from fgclip.run_dir import checkpoint_dir, write_run_config

    run = tmp_path / "run"
    config = {"model": str(tiny_model), "preset": "debug", "total_steps": 12}
    model = FGCLIPVideo.from_pretrained(tiny_model)
    generator = torch.Generator().manual_seed(0)
    for step in (5, 10):
        with torch.no_grad():  # a different model from the start
            weight = model.clip.visual_projection.weight
            weight.add_(torch.randn(weight.shape, generator=generator) * weight.std())
        write_model_dir(checkpoint_dir(run, step), model, config, state={"step": step})
    write_run_config(run, config)
    return run


def test_latest_checkpoint_and_starting_model(tmp_path, tiny_model):
    from fgclip.eval.evaluate import choose_models

    run = _training_run(tmp_path, tiny_model)
    assert latest_model_dir(run) == run / "checkpoint-10"
    assert starting_model(run) == tiny_model
    assert starting_model(run / "checkpoint-5") == tiny_model  # from its run_config.json
    assert starting_model(tiny_model) is None  # a plain model directory
    shutil.copytree(run / "checkpoint-10", run / "final")
    assert latest_model_dir(run) == run / "final"
    choices = choose_models([run, run / "checkpoint-5"], tiny_model)
    assert [(c.name, c.role, c.step) for c in choices] == [
        ("run/final", "checkpoint", 12), ("run/checkpoint-5", "checkpoint", 5), ("baseline (tiny)", "baseline", 0)]


def test_runs_written_before_the_rename_are_still_read(tmp_path, tiny_model):
    """Older runs saved their settings as the output dir's config.json and a checkpoint's
    training_config.json; a model's own config.json beside them is not taken for one."""
    from fgclip.run_dir import RUN_CONFIG_NAME, read_run_config, training_step

    run = _training_run(tmp_path, tiny_model)
    config = json.loads((run / RUN_CONFIG_NAME).read_text())
    (run / RUN_CONFIG_NAME).rename(run / "config.json")
    checkpoint = run / "checkpoint-5"
    (checkpoint / RUN_CONFIG_NAME).rename(checkpoint / "training_config.json")
    assert read_run_config(run) == config and starting_model(run) == tiny_model
    assert read_run_config(checkpoint) == config and starting_model(checkpoint) == tiny_model
    (checkpoint / "training_config.json").unlink()
    assert read_run_config(checkpoint) is None  # only the model's config.json is left
    assert training_step(checkpoint) == 5  # from its name


def test_cli_end_to_end_report_plots_and_missing_videos(tmp_path, tiny_model, shards):
    from fgclip.cli import main

    shard_dir, _ = shards
    run = _training_run(tmp_path, tiny_model)
    annotations = tmp_path / "Temporal_Anomaly_Annotation.txt"
    annotations.write_text(ANNOTATIONS)
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, [
        "eval", "--checkpoint", str(run), "--checkpoint", str(run / "checkpoint-5"), "--test-shards", str(shard_dir),
        "--annotations", str(annotations), "--out", str(out), "--device", "cpu", "--readers", "1",
        "--batch-frames", "16", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    assert "PARTIAL" in result.output

    report = json.loads((out / "report.json").read_text())
    assert report["partial"] and report["headline"].startswith("PARTIAL")
    assert [m["name"] for m in report["models"]] == ["run/checkpoint-10", "run/checkpoint-5", "baseline (tiny)"]
    assert report["models"][2]["role"] == "baseline" and report["models"][2]["path"] == str(tiny_model)
    coverage = report["coverage"]
    assert coverage["missing_from_shards"] == [
        {"video": "Explosion008_x264", "label": "Explosion", "reason": "unreadable video (test fixture)"}]
    assert coverage["not_annotated"] == [{"video": "Shooting/Shooting015_x264.mp4", "label": "Shooting"}]
    assert coverage["evaluated_videos"] == 4
    # The true frame counts, and the official intervals under the inclusive default (cut at 300).
    metrics = report["models"][0]["metrics"]
    assert metrics["num_frames"] == 300 + 155 + 530 + 90
    assert metrics["num_anomalous_frames"] == 61 + 100 + 61
    assert report["ground_truth"]["intervals_cut_at_video_end"] == [
        {"video": "Arson011_x264", "num_frames": 300, "ranges": [[200, 311]]}]
    assert 0.0 <= metrics["auc"] <= 1.0 and set(metrics["per_class_auc"]) == {"Arson", "RoadAccidents"}
    assert report["config"]["smoothing"] == "none"
    # Checkpoints differ from the baseline, so their scores do too.
    first_video = report["videos"][0]["scores"]
    assert first_video["run/checkpoint-10"]["mean"] != pytest.approx(first_video["baseline (tiny)"]["mean"], abs=1e-6)

    markdown = (out / "report.md").read_text()
    assert "| run/checkpoint-10 | checkpoint |" in markdown and "| baseline (tiny) | baseline |" in markdown
    assert "Explosion008_x264" in markdown and "Shooting015_x264" in markdown
    assert "**none**" in markdown  # smoothing stated
    for png in ["plots/roc.png", "plots/per_class_auc.png", "plots/videos/Arson011_x264.png",
                "plots/videos/Normal_Videos_872_x264.png"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert len(list((out / "plots" / "videos").glob("*.png"))) == 4
    assert list((out / "tensorboard" / "run_checkpoint-10").glob("events.out.tfevents.*"))
    with np.load(out / "scores" / "run_checkpoint-10.npz") as saved:
        assert saved["Normal_Videos_872_x264"].shape == (34,)


def test_cli_without_checkpoint_says_train_first(tmp_path, monkeypatch):
    from fgclip.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["eval"])
    assert result.exit_code != 0
    assert "run make train-debug first" in result.output and "Traceback" not in result.output


def test_real_stage1_output_of_the_tiny_synthetic_dataset(tmp_path, tiny_model):
    """Stage 1's own test shards (real H.264 videos, ffmpeg decode) through evaluate()."""
    from pipeline import embedded
    from pipeline.frames import build_test_shards
    from pipeline.synth import generate_dataset

    synth = generate_dataset(tmp_path / "synth", size="tiny", workers=1)
    shard_dir = tmp_path / "test_shards"
    build_test_shards(synth / embedded.TEST_LIST.name,
                      video_root=synth / embedded.TEST_VIDEO_ROOT.relative_to(embedded.SYNTH_DIR),
                      out_dir=shard_dir, stride=STRIDE, size=embedded.FRAME_SIZE, workers=1, progress=False)
    annotations = synth / embedded.TEMPORAL_ANNOTATIONS.name
    report = evaluate([tiny_model], shard_dir, annotations, tmp_path / "eval", smoothing_window=3,
                      device="cpu", num_readers=0, batch_frames=8, video_plots=False, progress=False)

    from fgclip.eval.ground_truth import frame_labels, parse_temporal_annotations
    from pipeline.shards import iter_record_metas

    truth = parse_temporal_annotations(annotations)
    metas = list(iter_record_metas(shard_dir))
    assert not report["partial"] and report["coverage"]["evaluated_videos"] == len(truth) == len(metas)
    metrics = report["models"][0]["metrics"]
    assert metrics["num_frames"] == sum(m.num_source_frames for m in metas)
    assert metrics["num_anomalous_frames"] == sum(
        int(frame_labels(truth[m.video.split("/")[-1][:-4]], m.num_source_frames).sum()) for m in metas) > 0
    assert metrics["auc"] is not None
    assert report["config"]["smoothing"].startswith("moving average over 3 snippets")
    assert "moving average over 3 snippets" in (tmp_path / "eval" / "report.md").read_text()


def test_cli_input_errors_are_one_line(tmp_path, tiny_model, shards):
    from fgclip.cli import main

    shard_dir, _ = shards
    annotations = tmp_path / "gt.txt"
    annotations.write_text(ANNOTATIONS)
    common = ["eval", "--checkpoint", str(tiny_model), "--annotations", str(annotations), "--out", str(tmp_path / "o")]
    cases = [
        (["--test-shards", str(tmp_path / "nowhere")], "no test shards"),
        (["--test-shards", str(shard_dir), "--smooth", "4"], "odd number of snippets"),
        (["--test-shards", str(shard_dir), "--prompt-template", "no placeholder"], "exactly one"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(main, common + extra)
        assert result.exit_code != 0 and message in result.output, (extra, result.output)
        assert "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["eval", "--checkpoint", str(tmp_path / "no_run"), "--test-shards",
                                        str(shard_dir), "--annotations", str(annotations)])
    assert missing.exit_code != 0 and "no_run: no such checkpoint" in missing.output
