"""Stage 1's commands: `validate`, `export-captions`, `synth`, `frames` (registered in `fgclip.cli`).

Thin: they parse options, call `pipeline`'s functions and turn expected failures into one line and a
non-zero exit. Heavy imports stay inside the commands so `fgclip-vad --help` is instant.
"""

from __future__ import annotations

import click

from pipeline.record_policy import BOXLESS_POLICIES, WINDOW_STRATEGIES, RecordPolicy


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


@click.command("validate")
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


@click.command("export-captions")
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


@click.command("synth")
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


@click.command("frames")
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
@click.option("--window", "window", type=click.Choice(WINDOW_STRATEGIES), default="annotated", show_default=True,
              help="Training records: sample the record's timestamps (annotated) or its whole video (whole-video). "
                   "A random clip per epoch is `train --frame-selection random-clip` over the stored frames.")
@click.option("--boxless", type=click.Choice(BOXLESS_POLICIES), default="whole-frame", show_default=True,
              help="Regions without box keyframes: a whole-frame pseudo box; mask (left out of the region loss, "
                   "the record kept for the video-caption loss); drop (also skip records left without a boxed region).")
@click.option("--max-regions", type=click.IntRange(min=1), default=None,
              help="At most this many regions per record (the first ones; the rest listed in the manifest) [all].")
@click.pass_context
def frames_command(ctx, annotations, video_root, out_root, num_frames, size, resize_mode, records_per_shard, workers,
                   strict, test_split, allow_test_overlap, drop_test_overlap, translations, test_list, stride,
                   path_maps, dataset_name, benchmark, repeats, model_family, window, boxless,
                   max_regions) -> None:
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
            ignored = given & {"num_frames", "test_split", "allow_test_overlap", "drop_test_overlap", "translations",
                               "window", "boxless", "max_regions"}
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
            path_map=path_map, model_family=model_family, report_problems=lambda text: click.echo(text, err=True),
            policy=RecordPolicy(window=window, boxless=boxless, max_regions=max_regions))
        _print_frames_summary(summary)
    except (FramesError, VideoError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:  # e.g. an output directory that cannot be created; the message names it
        raise click.ClickException(f"{err}; nothing was lost: fix that, then rerun the same command") from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; rerun the same command to resume (finished shards are kept)") from None

# --- stage 2: model ---------------------------------------------------------------------------
