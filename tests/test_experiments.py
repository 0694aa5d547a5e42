"""`fgclip-vad experiment`: spec parsing, cells and their shared stages, tables, and a real
experiment of one variant x two seeds on the shared clips (stage 1 with ffmpeg, two training
steps of the micro model, evaluation), the seeds in parallel on two "GPUs": results written, a
rerun skips everything, a killed training resumes, and the submitit path runs a cell with its
local executor."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from fgclip.cli import main as cli
from fgclip.experiments.cells import expand_cells
from fgclip.experiments.results import latex_tables, markdown_tables
from fgclip.experiments.runner import plan_experiment
from fgclip.experiments.spec import SpecError, load_spec
from fgclip.experiments.stages import STAGE_RECORD, option_args

REPO = Path(__file__).resolve().parent.parent

GRID = """
name = "grid"
seeds = [1, 2]
[dataset]
embedded = true
[base.frames]
num_frames = [8]
[base.train]
preset = "demo"
epochs = 2
[[axes]]
name = "loss"
[[axes.variants]]
label = "both"
[[axes.variants]]
label = "global only"
train = { region_weight = 0.0 }
[[axes]]
name = "window"
[[axes.variants]]
label = "annotated"
[[axes.variants]]
label = "whole video"
frames = { window = "whole-video" }
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_cells_cross_and_separate_share_what_their_options_share(tmp_path):
    spec = load_spec(write(tmp_path / "grid.toml", GRID))
    cells = expand_cells(spec)
    assert len(cells) == 8 and cells[0].name == "both_annotated-seed1" and cells[-1].variant == "global only / whole video"
    assert cells[4].options["train"] == {"preset": "demo", "epochs": 2, "region_weight": 0.0}
    plan = plan_experiment(spec, tmp_path / "out")
    keys = {c.cell.name: c.keys for c in plan.cells}
    # the loss axis changes training only: the same shards; seeds share shards, not runs
    assert keys["both_annotated-seed1"].frames == keys["global-only_annotated-seed1"].frames
    assert keys["both_annotated-seed1"].frames != keys["both_whole-video-seed1"].frames
    assert keys["both_annotated-seed1"].train != keys["both_annotated-seed2"].train
    assert len({k.test_frames for k in keys.values()}) == 1  # one test set for all
    assert len(plan.shared) == 3  # two training-shard builds and one test-shard build
    train = plan.cells[4].stages[0]
    assert train.argv[:2] == ["train", "--shards"] and "--region-weight" in train.argv and "--resume" in train.argv

    separate_text = GRID.replace('seeds = [1, 2]', 'seeds = [1, 2]\ncombine = "separate"')
    separate = load_spec(write(tmp_path / "separate.toml", separate_text))
    cells = expand_cells(separate)
    assert [c.group for c in cells] == ["loss"] * 4 + ["window"] * 4
    plan = plan_experiment(separate, tmp_path / "out")
    # "both" (loss) and "annotated" (window) are the base itself: one run serves both tables
    assert plan.cells[0].stages[0].output == plan.cells[4].stages[0].output


@pytest.mark.parametrize("text, message", [
    ("seeds = []", "seeds"),
    ("[base.trian]\nepochs = 1", "unknown stage"),
    ("[base.train]\nseed = 3", "set by the runner"),
    ('combine = "zip"', "combine"),
    ("[dataset]\nannotations = 'a.json'", "needs test_list"),
    ("[[axes]]\nname = 'x'\n[[axes.variants]]\nlabel = 'a'\n[[axes.variants]]\nlabel = 'a'", "same label"),
    ("seeds = [", "not valid TOML"),
])
def test_bad_specs_are_named(tmp_path, text, message):
    with pytest.raises(SpecError, match=message) as err:
        load_spec(write(tmp_path / "bad.toml", text))
    assert "bad.toml" in str(err.value)


def test_head_rows_add_features_and_a_head_to_each_cell(tmp_path):
    spec = load_spec(write(tmp_path / "heads.toml", GRID.replace("[dataset]", 'rows = ["prompt", "heads"]\n[dataset]')))
    plan = plan_experiment(spec, tmp_path / "out")
    assert [run.stage for run in plan.cells[0].stages] == ["train", "features", "heads", "eval"]
    assert plan.train_list == tmp_path / "out" / "lists" / "train.txt"  # the embedded default's, written at run time
    heads = plan.cells[0].stage("heads")
    assert heads.argv[:2] == ["train-head", "--features"] and heads.argv[-2:] == ["--seeds", "1"]
    real = load_spec(write(tmp_path / "real.toml", 'rows = ["heads"]\n[dataset]\nannotations = "a.json"\n'
                                                   'test_list = "t.txt"\nground_truth = "g.txt"\nmodel = "m"'))
    with pytest.raises(SpecError, match="train_list"):
        plan_experiment(real, tmp_path / "out")
    spec = load_spec(write(tmp_path / "features.toml", "[base.features]\ncrops = 10"))
    with pytest.raises(SpecError, match="no cell runs that stage"):
        plan_experiment(spec, tmp_path / "out")


def test_option_args_pass_any_option_through():
    assert option_args({"num_frames": [64, 256], "augment": False, "no_baseline": True, "lr": 1e-3}) == [
        "--num-frames", "64", "--num-frames", "256", "--no-augment", "--no-baseline", "--lr", "0.001"]


def _row(variant, seed, auc, fa, group=""):
    return {"group": group, "variant": variant, "seed": seed, "auc": auc, "ap": auc - 0.1,
            "false_alarm_rate_at_recall_90": fa,
            "selection_rule": "best/ by retrieval on 5% of the training videos held out", "convention": "inclusive",
            "report": f"reports/{variant}{seed}/report.md"}


def test_tables_mean_std_bold_best_and_caption():
    rows = [_row("both", 1, 0.80, 0.30), _row("both", 2, 0.90, 0.10), _row("global only", 1, 0.70, 0.05),
            _row("global only", 2, 0.70, 0.15)]
    md = markdown_tables(rows, "demo")
    assert "| both | **85.00 ± 7.07** | **75.00 ± 7.07** |" in md
    assert "| global only | 70.00 ± 0.00 | 60.00 ± 0.00 | **10.00 ± 7.07** |" in md
    assert "[s1](reports/both1/report.md)" in md
    assert "Mean ± std over 2 seeds (1, 2)" in md and "training videos held out" in md and "inclusive" in md
    tex = latex_tables(rows, "demo")
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\textbf{85.00 $\\pm$ 7.07}" in tex and "global only & 70.00 $\\pm$ 0.00" in tex
    assert "FA@90\\%R" in tex


def test_dry_run_of_the_paper_spec_lists_cells_with_projected_times():
    result = CliRunner().invoke(cli, ["experiment", str(REPO / "experiments" / "paper-ablations.toml"), "--dry-run",
                                      "--out", "/nonexistent/paper"])
    assert result.exit_code == 0, result.output
    assert "paper-ablations:" in result.output and "projected from bench-h200.json" in result.output
    cells = [line for line in result.output.splitlines() if line.strip().startswith("cell ")]
    assert len(cells) >= 11 * 3
    assert all(":" in line.split()[-1] for line in cells)  # h:mm:ss, every one known from the hints
    assert result.output.strip().splitlines()[-1].startswith("total ")


# --- a real experiment: one variant, two seeds -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_dataset(link_real_clips, shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smoke-data")
    link_real_clips(root / "videos", {
        "Abuse/Abuse901_x264.mp4": "vtest_campus_cctv.mp4",
        "Training_Normal_Videos_Anomaly/Normal_Videos901_x264.mp4": "car_traffic.mp4",
        "Arrest/Arrest901_x264.avi": "megamind_xvid.avi",
        "Abuse/Abuse902_x264.mp4": "vtest_campus_cctv.mp4",
        "Testing_Normal_Videos_Anomaly/Normal_Videos902_x264.mp4": "car_traffic.mp4",
    })
    records = [
        {"video": "Abuse/Abuse901_x264.mp4", "global_caption": "a man hits another man in the square",
         "region_captions": ["a man in a dark coat"], "box_infos": [[{"frame": 100, "bbox": [0.1, 0.2, 0.4, 0.6]}]],
         "timestamps": [5.0, 30.0]},
        {"video": "Abuse/Abuse901_x264.mp4", "global_caption": "people walk across a campus",
         "region_captions": ["a woman with a bag"], "box_infos": [[]], "timestamps": [30.0, 60.0]},
        {"video": "Training_Normal_Videos_Anomaly/Normal_Videos901_x264.mp4", "global_caption": "cars drive on a road",
         "region_captions": ["a white car"], "box_infos": [[]], "timestamps": None},
        {"video": "Arrest/Arrest901_x264.avi", "global_caption": "police arrest a man indoors",
         "region_captions": ["a policeman"], "box_infos": [[{"frame": 50, "bbox": [0.3, 0.3, 0.7, 0.9]}]],
         "timestamps": None},
    ]
    (root / "train.json").write_text(json.dumps(records))
    (root / "Anomaly_Test.txt").write_text(
        "Abuse/Abuse902_x264.mp4\nTesting_Normal_Videos_Anomaly/Normal_Videos902_x264.mp4\n")
    (root / "Anomaly_Train.txt").write_text("Abuse/Abuse901_x264.mp4\nArrest/Arrest901_x264.avi\n"
                                            "Training_Normal_Videos_Anomaly/Normal_Videos901_x264.mp4\n")
    (root / "Temporal_Anomaly_Annotation.txt").write_text(
        "Abuse902_x264.mp4  Abuse  200  400  -1  -1\nNormal_Videos902_x264.mp4  Normal  -1  -1  -1  -1\n")
    shutil.copy(shared_data / "ucf" / "Anomaly_Test.txt", root / "official_test_split.txt")
    return root


def smoke_spec(path: Path, data: Path, model: Path, seeds: str = "[3, 4]", rows: str = '["prompt"]',
               tables: str = "") -> Path:
    return write(path, f"""
name = "smoke"
seeds = {seeds}
rows = {rows}
[dataset]
train_list = "{data / 'Anomaly_Train.txt'}"
annotations = "{data / 'train.json'}"
video_root = "{data / 'videos'}"
test_list = "{data / 'Anomaly_Test.txt'}"
test_video_root = "{data / 'videos'}"
ground_truth = "{data / 'Temporal_Anomaly_Annotation.txt'}"
test_split = "{data / 'official_test_split.txt'}"
model = "{model}"
[base.frames]
num_frames = [4]
size = 32
workers = 1
[base.train]
preset = "debug"
num_frames = 4
batch_size = 1
grad_accum = 2
epochs = 1
workers = 0
cpu_threads = 1
save_every = 1
keep_last = 2
[base.eval]
no_baseline = true
video_plots = false
heat_maps = false
readers = 0
device = "cpu"
{tables}
""")


def test_cells_run_then_skip_then_resume_a_killed_training(smoke_dataset, model_dir, tmp_path):
    spec = smoke_spec(tmp_path / "smoke.toml", smoke_dataset, model_dir)
    out = tmp_path / "exp"
    runner = CliRunner()
    # two seeds, one "GPU" each, in parallel (on a machine without GPUs the ids only reach the environment)
    result = runner.invoke(cli, ["experiment", str(spec), "--out", str(out), "--gpus", "0,1"])
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["cell"], r["seed"]) for r in rows] == [("base-seed3", "3"), ("base-seed4", "4")]
    gpus = {json.loads((out / r["run"] / STAGE_RECORD).read_text())["cuda_visible_devices"] for r in rows}
    assert gpus == {"0", "1"}
    assert " ± " in (out / "table.md").read_text()
    row = rows[0]
    for column in ("auc", "ap", "auc_anomalous_videos", "false_alarm_rate_at_recall_90", "eval_frames_per_s",
                   "train_wall_s", "train_steps_s", "eval_wall_s", "cell_wall_s", "frames_wall_s"):
        assert row[column] != "", column
    assert 0.0 <= float(row["auc"]) <= 1.0 and int(row["train_steps"]) == 2
    assert 0 < float(row["train_steps_s"]) < float(row["train_wall_s"])
    assert (out / row["report"]).is_file()
    assert "| base |" in (out / "table.md").read_text() and "\\toprule" in (out / "table.tex").read_text()
    assert (out / "cells" / "base-seed3" / "train.log").is_file()

    # again: every stage and the cell are done, and it says so
    again = runner.invoke(cli, ["experiment", str(spec), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "cell base-seed3: done, skipped" in again.output and again.output.count("done, skipped") == 4

    # a training killed after its first checkpoint: no final model, no stage record; it resumes there
    run = out / row["run"]
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoint-2")
    (run / STAGE_RECORD).unlink()
    report = out / row["report"]
    report_record = report.parent / STAGE_RECORD
    report_record.unlink()
    resumed = runner.invoke(cli, ["experiment", str(spec), "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert "cell base-seed3: train" in resumed.output and "eval" in resumed.output
    assert f"resumed from {run / 'checkpoint-1'} at step 1/2" in (run / "trainer_log.txt").read_text()
    assert (run / "final" / "config.json").is_file()

    # the submitit path: the evaluation rerun as a job of submitit's local executor
    pytest.importorskip("submitit")
    report_record.unlink()
    local = runner.invoke(cli, ["experiment", str(spec), "--out", str(out), "--executor", "local", "--timeout-min", "10"])
    assert local.exit_code == 0, local.output
    assert "cell base-seed3: train done, eval" in local.output
    assert list((out / "submitit").glob("*_result.pkl")) or list((out / "submitit").iterdir())
    assert report_record.is_file()


def test_head_rows_run_features_and_a_head_beside_prompt_scoring(smoke_dataset, model_dir, tmp_path):
    tables = '[base.features]\ndevice = "cpu"\nworkers = 1\n[base.heads]\nmethod = "mil"\nepochs = 2\n' \
             'batch_size = 1\ndevice = "cpu"'
    spec = smoke_spec(tmp_path / "heads.toml", smoke_dataset, model_dir, seeds="[3]", rows='["prompt", "heads"]',
                      tables=tables)
    out = tmp_path / "exp"
    result = CliRunner().invoke(cli, ["experiment", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["row"], r["variant"]) for r in rows] == [("prompt scoring", "base (prompt scoring)"), ("head", "base (head)")]
    head = rows[1]
    assert head["method"] == "mil" and head["auc"] != "" and head["auc_anchors"] != ""
    assert head["false_alarm_rate_at_recall_95"] != "" and float(head["heads_wall_s"]) > 0
    assert head["run"] == rows[0]["run"]  # one training serves both rows
    table = (out / "table.md").read_text()
    assert "| base (head) |" in table and "FA@95%R" in table
    assert "mil heads: the end of a fixed schedule (2 epochs)" in table
