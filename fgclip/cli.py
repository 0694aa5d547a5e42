"""The `fgclip-vad` command line: one click group, one subcommand per user-facing step.

Commands stay thin: they parse options, call the library function that does the work, and
turn expected failures into a one-line message and a non-zero exit (no tracebacks for bad
input). Heavy imports (torch, transformers) happen inside the commands so `--help` is instant.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Fine-grained CLIP training for video anomaly detection on UCF-Crime.

    Stage 1: validate, synth, frames.  Stage 2: init-model, train, eval.  Also: doctor, bench,
    export-model.
    """


# --- stage 1: annotations -------------------------------------------------------------------


def _load_translations_option(path: str | None) -> dict[str, str] | None:
    from pipeline.captions import TranslationFileError, load_translations

    if path is None:
        return None
    try:
        return load_translations(path)
    except TranslationFileError as exc:
        raise click.ClickException(str(exc)) from None


def _test_split_option(values: tuple[str, ...]):
    """--test-split values -> what validate_annotations takes: None, one path, or {dataset: path}."""
    from pipeline.datasets import UnknownDatasetError, get_dataset

    if not values:
        return None
    named: dict = {}
    plain = []
    for value in values:
        name, sep, path = value.partition("=")
        if sep and "/" not in name:
            try:
                named[get_dataset(name).name] = path
            except UnknownDatasetError as err:
                raise click.BadParameter(str(err), param_hint="--test-split") from None
        else:
            plain.append(value)
    if len(plain) > 1:
        raise click.BadParameter("give one plain PATH (UCF-Crime's list); name the others DATASET=PATH",
                                 param_hint="--test-split")
    if plain and not named:
        return plain[0]
    if plain:
        named.setdefault("ucf-crime", plain[0])
    return named


@main.command("validate")
@click.argument("annotations", type=click.Path(dir_okay=False))
@click.option("--test-split", "test_split", multiple=True, metavar="[DATASET=]PATH",
              help="Official test split list: UCF-Crime's Anomaly_Test.txt (default: $FGCLIP_UCF_TEST_SPLIT, next to "
                   "the JSON, ../ucf/, ../../ucf/), or DATASET=PATH for another dataset of the file (msad=MSAD_Test.txt); "
                   "repeatable.")
@click.option("--allow-test-overlap", is_flag=True,
              help="Keep training records of test-split videos (a warning instead of an error).")
@click.option("--drop-test-overlap", is_flag=True, help="Drop training records of test-split videos (warnings).")
@click.option("--drop-invalid", is_flag=True,
              help="Accept dropping records that cannot be used as written (warnings instead of errors).")
@click.option("--translations", type=click.Path(dir_okay=False), default=None,
              help="JSON object {original caption: English caption}, e.g. a filled `export-captions` file.")
@click.option("--fps", "fps_hint", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frame rate to assume for checking keyframes against timestamps (UCF-Crime: 30).")
@click.option("--json-report", type=click.Path(dir_okay=False), default=None, help="Write every problem to this JSON file.")
@click.option("--max-listed", type=click.IntRange(min=0), default=10, show_default=True,
              help="Problems listed per kind (overlapping test videos are always all listed).")
@click.option("--model-family", type=click.Choice(["clip", "siglip2"]), default="clip", show_default=True,
              help="The family you will train: with siglip2 (bilingual FG-CLIP 2) Chinese captions are not flagged.")
def validate_command(annotations, test_split, allow_test_overlap, drop_test_overlap, drop_invalid, translations,
                     fps_hint, json_report, max_listed, model_family) -> None:
    """Check an annotation JSON; exit 1 if anything makes the dataset wrong.

    Errors: unreadable file, records that cannot be used as written, videos of the official
    test split (or no split to check against). Warnings: problems fixed on the fly (clipped
    boxes, duplicates) and untranslated non-English captions.
    """
    import json
    import sys
    from pathlib import Path

    from pipeline.annotations import FATAL_FILE_KINDS, format_report, validate_annotations

    if allow_test_overlap and drop_test_overlap:
        raise click.UsageError("--allow-test-overlap and --drop-test-overlap exclude each other; pick one")
    report = validate_annotations(
        Path(annotations), test_split=_test_split_option(test_split),
        allow_test_overlap=allow_test_overlap, drop_test_overlap=drop_test_overlap,
        translations=_load_translations_option(translations), drop_invalid=drop_invalid, fps_hint=fps_hint,
        model_family=model_family)
    fatal = [p for p in report.problems if p.kind in FATAL_FILE_KINDS]
    if fatal:
        raise click.ClickException(fatal[0].message)
    click.echo(format_report(report, max_listed=max_listed))
    if json_report:
        try:
            Path(json_report).write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write the JSON report {json_report}: {exc}") from None
        click.echo(f"full report: {json_report}")
    sys.exit(1 if report.errors() else 0)


@main.command("export-captions")
@click.argument("annotations", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="JSON file to write: {non-English caption: \"\"} for you to fill with English.")
@click.option("--translations", type=click.Path(dir_okay=False), default=None,
              help="An earlier, partly filled translation file: its English texts are kept.")
def export_captions_command(annotations, out_path, translations) -> None:
    """Write every non-English caption of ANNOTATIONS to a JSON file to translate.

    Fill in the English values, then pass the file to `validate` / `frames` with --translations.
    """
    from pipeline.captions import export_captions

    try:
        count = export_captions(annotations, out_path, _load_translations_option(translations))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{count} non-English captions written to {out_path}; fill in the English text and pass "
               f"--translations {out_path}")

# --- stage 1: embedded default dataset -------------------------------------------------------


@main.command("synth")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Output directory [default: data/synth, the embedded default's place].")
@click.option("--seed", type=int, default=None, help="Seed of everything drawn [default: the embedded default's, 0].")
@click.option("--size", type=click.Choice(["default", "tiny"]), default="default", show_default=True,
              help="default: 56 training records and 16 test videos; tiny: a few seconds of video, for tests.")
@click.option("--force", is_flag=True, help="Regenerate even when the output is complete.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Encoding processes [default: up to 2].")
def synth_command(out_dir: str | None, seed: int | None, size: str, force: bool, workers: int | None) -> None:
    """Generate the embedded default dataset: synthetic surveillance videos in UCF-Crime's formats.

    Writes H.264 videos (320x240, 30 fps), train.json (captions, region boxes), Anomaly_Test.txt,
    Temporal_Anomaly_Annotation.txt and actors.json. Skips a complete output of the same seed and size.
    """
    import time
    from pathlib import Path

    from pipeline import embedded, synth

    out = Path(out_dir) if out_dir else embedded.SYNTH_DIR
    seed = embedded.SYNTH_SEED if seed is None else seed
    if not force and synth.is_complete(out, seed, size):
        click.echo(f"{out}: already complete (seed {seed}, size {size}); nothing to do (--force regenerates)")
        return
    started = time.perf_counter()
    try:
        synth.generate_dataset(out, seed, size=size, force=True, workers=workers)
    except (OSError, RuntimeError) as err:
        raise click.ClickException(f"could not generate the dataset in {out}: {err}") from None
    summary = synth.summary(out)
    click.echo(f"wrote {summary['train_records']} training records and {summary['test_videos']} test videos "
               f"({summary['videos']} videos, {summary['frames']} frames) to {out} in {time.perf_counter() - started:.1f} s")

# --- stage 1: frames --------------------------------------------------------------------------


def _print_frames_summary(summary: dict) -> None:
    for spec, out in summary["outputs"].items():
        per = summary["per_output"][spec]
        kinds = ", ".join(f"{n} {k}" for k, n in per["skipped_by_kind"].items())
        line = f"{out}: {per['records']} records in {per['shards']} shards ({spec}), {per['skipped']} skipped"
        warned = ", ".join(f"{n} {k}" for k, n in per.get("warnings_by_kind", {}).items())
        click.echo(line + (f" ({kinds})" if kinds else "") +
                   (f", {per['dropped_regions']} regions dropped" if per["dropped_regions"] else "") +
                   (f", warnings: {warned} (listed in its manifest.json)" if warned else ""))
    click.echo(f"decoded {summary['videos_decoded']} videos ({summary['decoded_frames']} frames, "
               f"{summary['kept_frames']} kept), {summary['shards_written']} shards written, "
               f"{summary['shards_kept']} kept from an earlier run, {summary['elapsed_s']:.1f} s")
    for skip in summary["skipped"][:5]:
        click.echo(f"  skipped record {skip['record_index']} ({skip['video']}): {skip['reason']}", err=True)
    if len(summary["skipped"]) > 5:
        click.echo(f"  ... {len(summary['skipped']) - 5} more skipped records, all listed in each manifest.json", err=True)


@main.command("frames")
@click.argument("annotations", type=click.Path(dir_okay=False), required=False)
@click.option("--video-root", type=click.Path(file_okay=False), default=None,
              help="Folder the \"video\" paths are relative to [default: the annotation file's / test list's folder].")
@click.option("--out", "out_root", type=click.Path(file_okay=False), default=None,
              help="Shard root: writes OUT/train_t{T}/ per T (or OUT/test_stride{S}/) "
                   "[default: data/shards/<annotation file name>].")
@click.option("--num-frames", "-t", type=click.IntRange(min=1), multiple=True,
              help="Frames per record (uniform over its window); repeat for several T, one decode serves all [default: 256].")
@click.option("--size", type=click.IntRange(min=8), default=224, show_default=True, help="Stored frame side in pixels.")
@click.option("--resize", "resize_mode", type=click.Choice(["squash", "center-crop"]), default="squash", show_default=True,
              help="squash: whole frame to size x size (FG-CLIP); center-crop: square centre crop, boxes clipped to it.")
@click.option("--records-per-shard", type=click.IntRange(min=1), default=None,
              help="Records per shard file [default: 8, test mode 4].")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes [default: CPU count].")
@click.option("--strict", is_flag=True, help="Fail at the first record that cannot be used, instead of skipping it.")
@click.option("--test-split", "test_split", multiple=True, metavar="[DATASET=]PATH",
              help="Official test split list(s) to check overlap against, as for `validate` (default: found like `validate` does).")
@click.option("--allow-test-overlap", is_flag=True, help="Keep training records of test-split videos (contaminates test AUC).")
@click.option("--drop-test-overlap", is_flag=True, help="Drop training records of test-split videos.")
@click.option("--translations", type=click.Path(dir_okay=False), default=None,
              help="JSON object {original caption: English caption} applied before building.")
@click.option("--test-list", type=click.Path(dir_okay=False), default=None,
              help="Test mode: an official split list (Class/Name_x264.mp4 per line), stride sampling, no captions.")
@click.option("--stride", type=click.IntRange(min=1), default=16, show_default=True,
              help="Test mode: one sample per this many source frames (the snippet length).")
@click.option("--path-map", "path_maps", multiple=True, metavar="OLD=NEW",
              help="Rewrite video paths starting with OLD to start with NEW (relative results are under --video-root); "
                   "repeatable. Label Studio's /data/local-files/?d= and /data/upload/N/ resolve under --video-root "
                   "without one.")
@click.option("--dataset", "dataset_name", default=None,
              help="Test mode: the dataset of the list's videos, for their labels (ucf-crime, xd-violence, msad, "
                   "shanghaitech) [read from the first path].")
@click.option("--benchmark", is_flag=True,
              help="Time stage 1 on the embedded default against a bare ffmpeg decode of the same videos; builds nothing.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Benchmark rounds.")
@click.option("--model-family", type=click.Choice(["clip", "siglip2"]), default="clip", show_default=True,
              help="The family you will train: with siglip2 (bilingual FG-CLIP 2) Chinese captions are not flagged.")
@click.pass_context
def frames_command(ctx, annotations, video_root, out_root, num_frames, size, resize_mode, records_per_shard, workers,
                   strict, test_split, allow_test_overlap, drop_test_overlap, translations, test_list, stride,
                   path_maps, dataset_name, benchmark, repeats, model_family) -> None:
    """Stage 1: decode each video once into HDF5 shards with box tracks.

    \b
    fgclip-vad frames                                   the embedded default (train T=64,256 + test)
    fgclip-vad frames ANNOTATIONS.json --video-root DIR --out DIR [-t 64 -t 256]
    fgclip-vad frames --test-list Anomaly_Test.txt --video-root DIR --out DIR [--stride 16]

    Validates the annotations first (test-split overlap is an error unless allowed). Records
    that cannot be used (missing or broken video, window past the end) are skipped and listed
    in each output's manifest.json; the run fails only if nothing usable remains, or with
    --strict. Interrupted? Rerun the same command: finished shards are kept (with their skipped
    records: after fixing a video, delete its shard or the output directory first).
    """
    from pathlib import Path

    from pipeline import embedded
    from pipeline.decode import VideoError
    from pipeline.frames import (
        TEST_RECORDS_PER_SHARD,
        FramesError,
        build_embedded_default,
        build_from_annotations,
        build_test_shards,
    )

    from pipeline.datasets import UnknownDatasetError, get_dataset
    from pipeline.video_paths import PathMap, PathMapError

    given = {name for name, value in ctx.params.items()
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT and value not in (None, ())}
    try:
        path_map = PathMap.parse(path_maps)
        dataset = get_dataset(dataset_name) if dataset_name else None
    except (PathMapError, UnknownDatasetError) as err:
        raise click.UsageError(str(err)) from None
    if allow_test_overlap and drop_test_overlap:
        raise click.UsageError("--allow-test-overlap and --drop-test-overlap exclude each other; pick one")
    try:
        if benchmark:
            from pipeline.frames_bench import benchmark_stage1, format_benchmark

            click.echo(format_benchmark(benchmark_stage1(repeats=repeats, workers=workers)))
            return
        if test_list is not None:
            if annotations is not None:
                raise click.UsageError("give either ANNOTATIONS (training shards) or --test-list (test shards), not both")
            ignored = given & {"num_frames", "test_split", "allow_test_overlap", "drop_test_overlap", "translations"}
            if ignored:
                raise click.UsageError(f"{', '.join('--' + n.replace('_', '-') for n in sorted(ignored))}: "
                                       f"for training shards (ANNOTATIONS), not --test-list")
            test_list_path = Path(test_list)
            root = Path(out_root) if out_root else embedded.SHARD_ROOT / test_list_path.stem
            summary = build_test_shards(
                test_list_path, video_root=Path(video_root) if video_root else test_list_path.parent,
                out_dir=root / embedded.test_shard_dir(stride).name, stride=stride, size=size, resize_mode=resize_mode,
                records_per_shard=records_per_shard or TEST_RECORDS_PER_SHARD, workers=workers, strict=strict,
                dataset=dataset, path_map=path_map)
            _print_frames_summary(summary)
            return
        if annotations is None:
            ignored = given - {"workers", "strict"}
            if ignored:
                raise click.UsageError(
                    f"{', '.join('--' + n.replace('_', '-') for n in sorted(ignored))}: only with ANNOTATIONS or --test-list; "
                    f"without arguments `frames` builds the embedded default with its fixed settings")
            result = build_embedded_default(workers=workers, strict=strict)
            _print_frames_summary(result["train"])
            _print_frames_summary(result["test"])
            return

        if dataset is not None:
            raise click.UsageError("--dataset: for --test-list; a training record's dataset is its `dataset` field "
                                   "or read from its path")
        summary = build_from_annotations(
            Path(annotations), video_root=video_root, out_root=out_root, num_frames=num_frames, size=size,
            resize_mode=resize_mode, records_per_shard=records_per_shard, workers=workers, strict=strict,
            test_split=_test_split_option(test_split), allow_test_overlap=allow_test_overlap,
            drop_test_overlap=drop_test_overlap, translations=_load_translations_option(translations),
            path_map=path_map, model_family=model_family, report_problems=lambda text: click.echo(text, err=True))
        _print_frames_summary(summary)
    except (FramesError, VideoError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:  # e.g. an output directory that cannot be created; the message names it
        raise click.ClickException(f"{err}; nothing was lost: fix that, then rerun the same command") from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; rerun the same command to resume (finished shards are kept)") from None

# --- stage 2: model ---------------------------------------------------------------------------


# The names of fgclip.model_factory.PRESETS (importing it here would load torch for --help).
MODEL_PRESETS = ["tiny", "vit-b16", "vit-l14-336", "tiny-siglip2", "vit-b16-siglip2"]


@main.command("init-model")
@click.option("--preset", type=click.Choice(MODEL_PRESETS), default="tiny", show_default=True,
              help="tiny: the embedded default (112 px, trains on CPU); vit-b16 / vit-l14-336: random weights of "
                   "fg-clip-base's / fg-clip-large's shape (ViT-B/16 at 224 px, ViT-L/14 at 336 px), for benchmarks; "
                   "tiny-siglip2 / vit-b16-siglip2: the same for the FG-CLIP 2 family (SigLIP 2, FG-CLIP 2's layout, "
                   "Gemma-style tokenizer).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Model directory to write [default: the embedded default model dir for tiny, beside it for vit-b16].")
@click.option("--captions", "captions_json", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Annotation JSON whose captions train the tokenizer [default: the embedded dataset's, "
                   "or a built-in word list when it is not generated yet].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--force", is_flag=True, help="Overwrite a directory that already holds a model.")
def init_model_command(preset: str, out_dir: str | None, captions_json: str | None, seed: int, force: bool) -> None:
    """Write a new model directory (random weights, a tokenizer trained on captions): CLIP, or FG-CLIP 2
    for the -siglip2 presets."""
    from pathlib import Path

    from fgclip.model_factory import captions_from_annotations, init_model
    from pipeline import embedded

    out = Path(out_dir) if out_dir else embedded.model_dir(preset)
    if (out / "config.json").exists() and not force:
        raise click.ClickException(f"{out}: already holds a model (config.json); pass --force to overwrite it")
    try:
        captions = captions_from_annotations(Path(captions_json)) if captions_json else None
        written = init_model(preset, out, captions=captions, seed=seed)
    except (OSError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {preset} model to {written}")

@main.command("export-model")
@click.argument("source", type=click.Path(file_okay=False))
@click.option("--format", "layout", type=click.Choice(["fgclip", "clip", "fgclip2"]), required=True,
              help="fgclip: FG-CLIP v1's layout (FGCLIPModel, fg-clip-base's key names); clip: a plain HF CLIP; "
                   "fgclip2: FG-CLIP 2's layout (models of the SigLIP 2 family).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Directory to write.")
@click.option("--force", is_flag=True, help="Overwrite a directory that already holds a model.")
def export_model_command(source: str, layout: str, out_dir: str, force: bool) -> None:
    """Write the model directory SOURCE (a checkpoint, FG-CLIP v1 or CLIP; a run's output
    directory: its newest model) in another layout.

    \b
    fgclip-vad export-model checkpoints/fgclip_ucf_full/final --format fgclip --out exports/fgclip-vad-ucf
    fgclip-vad export-model checkpoints/fgclip_ucf_full/final --format clip --out exports/clip-ucf
    fgclip-vad export-model checkpoints/fgclip_demo_siglip2 --format fgclip2 --out exports/fgclip2-demo

    fgclip: loadable by FG-CLIP's own scripts (FGCLIPModel.from_pretrained); the temporal module
    travels beside it in fgclip_video.*, so fgclip-vad loads the export back exactly. clip: a
    plain CLIP; the summary names the parts it has no place for.
    """
    from pathlib import Path

    from fgclip.export import export_model
    from fgclip.layouts import ModelDirError

    try:
        summary = export_model(Path(source), Path(out_dir), layout, force=force)
    except (ModelDirError, OSError) as err:
        raise click.ClickException(str(err)) from None
    for line in summary.lines():
        click.echo(line)

# --- stage 2: training --------------------------------------------------------------------------

class _BatchSize(click.ParamType):
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


from fgclip.presets import PRESETS, VAL_METRICS, preset_summary  # noqa: E402 - dataclasses and paths only, light

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
    ("--batch-size", "batch_size", _BatchSize(), "Videos per micro-batch per GPU, or auto (the default on a GPU): the "
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
    from fgclip.presets import preset_defaults

    for flag, name, kind, help_text, none_means in reversed(_TRAIN_OVERRIDES):
        help_text = f"{help_text} {preset_defaults(name, none_means or 'auto')}"
        command = click.option(flag, name, type=kind, default=None, help=help_text)(command)
    for flags, name, help_text, none_means in reversed(_TRAIN_SWITCHES):
        help_text = f"{help_text} {preset_defaults(name, none_means or 'auto')}"
        command = click.option(flags, name, default=None, help=help_text)(command)
    return command


@main.command("train")
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
    from fgclip.loader import LoaderError
    from fgclip.model import ModelDirError
    from fgclip.presets import resolve_config
    from fgclip.train import Trainer, TrainingError
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


@main.command("doctor")
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

    from fgclip.doctor import run_checks
    from fgclip.presets import preset_config

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

from fgclip.ground_truth import CONVENTIONS, DEFAULT_CONVENTION  # noqa: E402 - numpy only, light

from fgclip.run_dir import default_eval_run  # noqa: E402 - paths only, light


@main.command("eval")
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(),
              help="Model directory, or a training output dir (its final model, or latest checkpoint-STEP). "
                   "Repeat to compare several in one table. Default: " + str(default_eval_run()) + ".")
@click.option("--test-shards", type=click.Path(), default=None,
              help="Stride-mode test shard directory from stage 1. Default: the embedded default's.")
@click.option("--annotations", type=click.Path(), default=None,
              help="Temporal_Anomaly_Annotation.txt (official format). Default: the embedded default's.")
@click.option("--baseline", type=click.Path(), default=None,
              help="Model to compare against. Default: the model the (first) training run started from, "
                   "as its run_config.json records.")
@click.option("--no-baseline", is_flag=True, help="Score the checkpoints only.")
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="Output directory (report.json, report.md, plots/, TensorBoard). Default: reports/<run name>.")
@click.option("--dataset", "dataset_name", default=None,
              help="Dataset of the test set, for its ground-truth format and headline (ucf-crime: frame AUC; xd-violence: "
                   "annotations.txt, frame AP; msad: anomaly_annotation.csv; shanghaitech: a test_frame_mask/ folder) "
                   "[read from the annotation file's format].")
@click.option("--convention", type=click.Choice(CONVENTIONS), default=DEFAULT_CONVENTION,
              show_default=True, help="How an annotated interval 'start end' maps to frames (see fgclip/ground_truth.py).")
@click.option("--smooth", "smoothing_window", type=click.IntRange(min=1), default=1, show_default=True,
              help="Moving average over this many snippets (odd) before expansion; 1 = no smoothing.")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Score threshold of the false-alarm rate.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-frames", type=click.IntRange(min=1), default=512, show_default=True,
              help="Frames per forward pass.")
@click.option("--readers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Reader processes (0: read in the main process).")
@click.option("--prompt-template", "templates", multiple=True,
              help="Prompt template with one '{}' for the class phrase; repeat for several (averaged). "
                   "Default: the built-in set (see report.json).")
@click.option("--normal-phrase", default=None, help="Class phrase of the normal prompt. Default: 'normal activity'.")
@click.option("--video-plots/--no-video-plots", default=True, show_default=True,
              help="Write a score-curve PNG per test video.")
@click.option("--heat-maps/--no-heat-maps", default=True, show_default=True,
              help="Patch maps of anomalous test videos (heat strips) and, with boxes, the spatial metric.")
@click.option("--boxes", type=click.Path(dir_okay=False), default=None,
              help="Event boxes per test frame (pipeline/event_boxes.py format) for the spatial metric. "
                   "Default: the embedded generator's, when evaluating the embedded test split.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_command(checkpoints, test_shards, annotations, baseline, no_baseline, out_dir, dataset_name, convention, smoothing_window,
                 threshold, device, batch_frames, readers, templates, normal_phrase, video_plots, heat_maps, boxes,
                 quiet) -> None:
    """Frame-level AUC on the UCF-Crime test set: checkpoints vs their starting model, with plots.

    With no arguments (`make eval`): the latest debug checkpoint on the embedded default's test
    split, compared with the model its training started from.
    """
    from pathlib import Path

    from fgclip import evaluate as ev
    from fgclip.ground_truth import AnnotationFormatError
    from fgclip.model import ModelDirError
    from pipeline.event_boxes import EventBoxesError
    from pipeline.shards import ShardFormatError

    options = {}
    if templates:
        options["templates"] = tuple(templates)
    if normal_phrase:
        options["normal_phrase"] = normal_phrase
    try:
        inputs = ev.eval_inputs(checkpoints, test_shards=test_shards, annotations=annotations, baseline=baseline,
                                no_baseline=no_baseline, out_dir=out_dir, boxes=boxes)
        report = ev.evaluate(inputs.checkpoints, inputs.test_shards, inputs.annotations, inputs.out_dir,
                             baseline=inputs.baseline, convention=convention, smoothing_window=smoothing_window,
                             threshold=threshold,
                             device=device, batch_frames=batch_frames, num_readers=readers,
                             video_plots=video_plots, progress=not quiet, dataset=dataset_name, heat_maps=heat_maps,
                             boxes=inputs.boxes if heat_maps else None, **options)
    except (ev.EvaluationError, ShardFormatError, AnnotationFormatError, ModelDirError, FileNotFoundError,
            EventBoxesError) as err:
        raise click.ClickException(str(err)) from None
    except ValueError as err:  # bad option values (templates, smoothing window) name themselves
        raise click.ClickException(str(err)) from None
    click.echo(report["headline"])
    for model in report["models"]:
        click.echo(f"  {model['name']}: {model['path']}")
    for model in report["models"]:
        spatial = model.get("spatial")
        if spatial and spatial["frames"]:
            click.echo(f"  {model['name']}: pointing game {spatial['pointing_game']:.3f} (chance {spatial['chance']:.3f}, "
                       f"{spatial['frames']} frames)")
    click.echo(f"selection: {report['selection']['note']}")
    click.echo(f"report: {inputs.out_dir / 'report.md'}, {inputs.out_dir / 'report.html'}  (plots in "
               f"{inputs.out_dir / 'plots'}, TensorBoard: tensorboard --logdir {inputs.out_dir})")

@main.command("score")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--checkpoint", required=True, type=click.Path(),
              help="Model directory, or a training output dir (its final model, or latest checkpoint-STEP).")
@click.option("--baseline", type=click.Path(), default=None, help="A second model scored beside it (e.g. the start model).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="scores", show_default=True,
              help="Output directory: OUT/<video>/scores.csv, curve.png, contact_sheet.png [, overlay.mp4], OUT/summary.json.")
@click.option("--classes", default=None,
              help="Comma-separated anomaly classes of the prompts (e.g. Fighting,Explosion). Default: the classes of "
                   "the checkpoint's training data, else UCF-Crime's 13.")
@click.option("--stride", type=click.IntRange(min=1), default=16, show_default=True,
              help="Score one frame per this many source frames (evaluation's snippet).")
@click.option("--video", "write_video", is_flag=True, help="Also write overlay.mp4: every scored frame with its patch map.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-frames", type=click.IntRange(min=1), default=64, show_default=True, help="Frames per forward pass.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def score_command(inputs, checkpoint, baseline, out_dir, classes, stride, write_video, device, batch_frames, quiet) -> None:
    """Anomaly scores and heat maps for video files or folders of them, no annotation needed.

    Decodes like stage 1 (stride sampling), scores like evaluation, and writes per video a CSV
    of scores with the top class, a score curve and a contact sheet with patch-level heat maps.
    Files that cannot be decoded are skipped with the reason.
    """
    from pathlib import Path

    from fgclip import score as scoring
    from fgclip.evaluate import EvaluationError
    from fgclip.model import ModelDirError

    class_list = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    try:
        summary = scoring.score_files([Path(i) for i in inputs], Path(checkpoint), Path(out_dir),
                                      baseline=Path(baseline) if baseline else None, classes=class_list,
                                      device=device, stride=stride, batch_frames=batch_frames, video=write_video,
                                      progress=not quiet, echo=click.echo)
    except (scoring.ScoreError, EvaluationError, ModelDirError) as err:
        raise click.ClickException(str(err)) from None
    for entry in summary["videos"]:
        peak = entry["peak"]
        click.echo(f"{entry['video']}: peak {peak['score']:.3f} at {peak['time_s']:.1f} s ({peak['top_class']}) -> "
                   f"{entry['out']}")
    click.echo(f"{len(summary['videos'])} scored, {len(summary['skipped'])} skipped; summary: "
               f"{Path(out_dir) / 'summary.json'}")
    if not summary["videos"]:
        raise click.ClickException("no video could be scored (reasons above)")

# --- benchmarks ---------------------------------------------------------------------------------


@main.command("bench")
@click.option("--out", "out_dir", default="bench", show_default=True, type=click.Path(file_okay=False),
              help="Output dir: bench[-LABEL].json, the benchmark inputs (with --make-data) and the trainer's log.")
@click.option("--model", default=None, type=click.Path(file_okay=False),
              help="Model directory [default: OUT/model-PRESET, created with --model-preset].")
@click.option("--model-preset", default=None, type=click.Choice(MODEL_PRESETS),
              help="init-model preset used when --model is not given [the --family's ViT-B/16 shape; its tiny one with --smoke].")
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
@click.option("--batch-size", type=_BatchSize(), default="auto", show_default=True,
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
@click.option("--smoke", is_flag=True,
              help="A seconds-long CPU configuration of all four measurements (tiny model and data; CI runs it).")
def bench_command(out_dir, model, model_preset, family, shards, test_shards, videos, make_data, records, test_videos,
                  baseline_videos, size, num_frames, batch_size, grad_accum, workers, gradient_checkpointing, compile_blocks,
                  steps, warmup_steps, baseline_steps, time_eval, eval_readers, label, profile_step, smoke, extra_settings) -> None:
    """Time the training step fed from device memory, from HDF5 shards and by decoding video in the
    loop, plus evaluation inference; write bench.json and print a table."""
    from pathlib import Path

    from fgclip import distributed
    from fgclip.bench import SMOKE, BenchConfig, format_table, make_bench_data, run_bench

    suffix = "" if family == "clip" else f"-{family}"
    if model_preset is None:
        model_preset = ("tiny" if smoke else "vit-b16") + suffix
    if smoke:
        make_data, records, num_frames, size = True, SMOKE["records"], SMOKE["num_frames"], SMOKE["size"]
        test_videos, baseline_videos, batch_size, grad_accum = SMOKE["test_videos"], SMOKE["baseline_videos"], 1, 2
        workers, steps, warmup_steps, baseline_steps, label = 1, 1, 1, 1, label or f"smoke{suffix}"
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
    if model is None:
        model = str(out / f"model-{model_preset}")
        if dist.is_main and not (Path(model) / "config.json").is_file():
            from fgclip.model_factory import init_model

            init_model(model_preset, Path(model))
        distributed.barrier()
    config = BenchConfig(
        out_dir=str(out), model=model,
        shards=shards or str(data / f"train_t{num_frames}"),
        test_shards=None if not time_eval else (
            test_shards or (str(data / "test_stride16") if (data / "test_stride16").is_dir() else None)),
        videos=videos or (str(data / "videos") if (data / "videos").is_dir() else None),
        num_frames=num_frames, batch_size=2 if batch_size == "auto" else batch_size, auto_batch=batch_size == "auto",
        grad_accum=grad_accum, workers=workers, extra_settings=extra_settings is not False,
        gradient_checkpointing=gradient_checkpointing, compile=compile_blocks, steps=steps, warmup_steps=warmup_steps,
        baseline_steps=baseline_steps, label=label, profile=profile_step, eval_readers=eval_readers,
    )
    results = run_bench(config)
    if dist.is_main:
        click.echo(format_table(results))
        click.echo(f"results: {results['json_path']}")


if __name__ == "__main__":
    main()
