"""The features command: `features` (registered in `fgclip.cli`)."""

from __future__ import annotations

import click

DEMO_RUN = "checkpoints/fgclip_demo"  # `make demo`'s run: its trained model and the model it started from
DEFAULT_OUT = "features"


@click.command("features")
@click.option("--train-list", type=click.Path(dir_okay=False), default=None,
              help="Training split list (UCF-Crime's Anomaly_Train.txt: `Class/Name.mp4` per line; other datasets' "
                   "lists by their rules).")
@click.option("--test-list", type=click.Path(dir_okay=False), default=None, help="Test split list (Anomaly_Test.txt).")
@click.option("--videos", "video_folders", multiple=True, type=click.Path(file_okay=False),
              help="A folder of videos instead of lists (every video file under it, split 'train'); repeatable.")
@click.option("--video-root", type=click.Path(file_okay=False), default=None, help="Where the lists' paths start.")
@click.option("--checkpoint", "checkpoints", multiple=True, metavar="[NAME=]DIR",
              help="A model directory of either family (a release, a checkpoint, a run: its chosen model); repeatable. "
                   "Every model's features come from the same decode.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help=f"Output root: one folder per model [default: {DEFAULT_OUT}/<dataset or run>].")
@click.option("--crops", type=click.Choice(["1", "10"]), default="1", show_default=True,
              help="1: the model's own preprocessing; 10: VadCLIP's ten crops (__0 centre, __1..__4 corners, __5..__9 flips).")
@click.option("--test-crop", type=click.IntRange(0, 9), default=0, show_default=True,
              help="The crop the test lists name (one file per test video, as the field's test lists).")
@click.option("--snippet", type=click.IntRange(min=1), default=16, show_default=True, help="Source frames per snippet.")
@click.option("--snippet-frame", default="centre", show_default=True, metavar="centre|first|N",
              help="Which frame of a snippet feeds the model: centre (frame 8 of 16: what stage 1's test shards store), "
                   "first, or its 0-based index.")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Crop side in pixels: frames are squashed to it (one crop), or to size * 256/224 for ten "
                   "[default: 224; the embedded default's 112].")
@click.option("--test-shards", type=click.Path(file_okay=False), default=None,
              help="Stage 1's stride-16 test shards: test videos' frames are read there instead of decoded again.")
@click.option("--annotations", type=click.Path(dir_okay=False), default=None,
              help="The test split's ground truth (Temporal_Anomaly_Annotation.txt, XD-Violence's annotations.txt, ...): "
                   "writes gt_<dataset>.npy (VadCLIP's T x 16), gt_segment/gt_label and our exact per-frame ground truth.")
@click.option("--dataset", "dataset_name", default="ucf-crime", show_default=True, help="Dataset of the registry.")
@click.option("--convention", default=None, help="Interval convention of --annotations for the exact ground truth.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (torchrun: one GPU per rank).")
@click.option("--batch-frames", type=click.IntRange(min=1), default=256, show_default=True, help="Frames per forward pass.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Videos decoded at once (each an ffmpeg process of one thread) [default: the CPU count less 2, at least 2].")
@click.option("--progress/--no-progress", default=True, show_default=True)
def features_command(train_list, test_list, video_folders, video_root, checkpoints, out_dir, crops, test_crop, snippet,
                     snippet_frame, size, test_shards, annotations, dataset_name, convention, device, batch_frames,
                     workers, progress) -> None:
    """Per-snippet features of every video, for one or more models, in the files the field's heads read.

    \b
    fgclip-vad features                       the embedded default: train and test videos, the demo's
                                              trained model (when `make demo` ran) and its starting model
    fgclip-vad features --train-list Anomaly_Train.txt --test-list Anomaly_Test.txt --video-root UCF_Crime/Videos \\
        --checkpoint ours=checkpoints/fgclip_ucf_full --checkpoint clip=models/fg-clip-base --crops 10 \\
        --annotations Temporal_Anomaly_Annotation.txt --out features/ucf

    Per model: <Folder>/<video>__<crop>.npy (float32 [T, D], the frame embedding before normalisation),
    lists/ (VadCLIP CSV, RTFM/UR-DMU and PEL4VAD lists), gt/ and manifest.json. A killed run resumes.
    """
    from pathlib import Path

    from fgclip import distributed
    from fgclip.eval.evaluate import pick_device
    from fgclip.eval.ground_truth import AnnotationFormatError
    from fgclip.features import extract as fx
    from fgclip.features.files import FeatureFileError

    try:
        snippet_rule = fx.SnippetRule(frames=snippet, offset=_snippet_offset(snippet_frame, snippet))
        embedded_default = not (train_list or test_list or video_folders or checkpoints)
        if embedded_default:
            plan = _embedded_plan()
            size = size or plan["size"]
        else:
            plan = _given_plan(train_list, test_list, video_folders, video_root, checkpoints, dataset_name, out_dir,
                               annotations, test_shards)
        settings = fx.ExtractionSettings(
            snippet=snippet_rule, crop=fx.CropRule(crops=int(crops), size=size or 224), test_crop=test_crop,
            dataset=dataset_name, annotations=plan["annotations"], batch_frames=batch_frames,
            decode_workers=workers or fx.default_decode_workers())
        if convention:
            settings.convention = convention
        info = distributed.init_from_env()
        torch_device = info.device if info.world_size > 1 else pick_device(device)
        out = Path(out_dir) if out_dir else Path(plan["out"])
        models = [fx.FeatureModel(name, Path(path), out / name) for name, path in plan["models"]]
        # The embedded default's folders are its own: features of a model trained or initialised again are redone.
        manifests = fx.extract(plan["videos"], models, settings, device=torch_device, test_shards=plan["test_shards"],
                               progress=progress, replace_stale=embedded_default, echo=click.echo)
    except (fx.FeaturesError, FeatureFileError, AnnotationFormatError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if manifests:
        click.echo(f"features of {len(manifests)} model(s) in {out}")


def _snippet_offset(value: str, snippet: int) -> int | None:
    if value == "centre":
        return None
    if value == "first":
        return 0
    if value.isdigit() and int(value) < snippet:
        return int(value)
    raise click.BadParameter(f"{value!r}: centre, first or a frame index below --snippet {snippet}",
                             param_hint="--snippet-frame")


def _named_models(values) -> list[tuple[str, str]]:
    """[NAME=]DIR -> (name, model dir); a run directory gives the model evaluation would take."""
    from pathlib import Path

    from fgclip import run_dir

    models = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = "", value
        directory = Path(path)
        chosen = directory if run_dir.is_model_dir(directory) else run_dir.chosen_model_dir(directory)
        if chosen is None:
            raise click.BadParameter(f"{path}: neither a model directory nor a run with one", param_hint="--checkpoint")
        models.append((name or _model_name(chosen), str(chosen)))
    names = [n for n, _ in models]
    if len(set(names)) != len(names):
        raise click.BadParameter(f"two models named alike ({', '.join(names)}): name them, NAME=DIR", param_hint="--checkpoint")
    return models


def _model_name(model_dir) -> str:
    from fgclip import run_dir

    return f"{run_dir.run_name(model_dir)}-{model_dir.name}" if run_dir.in_run(model_dir) else model_dir.name


def _given_plan(train_list, test_list, video_folders, video_root, checkpoints, dataset_name, out_dir, annotations,
                test_shards) -> dict:
    from pathlib import Path

    from fgclip.features import extract as fx

    if not checkpoints:
        raise click.UsageError("give at least one --checkpoint (or no options at all for the embedded default)")
    if (train_list or test_list) and not video_root:
        raise click.UsageError("--train-list / --test-list need --video-root (where their paths start)")
    videos = []
    if train_list:
        videos += fx.items_from_list(Path(train_list), Path(video_root), "train", dataset_name)
    if test_list:
        videos += fx.items_from_list(Path(test_list), Path(video_root), "test", dataset_name)
    for folder in video_folders:
        videos += fx.items_from_folder(Path(folder), "train", dataset_name)
    return {"videos": fx.unique_items(videos), "models": _named_models(checkpoints),
            "out": f"{DEFAULT_OUT}/{dataset_name}", "annotations": Path(annotations) if annotations else None,
            "test_shards": Path(test_shards) if test_shards else None}


def _embedded_plan() -> dict:
    """The embedded default: its training videos (from train.json) and test split, the demo run's
    chosen model and its starting model when `make demo` has run, else the tiny model."""
    import json
    from pathlib import Path

    from fgclip import run_dir
    from fgclip.features import extract as fx
    from fgclip.models.factory import init_model
    from pipeline import embedded
    from pipeline.frames import ensure_embedded_dataset

    ensure_embedded_dataset()
    records = json.loads(embedded.TRAIN_JSON.read_text(encoding="utf-8"))
    train_lines = sorted({record["video"] for record in records})
    videos = [fx.VideoItem(path=embedded.VIDEO_ROOT / line, folder=Path(line).parent.name, key=Path(line).stem,
                           label=label, split="train")
              for line, label in ((line, _ucf_label(line)) for line in train_lines)]
    videos += fx.items_from_list(embedded.TEST_LIST, embedded.TEST_VIDEO_ROOT, "test", "ucf-crime")
    demo = Path(DEMO_RUN)
    trained = run_dir.chosen_model_dir(demo) if demo.is_dir() else None
    if trained is not None:
        start = run_dir.starting_model(trained) or run_dir.starting_model(demo)
        models = [(_model_name(trained), str(trained))] + ([(Path(start).name, str(start))] if start else [])
    else:
        if not (embedded.MODEL_DIR / "config.json").is_file():
            init_model("tiny", embedded.MODEL_DIR)
        models = [(embedded.MODEL_DIR.name, str(embedded.MODEL_DIR))]
    return {"videos": fx.unique_items(videos), "models": models, "out": f"{DEFAULT_OUT}/{demo.name}",
            "annotations": embedded.TEMPORAL_ANNOTATIONS, "test_shards": None, "size": embedded.FRAME_SIZE}


def _ucf_label(video: str) -> str:
    from pipeline.ucf_split import label_from_video_path

    return label_from_video_path(video)[0]
