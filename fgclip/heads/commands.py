"""The heads' commands: `train-head` and `bench-head` (registered in `fgclip.cli`)."""

from __future__ import annotations

import click


def _seeds(value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise click.BadParameter("give at least one seed")
    return seeds


@click.command("train-head")
@click.option("--features", "features_dir", type=click.Path(file_okay=False), default=None,
              help="A features directory of `fgclip-vad features` (its train list, dataset, ground truth and model).")
@click.option("--train-list", type=click.Path(dir_okay=False), default=None,
              help="A training list instead: VadCLIP's CSV (path,label), RTFM/UR-DMU's or PEL4VAD's one-path lists.")
@click.option("--test-list", type=click.Path(dir_okay=False), default=None,
              help="Test list of released features, scored after training (with --gt).")
@click.option("--gt", "gt_file", type=click.Path(dir_okay=False), default=None,
              help="VadCLIP's gt_<dataset>.npy for --test-list (the anchors' T x 16 ground truth).")
@click.option("--annotations", type=click.Path(dir_okay=False), default=None,
              help="Without --gt: the test split's annotation file (Temporal_Anomaly_Annotation.txt, annotations.txt, ...), "
                   "from which VadCLIP's T x 16 ground truth of --test-list is built.")
@click.option("--path-map", "path_maps", multiple=True, metavar="OLD=NEW", help="Rewrite a path prefix of the lists.")
@click.option("--dataset", "dataset_name", default=None, help="Dataset of the registry [the features' / the list's paths'].")
@click.option("--method", type=click.Choice(["vadclip", "mil"]), default="vadclip", show_default=True)
@click.option("--text-model", type=click.Path(file_okay=False), default=None,
              help="vadclip: the frozen text tower (model directory of either family) [the features' model].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="The head run's directory.")
@click.option("--crop", default="all", show_default=True, metavar="all|N",
              help="Training crops: all (each crop file a sample, as VadCLIP) or one crop N.")
@click.option("--test-crop", default="listed", show_default=True, metavar="listed|mean|N",
              help="Test crop: the file the test list names, the mean of all ten, or crop N.")
@click.option("--clip-snippets", type=click.IntRange(min=1), default=256, show_default=True,
              help="Training clip length (longer videos uniformly averaged, shorter padded).")
@click.option("--window", type=click.IntRange(min=1), default=None, help="Local attention window [8; XD-Violence 64].")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=float, default=None, help="Learning rate [vadclip 2e-5 (AdamW), mil 1e-3 (Adagrad)].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Normal and anomalous samples per step, each.")
@click.option("--prompt-prefix", type=click.IntRange(min=0), default=10, show_default=True, help="Learnable context before the class words.")
@click.option("--prompt-postfix", type=click.IntRange(min=0), default=10, show_default=True, help="Learnable context after them.")
@click.option("--separation-weight", type=float, default=1e-4, show_default=True, help="Weight of the normal/anomaly text separation term.")
@click.option("--local-layers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds, one run each (mean ± std in the report).")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Hold out this share of TRAINING videos and choose each seed's epoch by video-level AUC on them "
                   "(0: the fixed schedule's end).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue a seed from its last checkpoint.")
def train_head_command(features_dir, train_list, test_list, gt_file, annotations, path_maps, dataset_name, method, text_model, out_dir,
                       crop, test_crop, clip_snippets, window, epochs, lr, batch_size, prompt_prefix, prompt_postfix,
                       separation_weight, local_layers, seeds, val_fraction, device, resume) -> None:
    """Train a weakly supervised head (VadCLIP-style or MIL ranking) on snippet features.

    \b
    fgclip-vad train-head --features features/fgclip_demo/trained --out heads/trained --seeds 0,1,2
    fgclip-vad train-head --train-list ucf_CLIP_rgb.csv --test-list ucf_CLIP_rgbtest.csv --gt gt_ucf.npy \\
        --path-map /home/xbgydx/Desktop/UCFClipFeatures=/data/UCFClipFeatures --text-model models/clip-vit-base-patch16

    Each seed's head is chosen on training data only (fixed schedule, or --val-fraction); the test list
    is scored once, after training.
    """
    import json
    from pathlib import Path

    from fgclip.eval.evaluate import pick_device
    from fgclip.eval.ground_truth import AnnotationFormatError
    from fgclip.features.files import FeatureFileError, parse_path_maps
    from fgclip.heads import evaluate as head_eval
    from fgclip.heads import train as head_train
    from fgclip.heads.data import HeadDataError
    from fgclip.heads.prompt_context import PromptContextError
    from fgclip.models.layouts import ModelDirError
    from pipeline.datasets import UnknownDatasetError

    if crop != "all" and not crop.isdigit():
        raise click.BadParameter(f"{crop!r}: all or a crop number", param_hint="--crop")
    try:
        settings = head_train.settings_from_features(
            method, Path(out_dir), features_dir=Path(features_dir) if features_dir else None,
            train_list=Path(train_list) if train_list else None, dataset=dataset_name,
            text_model=Path(text_model) if text_model else None, path_map=parse_path_maps(path_maps), crop=crop,
            clip_snippets=clip_snippets, window=window, epochs=epochs, lr=lr, batch_size=batch_size,
            prompt_prefix=prompt_prefix, prompt_postfix=prompt_postfix, separation_weight=separation_weight,
            local_layers=local_layers, seeds=_seeds(seeds), val_fraction=val_fraction, device=str(pick_device(device)))
        summaries = head_train.train_heads(settings, resume=resume, echo=click.echo)
        test = None
        if test_list:
            test = head_eval.HeadTestSet(Path(test_list), settings.dataset, Path(gt_file) if gt_file else None, None,
                                         settings.path_map)
            if gt_file is None and annotations:
                test.anchors_gt = head_eval.write_anchors_ground_truth(test, annotations, Path(out_dir))
        elif features_dir and head_eval.read_features_dir(features_dir).test:
            test = head_eval.test_features_of(features_dir)
        if test is not None:
            result = head_eval.evaluate_head_run(out_dir, test, test_crop=test_crop, device=settings.device)
            (Path(out_dir) / "test_results.json").write_text(json.dumps(result, indent=2) + "\n")
            for gt, summary in result["summary"].items():
                auc, ap = summary["auc"], summary["ap"]
                click.echo(f"test ({result['ground_truths'][gt]}): frame AUC {auc['mean']:.4f} ± {auc['std']:.4f}, "
                           f"AP {ap['mean']:.4f} ± {ap['std']:.4f} over {auc['n']} seeds")
    except (HeadDataError, FeatureFileError, PromptContextError, ModelDirError, UnknownDatasetError, FileNotFoundError,
            AnnotationFormatError) as err:
        raise click.ClickException(str(err)) from None
    for summary in summaries:
        chosen = Path(out_dir) / f"seed-{summary['seed']}" / summary["chosen"]
        click.echo(f"seed {summary['seed']}: {summary['selection']} -> {chosen}")


@click.command("bench-head")
@click.option("--text-model", type=click.Path(file_okay=False), default=None,
              help="Text tower of the features' width [default: OUT/model-fg-clip-base, a random fg-clip-base shape].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="bench", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Time this many steps and scale to the epoch [all].")
@click.option("--window", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", default="auto", show_default=True)
def bench_head_command(text_model, out_dir, steps, window, device) -> None:
    """One epoch of `train-head --method vadclip` on UCF-Crime-sized generated features (1,610 videos x 10 crops)."""
    import json
    from pathlib import Path

    from fgclip.eval.evaluate import pick_device
    from fgclip.heads.bench import bench_epoch
    from fgclip.models.factory import init_model

    out = Path(out_dir)
    if text_model is None:
        text_model = out / "model-fg-clip-base"
        if not (text_model / "config.json").is_file():
            init_model("fg-clip-base", text_model)
    result = bench_epoch(Path(text_model), steps=steps, window=window, device=str(pick_device(device)), echo=click.echo)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-head.json").write_text(json.dumps(result, indent=2) + "\n")
