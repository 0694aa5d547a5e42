"""Each stage of a cell as a command line of `fgclip-vad`, its output folder and its "done" test.

Stages run as subprocesses (`python -m fgclip.cli ...`): a killed cell leaves what each command
leaves (finished shards, checkpoints) and resumes from it, memory is given back between
stages, and each stage's output goes to a log file. The runner adds only the options that tie
the stages together (RUNNER_OPTIONS in `fgclip.experiments.spec`); everything else is the
spec's, passed through by `option_args`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fgclip import run_dir
from fgclip.experiments.cells import Cell, CellKeys
from pipeline import embedded

# Options of the frames stage that shape the test shards too (and the only ones they get).
TEST_FRAMES_OPTIONS = ("size", "resize", "stride", "workers")
DEFAULT_TRAIN_FRAMES = 256  # `fgclip-vad frames`' default T
DEFAULT_TEST_STRIDE = 16


@dataclass(frozen=True)
class DatasetPaths:
    """Where a spec's data is: training annotations and videos, test list and videos, ground truth, model."""

    annotations: Path
    video_root: Path
    test_list: Path
    test_video_root: Path
    ground_truth: Path
    model: Path
    test_split: Path | None = None  # the official split to check training records against
    size: int | None = None  # stored frame size unless the frames options say otherwise
    dataset: str | None = None  # test mode's --dataset
    embedded: bool = False
    model_preset: str = "tiny"  # embedded: the `init-model` preset that writes `model` when it is missing
    train_list: Path | None = None  # the field's training split (every training video) for features and heads

    def identity(self) -> dict:
        """What makes two specs' data the same (hashed into the stage keys)."""
        return {"annotations": str(self.annotations), "video_root": str(self.video_root),
                "test_list": str(self.test_list), "model": str(self.model), "size": self.size}


def resolve_dataset(spec_dataset: dict) -> DatasetPaths:
    """The [dataset] table as paths: the embedded default's (`pipeline.embedded`), or the spec's."""
    if spec_dataset.get("embedded"):
        preset = str(spec_dataset.get("model_preset", "tiny"))
        model = Path(spec_dataset.get("model", embedded.model_dir(preset)))
        return DatasetPaths(embedded.TRAIN_JSON, embedded.VIDEO_ROOT, embedded.TEST_LIST, embedded.TEST_VIDEO_ROOT,
                            embedded.TEMPORAL_ANNOTATIONS, model, test_split=embedded.TEST_LIST,
                            size=embedded.FRAME_SIZE, embedded=True, model_preset=preset)
    annotations = Path(spec_dataset["annotations"])
    test_list = Path(spec_dataset["test_list"])
    return DatasetPaths(
        annotations=annotations, video_root=Path(spec_dataset.get("video_root", annotations.parent)),
        test_list=test_list, test_video_root=Path(spec_dataset.get("test_video_root", test_list.parent)),
        ground_truth=Path(spec_dataset["ground_truth"]), model=Path(spec_dataset["model"]),
        test_split=Path(spec_dataset["test_split"]) if spec_dataset.get("test_split") else None,
        size=spec_dataset.get("size"), dataset=spec_dataset.get("dataset"),
        train_list=Path(spec_dataset["train_list"]) if spec_dataset.get("train_list") else None,
    )


def option_args(options: dict) -> list[str]:
    """{"num_frames": [64], "augment": False, "epochs": 2} -> ["--num-frames", "64", "--no-augment", "--epochs", "2"].

    true is the flag alone, false its `--no-` form (for on/off switches), a list repeats it.
    """
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


def test_frames_options(frames_options: dict) -> dict:
    return {key: frames_options[key] for key in TEST_FRAMES_OPTIONS if key in frames_options}


def stored_frames(frames_options: dict) -> int:
    """The T of a frames stage's training shards (the largest when several are built)."""
    value = frames_options.get("num_frames", DEFAULT_TRAIN_FRAMES)
    return max(value) if isinstance(value, list) else int(value)


@dataclass
class StageRun:
    """One stage of one cell: the command, where it writes, how to tell it is done."""

    stage: str
    key: str
    argv: list[str]  # after `python -m fgclip.cli`
    output: Path  # the folder the stage writes (a `stage.json` with its time goes there too)
    done_kind: str  # what `is_done` checks: manifest, run, report
    log_name: str = ""
    extra: dict = field(default_factory=dict)

    def command(self) -> list[str]:
        return fgclip_command(self.argv)


def fgclip_command(argv: list[str]) -> list[str]:
    """`fgclip-vad ARGV` as this interpreter runs it (no reliance on the console script's PATH)."""
    return [sys.executable, "-m", "fgclip.cli", *argv]


STAGE_RECORD = "experiment_stage.json"  # in a stage's output folder: its command and wall time


def is_done(run: StageRun) -> bool:
    """Whether a stage's output is complete (then it is not run again)."""
    record = run.output / STAGE_RECORD
    if not record.is_file():
        return False
    if run.done_kind == "manifest":
        manifest = run.output / "manifest.json"
        try:
            return bool(json.loads(manifest.read_text())["summary"]["complete"])
        except (OSError, ValueError, KeyError):
            return False
    if run.done_kind == "run":
        return (run.output / run_dir.FINAL_DIR_NAME / "config.json").is_file()
    if run.done_kind == "report":
        try:
            return bool(json.loads((run.output / "report.json").read_text())["models"])
        except (OSError, ValueError, KeyError):
            return False
    if run.done_kind == "features":
        return (run.output / "manifest.json").is_file()
    if run.done_kind == "heads":
        return (run.output / HEAD_RESULTS).is_file()
    return True


def frames_run(data: DatasetPaths, cell: Cell, keys: CellKeys, root: Path) -> StageRun:
    options = {k: v for k, v in cell.options["frames"].items() if k != "stride"}
    if data.size is not None:
        options.setdefault("size", data.size)
    out = root / "shards" / keys.frames
    argv = ["frames", str(data.annotations), "--video-root", str(data.video_root), "--out", str(out)]
    if data.test_split is not None:
        argv += ["--test-split", str(data.test_split)]
    return StageRun("frames", keys.frames, argv + option_args(options),
                    out / embedded.train_shard_dir(stored_frames(options)).name, "manifest", f"frames-{keys.frames}.log")


def test_frames_run(data: DatasetPaths, cell: Cell, keys: CellKeys, root: Path) -> StageRun:
    options = test_frames_options(cell.options["frames"])
    if data.size is not None:
        options.setdefault("size", data.size)
    out = root / "test_shards" / keys.test_frames
    argv = ["frames", "--test-list", str(data.test_list), "--video-root", str(data.test_video_root), "--out", str(out)]
    if data.dataset:
        argv += ["--dataset", data.dataset]
    stride = int(options.get("stride", DEFAULT_TEST_STRIDE))
    return StageRun("test-frames", keys.test_frames, argv + option_args(options),
                    out / embedded.test_shard_dir(stride).name, "manifest", f"test-frames-{keys.test_frames}.log")


def train_run(data: DatasetPaths, cell: Cell, keys: CellKeys, root: Path, shards: Path) -> StageRun:
    out = root / "runs" / keys.train
    argv = ["train", "--shards", str(shards), "--model", str(data.model), "--output-dir", str(out),
            "--seed", str(cell.seed), "--resume", "auto", "--no-progress"]
    return StageRun("train", keys.train, argv + option_args(cell.options["train"]), out, "run", "train.log")


def eval_run(data: DatasetPaths, cell: Cell, keys: CellKeys, root: Path, run: Path, test_shards: Path) -> StageRun:
    out = root / "reports" / keys.eval
    argv = ["eval", "--checkpoint", str(run), "--test-shards", str(test_shards), "--annotations", str(data.ground_truth),
            "--out", str(out), "--quiet"]
    if data.dataset:
        argv += ["--dataset", data.dataset]
    return StageRun("eval", keys.eval, argv + option_args(cell.options["eval"]), out, "report", "eval.log")


FEATURE_MODEL = "model"  # the cell's model's folder in its features directory
HEAD_RESULTS = "test_results.json"  # what `train-head --features` writes after scoring the test videos


def features_run(data: DatasetPaths, cell: Cell, keys: CellKeys, root: Path, run: Path, test_shards: Path,
                 train_list: Path) -> StageRun:
    """Snippet features of every training and test video with the cell's trained model (one crop at
    the stored frame size: test videos are read from stage 1's test shards, not decoded again)."""
    options = dict(cell.options["features"])
    stored_size = cell.options["frames"].get("size", data.size)
    if stored_size is not None:
        options.setdefault("size", stored_size)
    out = root / "features" / keys.features
    argv = ["features", "--train-list", str(train_list), "--test-list", str(data.test_list),
            "--video-root", str(data.test_video_root), "--checkpoint", f"{FEATURE_MODEL}={run}", "--out", str(out),
            "--annotations", str(data.ground_truth), "--no-progress"]
    if str(options.get("crops", 1)) == "1" and options.get("size") == stored_size:
        argv += ["--test-shards", str(test_shards)]
    if data.dataset:
        argv += ["--dataset", data.dataset]
    return StageRun("features", keys.features, argv + option_args(options), out / FEATURE_MODEL, "features",
                    "features.log")


def heads_run(cell: Cell, keys: CellKeys, root: Path, features: Path) -> StageRun:
    """A head trained on the cell's features with the cell's seed, scored on the test videos."""
    out = root / "heads" / keys.heads
    argv = ["train-head", "--features", str(features), "--out", str(out), "--seeds", str(cell.seed)]
    return StageRun("heads", keys.heads, argv + option_args(cell.options["heads"]), out, "heads", "heads.log")


def embedded_train_list(path: Path) -> Path:
    """The embedded default's training videos as a split list (`Class/Name.mp4` per line, relative
    to its test videos' root, where they live too), for features and heads."""
    records = json.loads(embedded.TRAIN_JSON.read_text(encoding="utf-8"))
    lines = sorted({str(Path(record["video"]).relative_to(embedded.TEST_VIDEO_ROOT.relative_to(embedded.VIDEO_ROOT)))
                    for record in records})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def prepare_commands(data: DatasetPaths) -> list[list[str]]:
    """What the embedded default needs before stage 1: its generated videos, then its model
    (whose tokenizer is trained on their captions). Nothing for a real dataset: its inputs are
    the user's (the spec's comments say how to build them)."""
    if not data.embedded:
        return []
    commands = []
    if not data.annotations.is_file():
        commands.append(["synth"])
    if not (data.model / "config.json").is_file():
        commands.append(["init-model", "--preset", data.model_preset, "--out", str(data.model)])
    return commands
