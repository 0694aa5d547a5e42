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

# --- stage 1: embedded default dataset -------------------------------------------------------

# --- stage 1: frames --------------------------------------------------------------------------

# --- stage 2: model ---------------------------------------------------------------------------

# --- stage 2: training --------------------------------------------------------------------------

# --- evaluation ---------------------------------------------------------------------------------

# --- benchmarks ---------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
