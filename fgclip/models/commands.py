"""The models' commands: `init-model` and `export-model` (registered in `fgclip.cli`)."""

from __future__ import annotations

import click

# The names of fgclip.models.factory.PRESETS (importing it here would load torch for --help).
MODEL_PRESETS = ["tiny", "vit-b16", "vit-l14-336", "tiny-siglip2", "vit-b16-siglip2", "fg-clip-base", "fg-clip-large",
                 "fgclip2-base"]


@click.command("init-model")
@click.option("--preset", type=click.Choice(MODEL_PRESETS), default="tiny", show_default=True,
              help="tiny: the embedded default (112 px, trains on CPU); vit-b16 / vit-l14-336: random weights of "
                   "fg-clip-base's / fg-clip-large's shape (ViT-B/16 at 224 px, ViT-L/14 at 336 px), for benchmarks; "
                   "tiny-siglip2 / vit-b16-siglip2: the same for the FG-CLIP 2 family (SigLIP 2, FG-CLIP 2's layout, "
                   "Gemma-style tokenizer); fg-clip-base / fg-clip-large / fgclip2-base: random weights of the released "
                   "shapes, token tables at their vocabulary size (fgclip2-base: 256 px, 16x16 patches, 256,000 tokens, "
                   "text 64/196), for benchmarks.")
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

    from fgclip.models.factory import captions_from_annotations, init_model
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

@click.command("export-model")
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
    plain CLIP; the summary names the parts it has no place for. fgclip2: FG-CLIP 2's layout (its
    trainer's two scalars written back when the source had them). Every export keeps a sharded
    source's shards and copies every tokenizer file and the remote code its auto_map names; the
    summary lists the files.
    """
    from pathlib import Path

    from fgclip.models.export import export_model
    from fgclip.models.layouts import ModelDirError

    try:
        summary = export_model(Path(source), Path(out_dir), layout, force=force)
    except (ModelDirError, OSError) as err:
        raise click.ClickException(str(err)) from None
    for line in summary.lines():
        click.echo(line)
