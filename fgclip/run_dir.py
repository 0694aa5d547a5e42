"""The layout of a training run's output directory: every name in it, and how to find things there.

    OUTPUT_DIR/
        run_config.json      the resolved settings of the run, including `model`, the model it
                             started from (evaluation's baseline); older runs wrote `config.json`
        trainer_log.txt      one line per log step (`fgclip.train.log`)
        metrics.jsonl        the same values at full precision, one JSON object per line
        tensorboard/         TensorBoard scalars
        checkpoint-STEP/     a model directory (`FGCLIPVideo.save_pretrained`: config.json,
                             model.safetensors, tokenizer, ...) plus trainer_state.pt (optimizer,
                             scheduler, RNG, data position) and run_config.json
        final/               the model at the end of the run (a model directory + run_config.json)
        best/                with a validation split: the model that scored best on it (a model
                             directory; its run_config.json's "selection" says when and how)
        .tmp-*               a checkpoint being written (`fgclip.train.checkpoint`); never read

A model directory's own `config.json` is the Hugging Face model config; the run's settings are
`run_config.json`, so the two are never confused. Only the trainer writes here (through
`fgclip.train.checkpoint`); evaluation and `--resume` read through this module, which imports
neither torch nor the trainer.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"
FINAL_DIR_NAME = "final"
BEST_DIR_NAME = "best"
STATE_FILE = "trainer_state.pt"
RUN_CONFIG_NAME = "run_config.json"
# Read when RUN_CONFIG_NAME is missing: an output directory's `config.json` and a checkpoint's
# `training_config.json`, as runs before the rename wrote them.
LEGACY_RUN_CONFIG_NAMES = ("config.json", "training_config.json")
MODEL_CONFIG_NAME = "config.json"  # the Hugging Face model config of a model directory
MODEL_WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TEXT_LOG_NAME = "trainer_log.txt"
METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
# Where the debug preset writes (`make train-debug`), and so what `make eval` evaluates by default.
DEBUG_RUN_DIR = "checkpoints/fgclip_ucf_debug"

_CHECKPOINT_NAME = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found, written or read; the message names it and what to do."""


def checkpoint_dir(output_dir: os.PathLike | str, step: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(path: os.PathLike | str) -> int | None:
    """STEP of a `checkpoint-STEP` directory name, else None."""
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_model_dir(path: os.PathLike | str) -> bool:
    """A Hugging Face model directory: its config.json and weights."""
    path = Path(path)
    return (path / MODEL_CONFIG_NAME).is_file() and any((path / name).is_file() for name in MODEL_WEIGHT_NAMES)


def is_complete(path: Path) -> bool:
    """A checkpoint that resuming can use: the trainer state and the model config are there (both
    are written inside the temporary directory, which is renamed only when everything is)."""
    return (path / STATE_FILE).is_file() and (path / MODEL_CONFIG_NAME).is_file()


def in_run(model_dir: os.PathLike | str) -> bool:
    """Whether a model directory is one of a run's (`checkpoint-STEP/` or `final/`)."""
    path = Path(model_dir)
    return checkpoint_step(path) is not None or path.name in (FINAL_DIR_NAME, BEST_DIR_NAME)


def list_checkpoints(output_dir: os.PathLike | str) -> list[Path]:
    """Complete `checkpoint-STEP` directories of `output_dir`, oldest step first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(step, p) for p in output_dir.iterdir()
             if p.is_dir() and (step := checkpoint_step(p)) is not None and is_complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: os.PathLike | str) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume(resume: str | None, output_dir: os.PathLike | str) -> Path | None:
    """`--resume` -> the checkpoint directory to load, or None to start fresh.

    "auto": the newest complete checkpoint of `output_dir` if there is one; a path: that
    checkpoint (or, for a run's output directory, its newest one), which must exist.
    """
    if resume is None or resume == "" or resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if path.is_dir() and not is_complete(path):
        newest = latest_checkpoint(path)
        if newest is not None:
            return newest
    if not path.is_dir() or not is_complete(path):
        raise CheckpointError(
            f"{path}: not a complete checkpoint (a `checkpoint-STEP` directory with {STATE_FILE}); "
            f"pass one, a run's output directory, or --resume auto"
        )
    return path


def latest_model_dir(output_dir: os.PathLike | str) -> Path | None:
    """A run's newest model: `final/` unless a `checkpoint-STEP/` was written after it (a run
    resumed and trained on past its first end); None when it has neither."""
    latest = latest_checkpoint(output_dir)
    final = Path(output_dir) / FINAL_DIR_NAME
    if is_model_dir(final) and (latest is None or final.stat().st_mtime >= latest.stat().st_mtime):
        return final
    return latest


# --- the run configuration ----------------------------------------------------------------------


def write_run_config(directory: os.PathLike | str, config: dict) -> Path:
    """Write `run_config.json` into an output directory or a model directory being saved."""
    path = Path(directory) / RUN_CONFIG_NAME
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_run_config(directory: os.PathLike | str) -> dict | None:
    """The run configuration saved in an output directory or one of its model directories
    (`run_config.json`, else the names older runs used); None when there is none."""
    for name in (RUN_CONFIG_NAME, *LEGACY_RUN_CONFIG_NAMES):
        config_file = Path(directory) / name
        if not config_file.is_file():
            continue
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        # The legacy `config.json` may be a model's own (it has "model_type" and no "model").
        if isinstance(config, dict) and config.get("model") and "model_type" not in config:
            return config
    return None


def starting_model(directory: os.PathLike | str) -> Path | None:
    """The model a run started from (its run config's "model"), for an output dir or a checkpoint;
    a relative path that does not exist from here is looked up beside the run."""
    config = read_run_config(directory)
    if config is None:
        return None
    model_path = Path(config["model"])
    if not model_path.is_absolute() and not model_path.exists():
        for base in (Path(directory), Path(directory).parent):
            if (base / model_path).exists():
                return base / model_path
    return model_path


def training_step(model_dir: os.PathLike | str) -> int | None:
    """The step a model was saved at: from `checkpoint-STEP`, or a final model's total steps."""
    step = checkpoint_step(model_dir)
    if step is not None:
        return step
    config = read_run_config(model_dir)
    steps = config.get("total_steps") if config else None
    return int(steps) if isinstance(steps, int) else None


def default_eval_run() -> Path:
    """The run `fgclip-vad eval` (and `make eval`) evaluates when given no --checkpoint: the debug
    preset's output directory (`fgclip.train.presets` writes its debug runs to DEBUG_RUN_DIR)."""
    return Path(DEBUG_RUN_DIR)


def run_name(path: os.PathLike | str) -> str:
    """The name of the run a path belongs to: its output directory's name (for a checkpoint or
    final model inside one), else the path's own name."""
    path = Path(path).resolve()
    return path.parent.name if in_run(path) else path.name


def read_selection(output_dir: os.PathLike | str) -> dict | None:
    """How a run's `best/` was chosen (its run config's "selection": step, metric, value, ...), or None."""
    config = read_run_config(Path(output_dir) / BEST_DIR_NAME) if is_model_dir(Path(output_dir) / BEST_DIR_NAME) else None
    selection = config.get("selection") if config else None
    return selection if isinstance(selection, dict) else None


def chosen_model_dir(output_dir: os.PathLike | str) -> Path | None:
    """The model of a run that evaluation takes: `best/` when validation kept one, else the newest."""
    best = Path(output_dir) / BEST_DIR_NAME
    return best if is_model_dir(best) else latest_model_dir(output_dir)
