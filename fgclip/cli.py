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

    Stage 1: validate, synth, frames.  Stage 2: init-model, train, eval.  Also: doctor, bench.
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


@main.command("validate")
@click.argument("annotations", type=click.Path(dir_okay=False))
@click.option("--test-split", type=click.Path(dir_okay=False), default=None,
              help="Official UCF-Crime Anomaly_Test.txt (default: $FGCLIP_UCF_TEST_SPLIT, next to the JSON, ../ucf/, ../../ucf/).")
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
def validate_command(annotations, test_split, allow_test_overlap, drop_test_overlap, drop_invalid, translations,
                     fps_hint, json_report, max_listed) -> None:
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
        Path(annotations), test_split=Path(test_split) if test_split else None,
        allow_test_overlap=allow_test_overlap, drop_test_overlap=drop_test_overlap,
        translations=_load_translations_option(translations), drop_invalid=drop_invalid, fps_hint=fps_hint)
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

# --- stage 1: frames --------------------------------------------------------------------------

# --- stage 2: model ---------------------------------------------------------------------------


@main.command("init-model")
@click.option("--preset", type=click.Choice(["tiny", "vit-b16"]), default="tiny", show_default=True,
              help="tiny: the embedded default (112 px, trains on CPU); vit-b16: random ViT-B/16 CLIP for benchmarks.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Model directory to write [default: the embedded default model dir for tiny, beside it for vit-b16].")
@click.option("--captions", "captions_json", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Annotation JSON whose captions train the tokenizer [default: the embedded dataset's, "
                   "or a built-in word list when it is not generated yet].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--force", is_flag=True, help="Overwrite a directory that already holds a model.")
def init_model_command(preset: str, out_dir: str | None, captions_json: str | None, seed: int, force: bool) -> None:
    """Write a new CLIP model directory (random weights, BPE tokenizer trained on captions)."""
    from pathlib import Path

    from fgclip.model_factory import captions_from_annotations, init_model
    from pipeline import embedded

    out = Path(out_dir) if out_dir else (embedded.MODEL_DIR if preset == "tiny" else embedded.MODEL_DIR.parent / preset)
    if (out / "config.json").exists() and not force:
        raise click.ClickException(f"{out}: already holds a model (config.json); pass --force to overwrite it")
    try:
        captions = captions_from_annotations(Path(captions_json)) if captions_json else None
        written = init_model(preset, out, captions=captions, seed=seed)
    except (OSError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {preset} model to {written}")

# --- stage 2: training --------------------------------------------------------------------------

# --- evaluation ---------------------------------------------------------------------------------

# --- benchmarks ---------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
