"""Evaluation's commands: `eval` and `score` (registered in `fgclip.cli`)."""

from __future__ import annotations

import click

from fgclip.eval.ground_truth import CONVENTIONS, DEFAULT_CONVENTION  # numpy only: --help stays instant
from fgclip.run_dir import default_eval_run


@click.command("eval")
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
              show_default=True, help="How an annotated interval 'start end' maps to frames (see fgclip/eval/ground_truth.py).")
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
@click.option("--head", "heads", multiple=True, metavar="[NAME=]RUN_DIR",
              help="A head run of `train-head`, scored on its features directory's test list (both ground truths, "
                   "mean ± std over its seeds) beside the checkpoints' prompt scoring; repeatable.")
@click.option("--head-features", type=click.Path(file_okay=False), default=None,
              help="Score every --head on this features directory instead of the one it trained on.")
@click.option("--head-test-crop", default="listed", show_default=True, metavar="listed|mean|N",
              help="Heads' test crop: the file the test list names, the mean of all ten crops, or crop N.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def eval_command(checkpoints, test_shards, annotations, baseline, no_baseline, out_dir, dataset_name, convention, smoothing_window,
                 threshold, device, batch_frames, readers, templates, normal_phrase, video_plots, heat_maps, boxes,
                 heads, head_features, head_test_crop, quiet) -> None:
    """Frame-level AUC on the UCF-Crime test set: checkpoints vs their starting model, with plots.

    With no arguments (`make eval`): the latest debug checkpoint on the embedded default's test
    split, compared with the model its training started from.
    """
    from pathlib import Path

    from fgclip.eval import evaluate as ev
    from fgclip.eval.ground_truth import AnnotationFormatError
    from fgclip.models.clip_video import ModelDirError
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
    if heads:
        _add_head_rows(report, inputs.out_dir, heads, head_features, head_test_crop, device)
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

def _add_head_rows(report: dict, out_dir, heads, head_features, test_crop: str, device: str) -> None:
    """Head runs scored on their test features, added to the report already written (and rewritten)."""
    from pathlib import Path

    from fgclip.eval.evaluate import pick_device
    from fgclip.eval.head_rows import head_headline, head_rows
    from fgclip.eval.report import rewrite_documents
    from fgclip.features.files import FeatureFileError
    from fgclip.heads.data import HeadDataError

    try:
        report["heads"] = head_rows(heads, features=Path(head_features) if head_features else None,
                                    test_crop=test_crop, device=str(pick_device(device)))
    except (HeadDataError, FeatureFileError) as err:
        raise click.ClickException(str(err)) from None
    rewrite_documents(Path(out_dir), report)
    for row in report["heads"]:
        click.echo(head_headline(row))


@click.command("score")
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

    from fgclip.eval import score as scoring
    from fgclip.eval.evaluate import EvaluationError
    from fgclip.models.clip_video import ModelDirError

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
