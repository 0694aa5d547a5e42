"""The experiments' command: `fgclip-vad experiment SPEC.toml` (registered in `fgclip.cli`)."""

from __future__ import annotations

import click

from fgclip.experiments.runner import EXECUTORS


def _gpu_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    gpus = [g.strip() for g in value.split(",") if g.strip()]
    if not gpus or len(set(gpus)) != len(gpus):
        raise click.BadParameter(f"{value!r}: GPU ids separated by commas, each once (e.g. 0,1,2,3)")
    return gpus


def _format_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@click.command("experiment")
@click.argument("spec_path", metavar="SPEC.toml", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="The experiment's folder [default: experiments/<spec name>].")
@click.option("--gpus", default=None, metavar="0,1,...",
              help="Run cells in parallel, one per GPU (CUDA_VISIBLE_DEVICES per cell) [one cell at a time].")
@click.option("--executor", type=click.Choice(EXECUTORS), default="inline", show_default=True,
              help="inline: cells run here; slurm: each cell a SLURM job through submitit (pip install "
                   "'fgclip-vad[slurm]'); local: submitit's local executor (the same path, on this machine).")
@click.option("--slurm-partition", default=None, help="SLURM partition of the jobs.")
@click.option("--timeout-min", type=click.IntRange(min=1), default=24 * 60, show_default=True,
              help="Time limit of each job (slurm and local executors).")
@click.option("--dry-run", is_flag=True, help="List the cells and their projected time; run nothing.")
@click.option("--bench", "bench_path", type=click.Path(dir_okay=False), default=None,
              help="The bench figure the dry run projects from [default: docs/bench/bench-h200.json, or the spec's].")
@click.option("--tables-only", is_flag=True, help="Rewrite results.csv and the tables from what is there; run nothing.")
def experiment_command(spec_path, out_dir, gpus, executor, slurm_partition, timeout_min, dry_run, bench_path,
                       tables_only) -> None:
    """Run an ablation grid: every cell of SPEC.toml through stage 1, training and evaluation,
    then results.csv, table.md and table.tex (mean ± std over seeds).

    \b
    fgclip-vad experiment experiments/demo-ablation.toml
    fgclip-vad experiment experiments/paper-ablations.toml --dry-run
    fgclip-vad experiment experiments/paper-ablations.toml --gpus 0,1,2,3
    fgclip-vad experiment experiments/paper-ablations.toml --executor slurm --slurm-partition gpu

    Run it again to continue: finished stages and cells are skipped (and said so), a killed
    training resumes from its last checkpoint. Each stage's log is under
    <out>/cells/<cell>/ (stage 1: <out>/logs/).
    """
    from pathlib import Path

    from fgclip.experiments.projection import DEFAULT_BENCH, project, read_bench
    from fgclip.experiments.results import write_results
    from fgclip.experiments.runner import ExperimentError, plan_experiment, run_experiment
    from fgclip.experiments.spec import SpecError, load_spec

    gpu_ids = _gpu_list(gpus)
    if gpu_ids and executor != "inline":
        raise click.UsageError("--gpus is for cells run here (--executor inline); a scheduler gives each job its GPU")
    try:
        spec = load_spec(spec_path)
    except SpecError as err:
        raise click.ClickException(str(err)) from None
    root = Path(out_dir) if out_dir else Path("experiments") / spec.name
    try:
        plan = plan_experiment(spec, root)
    except SpecError as err:
        raise click.ClickException(str(err)) from None
    unique = len({tuple(str(r.output) for r in c.stages) for c in plan.cells})
    click.echo(f"{spec.name}: {len(plan.cells)} cells ({unique} distinct) = "
               f"{len(plan.cells) // len(spec.seeds)} variants x {len(spec.seeds)} seeds, "
               f"{len(plan.shared)} stage-1 outputs; folder {root}")
    if dry_run:
        try:
            bench = read_bench(Path(bench_path or spec.projection.get("bench") or DEFAULT_BENCH))
        except ValueError as err:
            raise click.ClickException(str(err)) from None
        lines, total = project(plan, bench)
        click.echo(f"projected from {bench.source}: training {bench.train_frames_per_s:,.0f} frames/s, "
                   f"evaluation {bench.eval_frames_per_s:,.0f} frames/s")
        width = max(len(what) for what, _, _ in lines)
        for what, state, seconds in lines:
            click.echo(f"  {what:<{width}}  {state:<24} {_format_s(seconds)}")
        click.echo(f"total {_format_s(total)}" + (" (? = unknown: give [projection] hints in the spec)"
                                                   if total is None else "") +
                   (f", about {_format_s(total / len(gpu_ids))} on {len(gpu_ids)} GPUs" if total and gpu_ids else ""))
        return
    if not tables_only:
        try:
            run_experiment(plan, gpus=gpu_ids, executor=executor,
                           slurm={"partition": slurm_partition, "timeout_min": timeout_min}, say=click.echo)
        except ExperimentError as err:
            write_results(plan)  # what finished is kept and tabled
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; run the same command again to continue "
                                       "(finished stages are kept, training resumes)") from None
    paths = write_results(plan)
    click.echo(paths["md"].read_text(encoding="utf-8"))
    click.echo(f"wrote {paths['csv']}, {paths['md']}, {paths['tex']}")
