"""Training's commands: `train` and `doctor` (registered in `fgclip.cli`); `--batch-size`'s type is
shared with `bench`."""

from __future__ import annotations

import click

# dataclasses and paths only: --help stays instant
from fgclip.train.presets import FRAME_SELECTIONS, PRESETS, VAL_METRICS, preset_summary

class BatchSize(click.ParamType):
    """A positive number of videos per micro-batch, or `auto`."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or str(value).lower() != "auto":
            return click.IntRange(min=1).convert(value, param, ctx)
        return "auto"


def _batch_size_overrides(overrides: dict) -> dict:
    """--batch-size auto -> auto_batch (the preset's batch_size x grad_accum is the contrastive batch
    kept); a number turns auto off."""
    if overrides.get("batch_size") == "auto":
        return {**overrides, "batch_size": None, "auto_batch": True}
    if overrides.get("batch_size") is not None:
        return {**overrides, "auto_batch": False}
    return overrides


# Command-line option -> TrainConfig field, for the settings every preset carries. Each is
# optional: given, it overrides the preset (the Makefile passes its variables through these).
# The help ends with the presets' values (`presets.preset_defaults`); the last column says what
# a preset's None means.
_TRAIN_OVERRIDES = [
    ("--shards", "shards", click.Path(file_okay=False), "Training shard directory (uniform sampling).", None),
    ("--model", "model", click.Path(file_okay=False), "Model directory to start from (HF CLIP dir or a checkpoint).", None),
    ("--output-dir", "output_dir", click.Path(file_okay=False), "Where logs and checkpoints go.", None),
    ("--max-records", "max_records", click.IntRange(min=0), "Train on the first N records only (0 = all).", "all"),
    ("--num-frames", "num_frames", click.IntRange(min=1), "Frames per video, a uniform subset of the stored ones.", None),
    ("--batch-size", "batch_size", BatchSize(), "Videos per micro-batch per GPU, or auto (the default on a GPU): the "
     "largest that fits, with checkpointing on or off, the preset's batch size x --grad-accum kept as the contrastive batch.", None),
    ("--grad-accum", "grad_accum", click.IntRange(min=1), "Micro-batches per optimizer step; the loss sees all of them.", None),
    ("--epochs", "epochs", click.IntRange(min=1), "Passes over the data.", None),
    ("--lr", "lr", click.FloatRange(min=0, min_open=True), "Learning rate of the vision tower, temporal module, temperatures.", None),
    ("--text-lr", "text_lr", click.FloatRange(min=0), "Learning rate of the text tower.", None),
    ("--scale-lr", "scale_lr", click.FloatRange(min=0), "Learning rate of the loss temperatures and sigmoid biases.", "--lr"),
    ("--weight-decay", "weight_decay", click.FloatRange(min=0), "AdamW weight decay (not on biases, norms, tables, temperatures).", None),
    ("--warmup-ratio", "warmup_ratio", click.FloatRange(min=0, max=1, max_open=True), "Share of steps of linear warmup before the cosine decay.", None),
    ("--max-grad-norm", "max_grad_norm", click.FloatRange(min=0, min_open=True), "Gradient clipping norm.", None),
    ("--global-weight", "global_weight", click.FloatRange(min=0), "Weight of the video-text loss.", None),
    ("--region-weight", "region_weight", click.FloatRange(min=0), "Weight of the region-text loss.", None),
    ("--hard-weight", "hard_weight", click.FloatRange(min=0), "Weight of the hard-negative loss.", None),
    ("--frame-selection", "frame_selection", click.Choice(list(FRAME_SELECTIONS)),
     "Frames of a record: a uniform subset of the stored ones, or --num-frames consecutive stored frames from a random "
     "start, a new clip every epoch.", None),
    ("--workers", "workers", click.IntRange(min=0), "Loader worker processes (0 = read in the main process).", None),
    ("--prefetch", "prefetch", click.IntRange(min=1), "Batches copied to the GPU ahead of the step.", None),
    ("--cpu-threads", "cpu_threads", click.IntRange(min=1), "CPU training: torch threads.", "cores minus loader workers"),
    ("--seed", "seed", int, "Seed of shuffling, augmentation and initialisation.", None),
    ("--save-every", "save_every", click.IntRange(min=1), "Optimizer steps between checkpoints.", None),
    ("--keep-last", "keep_last", click.IntRange(min=0), "Checkpoints kept (0 = all).", None),
    ("--log-every", "log_every", click.IntRange(min=1), "Optimizer steps between trainer_log.txt lines.", None),
    ("--max-nonfinite", "max_nonfinite", click.IntRange(min=1), "Non-finite steps in a row before the run stops.", None),
    ("--val-fraction", "val_fraction", click.FloatRange(min=0, max=1, max_open=True),
     "Hold out this share of the training videos (never test-split ones) to choose best/ by (0 = off).", None),
    ("--val-every", "val_every", click.IntRange(min=0), "Optimizer steps between validations (0 = at every checkpoint).", None),
    ("--val-annotations", "val_annotations", click.Path(dir_okay=True),
     "Temporal labels of training videos (any ground-truth format): validation scores frame AUC, not retrieval.",
     "none"),
    ("--val-metric", "val_metric", click.Choice(list(VAL_METRICS)),
     "What validation scores: video -> caption retrieval, frame AUC against the videos' own normal/anomalous "
     "labels, or frame AUC against --val-annotations (auto: frame_auc with them, else retrieval).", None),
]
_TRAIN_SWITCHES = [
    ("--bf16/--no-bf16", "bf16", "bf16 autocast.", "on with a GPU, off on CPU"),
    ("--gradient-checkpointing/--no-gradient-checkpointing", "gradient_checkpointing", "Recompute activations in backward.",
     "chosen by --batch-size auto on a GPU, else on"),
    ("--compile/--no-compile", "compile", "torch.compile the transformer blocks; compiling takes a minute at the start.",
     "on with a GPU, off on CPU"),
    ("--augment/--no-augment", "augment", "Random resized crop + flip per video, boxes included.", None),
    ("--skip-damaged/--stop-on-damaged", "skip_damaged", "On a damaged shard record: warn and train on (on), or stop (off).", None),
]


def _train_options(command):
    from fgclip.train.presets import preset_defaults

    for flag, name, kind, help_text, none_means in reversed(_TRAIN_OVERRIDES):
        help_text = f"{help_text} {preset_defaults(name, none_means or 'auto')}"
        command = click.option(flag, name, type=kind, default=None, help=help_text)(command)
    for flags, name, help_text, none_means in reversed(_TRAIN_SWITCHES):
        help_text = f"{help_text} {preset_defaults(name, none_means or 'auto')}"
        command = click.option(flags, name, default=None, help=help_text)(command)
    return command


@click.command("train")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="debug", show_default=True,
              help="; ".join(preset_summary(name) for name in PRESETS) + " (demo: the embedded default on CPU).")
@click.option("--resume", default=None, metavar="auto|PATH",
              help="Continue a run exactly: auto = newest checkpoint of the output dir (fresh start if none), or a checkpoint path.")
@click.option("--stop-after-step", type=click.IntRange(min=1), default=None,
              help="End early at this step with a checkpoint (the schedule still spans all epochs).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar with ETA.")
@_train_options
def train_command(preset: str, resume: str | None, stop_after_step: int | None, progress: bool, **overrides) -> None:
    """Stage 2: train FG-CLIP on the shards (single GPU, CPU, or torchrun for several GPUs).

    \b
    fgclip-vad train --preset debug
    fgclip-vad train --preset full --shards data/shards/ucf/train_t256 --model models/clip-vit-base-patch16
    fgclip-vad train --preset full --num-frames 128 --batch-size 1 --grad-accum 16    (less GPU memory)
    fgclip-vad train --preset full --resume auto                                      (continue after a stop)
    torchrun --nproc_per_node=4 -m fgclip.cli train --preset full                      (4 GPUs)

    Writes trainer_log.txt, metrics.jsonl, tensorboard/, run_config.json, checkpoint-STEP/ and final/
    into the output directory. Ctrl-C or `kill` finishes the current step and writes a checkpoint.
    """

    from pathlib import Path

    import torch

    from fgclip import distributed
    from fgclip.run_dir import TEXT_LOG_NAME, CheckpointError
    from fgclip.train.loader import LoaderError
    from fgclip.models.clip_video import ModelDirError
    from fgclip.train.presets import resolve_config
    from fgclip.train.loop import Trainer, TrainingError
    from pipeline.shards import ShardFormatError

    if overrides.get("max_records") == 0:
        overrides["max_records"] = None
        explicit_all = True
    else:
        explicit_all = False
    try:
        config = resolve_config(preset, _batch_size_overrides(overrides))
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if explicit_all:
        config.max_records = None
    dist_info = None
    try:
        dist_info = distributed.init_from_env()
        _configure_training_logs(dist_info.rank)
        trainer = Trainer(config, resume=resume, stop_after_step=stop_after_step, dist_info=dist_info,
                          show_progress=progress)
        summary = trainer.run(handle_signals=True)
    except (TrainingError, LoaderError, CheckpointError, ModelDirError, ShardFormatError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:  # e.g. a log file on a full disk; the message names the file
        raise click.ClickException(f"{err}. If the disk is full, free space; then continue from the last checkpoint "
                                   f"with --resume auto") from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted without a checkpoint; `--resume auto` continues from the last one") from None
    finally:
        if dist_info is not None and dist_info.backend is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if dist_info.is_main:
        if summary["reason"] == "complete":
            click.echo(f"training complete: {summary['step']} steps ({summary['skipped_steps']} skipped); "
                       f"final model in {summary['final']}, log in {Path(config.output_dir) / TEXT_LOG_NAME}")
        elif summary["reason"] == "already complete":
            click.echo(f"{config.output_dir}: this run is already complete ({summary['step']} steps); nothing to do")
        else:
            click.echo(f"{summary['reason']}: {summary['step']}/{summary['total_steps']} steps, checkpoint "
                       f"{summary['last_checkpoint']}; continue with the same command and --resume auto")
    if summary.get("signal"):
        raise SystemExit(128 + summary["signal"])  # the shell's convention for a run ended by a signal


def _configure_training_logs(rank: int) -> None:
    """Warnings and notes to stderr (rank 0 only unless they are errors); no HF progress bars."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.ERROR,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")


@click.command("doctor")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="debug", show_default=True,
              help="Which training preset's shards, model and output dir to check.")
@click.option("--shards", type=click.Path(), default=None, help="Training shard directory [preset's].")
@click.option("--model", type=click.Path(), default=None, help="Model directory [preset's].")
@click.option("--output-dir", type=click.Path(), default=None, help="Output directory (free disk space) [preset's].")
@click.option("--annotations", type=click.Path(), default=None,
              help="Annotation JSON: check it and that its videos open (needs --video-root unless relative to it).")
@click.option("--video-root", type=click.Path(file_okay=False), default=None,
              help="Folder the annotation's \"video\" paths are relative to [the annotation file's folder].")
@click.option("--min-free-gb", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Free disk space required in the output directory.")
@click.option("--num-frames", type=click.IntRange(min=1), default=None,
              help="Frames per video the training will ask for [preset's]; the shards must store at least as many.")
def doctor_command(preset, shards, model, output_dir, annotations, video_root, min_free_gb, num_frames) -> None:
    """Pre-flight checklist before training: data, videos, GPU, disk space, model.

    Prints one verdict per check; exits non-zero when a required check fails (a missing GPU
    is only a warning: training runs on the CPU, slowly).
    """
    from pathlib import Path

    from fgclip.train.doctor import run_checks
    from fgclip.train.presets import preset_config

    config = preset_config(preset)
    checks = run_checks(
        shards=Path(shards or config.shards),
        model=Path(model or config.model),
        output_dir=Path(output_dir or config.output_dir),
        annotations=Path(annotations) if annotations else None,
        video_root=Path(video_root) if video_root else None,
        min_free_gb=min_free_gb,
        num_frames=num_frames or config.num_frames,
    )
    for check in checks:
        click.echo(check.line())
    failed = [c for c in checks if c.status == "FAIL"]
    warned = [c for c in checks if c.status == "WARN"]
    if failed:
        raise click.ClickException(f"{len(failed)} required check(s) failed: {', '.join(c.name for c in failed)}")
    click.echo(f"ready to train ({len(warned)} warning(s))" if warned else "ready to train")


# --- evaluation ---------------------------------------------------------------------------------
