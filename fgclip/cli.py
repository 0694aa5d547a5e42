"""The `fgclip-vad` command line: one click group; each stage's commands live with the stage.

    pipeline/commands.py        validate, export-captions, synth, frames        (stage 1)
    fgclip/models/commands.py   init-model, export-model
    fgclip/train/commands.py    train, doctor                                   (stage 2)
    fgclip/eval/commands.py     eval, score
    fgclip/heads/commands.py    train-head, bench-head                          (heads on snippet features)
    fgclip/experiments/commands.py  experiment
    here                        bench (it times every stage)

Commands stay thin: they parse options, call the library function that does the work, and
turn expected failures into a one-line message and a non-zero exit (no tracebacks for bad
input). Heavy imports (torch, transformers) happen inside the commands so `--help` is instant.
Adding a command: write it in its stage's commands.py and add it to COMMANDS below.
"""

from __future__ import annotations

import click

from fgclip.eval import commands as eval_commands
from fgclip.experiments import commands as experiment_commands
from fgclip.features import commands as feature_commands
from fgclip.heads import commands as head_commands
from fgclip.models import commands as model_commands
from fgclip.train import commands as train_commands
from pipeline import commands as stage1_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Fine-grained CLIP training for video anomaly detection on UCF-Crime.

    Stage 1: validate, synth, frames.  Stage 2: init-model, train, eval.  Also: doctor, bench,
    export-model.
    """


COMMANDS = (
    stage1_commands.validate_command, stage1_commands.export_captions_command, stage1_commands.synth_command,
    stage1_commands.frames_command,
    model_commands.init_model_command, model_commands.export_model_command,
    train_commands.train_command, train_commands.doctor_command,
    eval_commands.eval_command, eval_commands.score_command,
    feature_commands.features_command,
    head_commands.train_head_command, head_commands.bench_head_command,
    experiment_commands.experiment_command,
)
for command in COMMANDS:
    main.add_command(command)


@main.command("bench")
@click.option("--out", "out_dir", default="bench", show_default=True, type=click.Path(file_okay=False),
              help="Output dir: bench[-LABEL].json, the benchmark inputs (with --make-data) and the trainer's log.")
@click.option("--model", default=None, type=click.Path(file_okay=False),
              help="Model directory [default: OUT/model-PRESET, created with --model-preset].")
@click.option("--model-preset", "model_presets", multiple=True, type=click.Choice(model_commands.MODEL_PRESETS),
              help="init-model preset used when --model is not given; repeat it to time several models in one run on the "
                   "same data (bench-PRESET.json each), e.g. --model-preset fg-clip-base --model-preset fgclip2-base "
                   "[the --family's released base shape: fg-clip-base / fgclip2-base; its tiny one with --smoke].")
@click.option("--family", default="clip", show_default=True, type=click.Choice(["clip", "siglip2"]),
              help="Model family of the default --model-preset: clip (FG-CLIP) or siglip2 (FG-CLIP 2 on SigLIP 2).")
@click.option("--shards", default=None, type=click.Path(file_okay=False), help="Uniform training shards [default: OUT/data/train_tT].")
@click.option("--test-shards", default=None, type=click.Path(file_okay=False), help="Stride test shards [default: OUT/data/test_stride16].")
@click.option("--videos", default=None, type=click.Path(file_okay=False), help="Videos for the decode baseline [default: OUT/data/videos].")
@click.option("--make-data/--no-make-data", default=False, show_default=True,
              help="Write synthetic full-size shards and short videos under OUT/data first (no ffmpeg needed on GPU hosts with OpenCV).")
@click.option("--records", default=232, show_default=True, help="Training records of the generated shards.")
@click.option("--test-videos", default=24, show_default=True, help="Test videos of the generated test shards (0: skip evaluation timing).")
@click.option("--baseline-videos", default=8, show_default=True, help="Generated videos for the decode baseline (0: skip it).")
@click.option("--size", default=224, show_default=True, help="Stored frame size of generated shards.")
@click.option("--num-frames", default=256, show_default=True)
@click.option("--batch-size", type=train_commands.BatchSize(), default="auto", show_default=True,
              help="Videos per micro-batch, or auto (as training on a GPU: 2 x --grad-accum videos per step kept).")
@click.option("--grad-accum", default=8, show_default=True)
@click.option("--workers", default=8, show_default=True)
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Force checkpointing on or off [as training: chosen by --batch-size auto, else on].")
@click.option("--extra-settings/--no-extra-settings", default=None,
              help="Also time checkpointing forced on (auto micro-batch) and 2 x 256 frames with checkpointing [on; off with --smoke].")
@click.option("--compile/--no-compile", "compile_blocks", default=None,
              help="torch.compile the transformer blocks, as training does [on with a GPU]; warm-up absorbs compiling.")
@click.option("--steps", default=5, show_default=True, help="Timed optimizer steps per path.")
@click.option("--warmup-steps", default=2, show_default=True)
@click.option("--baseline-steps", default=2, show_default=True)
@click.option("--eval/--no-eval", "time_eval", default=True, show_default=True, help="Time evaluation inference too.")
@click.option("--eval-readers", default=2, show_default=True, help="Shard reader processes of the evaluation timing.")
@click.option("--label", default="", help="Name of this configuration (bench-LABEL.json).")
@click.option("--profile", "profile_step", is_flag=True, help="Also write profile[-LABEL].txt: the kernels of one step by device time.")
@click.option("--feature-videos", default=64, show_default=True,
              help="Time `fgclip-vad features` (1 and 10 crops, decoding included) on this many generated videos, several "
                   "per decoder so that the steady state is timed, not the start (0: skip).")
@click.option("--feature-seconds", default=60.0, show_default=True, help="Length of each generated video for the features rows.")
@click.option("--only-features", is_flag=True, help="Time only `fgclip-vad features` (no training or evaluation paths).")
@click.option("--smoke", is_flag=True,
              help="A seconds-long CPU configuration of all four measurements (tiny model and data; CI runs it).")
def bench_command(out_dir, model, model_presets, family, shards, test_shards, videos, make_data, records, test_videos,
                  baseline_videos, size, num_frames, batch_size, grad_accum, workers, gradient_checkpointing, compile_blocks,
                  steps, warmup_steps, baseline_steps, time_eval, eval_readers, label, profile_step, feature_videos,
                  feature_seconds, only_features, smoke, extra_settings) -> None:
    """Time the training step fed from device memory, from HDF5 shards and by decoding video in the
    loop, plus evaluation inference; write bench.json and print a table."""
    from pathlib import Path

    from fgclip import distributed
    from fgclip.bench import (SMOKE, BenchConfig, format_features_table, format_table, make_bench_data, run_bench,
                              run_features_bench)

    suffix = "" if family == "clip" else f"-{family}"
    if not model_presets:
        model_presets = (f"tiny{suffix}",) if smoke else ("fg-clip-base" if family == "clip" else "fgclip2-base",)
    if model is not None and len(model_presets) > 1:
        raise click.UsageError("--model times one model; leave it out to time several --model-preset")
    if smoke:
        make_data, records, num_frames, size = True, SMOKE["records"], SMOKE["num_frames"], SMOKE["size"]
        test_videos, baseline_videos, batch_size, grad_accum = SMOKE["test_videos"], SMOKE["baseline_videos"], 1, 2
        workers, steps, warmup_steps, baseline_steps, label = 1, 1, 1, 1, label or f"smoke{suffix}"
        feature_videos, feature_seconds = min(feature_videos, SMOKE["feature_videos"]), SMOKE["feature_seconds"]
        extra_settings = bool(extra_settings)
    label = label or suffix.lstrip("-")

    out = Path(out_dir)
    data = out / "data"
    dist = distributed.init_from_env()
    if make_data:
        if dist.is_main:
            make_bench_data(data, records=records, num_frames=num_frames, size=size, test_videos=test_videos,
                            baseline_videos=baseline_videos, **(SMOKE["data"] if smoke else {}))
        distributed.barrier()
    for model_preset in model_presets:
        # several presets: each its own label (bench-LABEL.json, model-PRESET/), one after the other
        preset_label = label if len(model_presets) == 1 else "-".join(part for part in (label, model_preset) if part)
        preset_model = model
        if preset_model is None:
            preset_model = str(out / f"model-{model_preset}")
            if dist.is_main and not (Path(preset_model) / "config.json").is_file():
                from fgclip.models.factory import init_model

                init_model(model_preset, Path(preset_model))
            distributed.barrier()
        config = BenchConfig(
            out_dir=str(out), model=preset_model,
            shards=shards or str(data / f"train_t{num_frames}"),
            test_shards=None if not time_eval else (
                test_shards or (str(data / "test_stride16") if (data / "test_stride16").is_dir() else None)),
            videos=videos or (str(data / "videos") if (data / "videos").is_dir() else None),
            num_frames=num_frames, batch_size=2 if batch_size == "auto" else batch_size, auto_batch=batch_size == "auto",
            grad_accum=grad_accum, workers=workers, extra_settings=extra_settings is not False,
            gradient_checkpointing=gradient_checkpointing, compile=compile_blocks, steps=steps, warmup_steps=warmup_steps,
            baseline_steps=baseline_steps, label=preset_label, profile=profile_step, eval_readers=eval_readers,
            feature_videos=feature_videos, feature_seconds=feature_seconds,
        )
        results = run_features_bench(config) if only_features else run_bench(config)
        if dist.is_main:
            click.echo(f"== {preset_label or model_preset} ({preset_model})")
            click.echo(format_features_table(results) if only_features else format_table(results))
            click.echo(f"results: {results['json_path']}")


if __name__ == "__main__":
    main()
