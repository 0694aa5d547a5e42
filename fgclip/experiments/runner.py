"""Running an experiment: the shared stages once, then every cell, one GPU each, or as jobs.

Order: the embedded default's inputs (if the spec uses it), then every distinct stage-1 output
(training shards per stage-1 key, test shards per size), one after another (stage 1 uses every
core), then the cells. A cell runs its stages in order, each skipped when its output is complete
(`fgclip.experiments.stages.is_done`); cells that share a training key share the run. Cells run
one at a time, or one per GPU in parallel (`gpus`: CUDA_VISIBLE_DEVICES per subprocess), or as
jobs of a scheduler through submitit (`executor`: "slurm", or "local" for its local executor).

Every subprocess gets one inductor cache for the whole experiment (TORCHINDUCTOR_CACHE_DIR,
the FX graph and AOT autograd caches on), so a cell compiles only what no earlier cell did.
Each stage's wall time goes into `experiment_stage.json` in its output folder, which
results.csv reads beside the trainer's step times.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fgclip.experiments.cells import Cell, CellKeys, cell_keys, expand_cells
from fgclip.experiments.spec import ExperimentSpec, SpecError
from fgclip.experiments.stages import (
    STAGE_RECORD,
    DatasetPaths,
    StageRun,
    embedded_train_list,
    eval_run,
    features_run,
    fgclip_command,
    heads_run,
    frames_run,
    is_done,
    prepare_commands,
    resolve_dataset,
    test_frames_options,
    test_frames_run,
    train_run,
)

EXECUTORS = ("inline", "local", "slurm")
INDUCTOR_CACHE = "inductor-cache"


class ExperimentError(RuntimeError):
    """A stage of the experiment failed: the cell, the command and its log are named."""


class StageStopped(ExperimentError):
    """A stage was stopped by a signal (Ctrl-C, kill, a scheduler's time limit): the experiment
    stops too, and the same command resumes it."""


@dataclass
class CellPlan:
    """A cell with its stage runs, in order (picklable: it travels to submitit's jobs)."""

    cell: Cell
    keys: CellKeys
    stages: list[StageRun]  # the cell's own stages (train, eval); stage 1 runs before all cells
    shared: list[StageRun] = field(default_factory=list)  # the stage-1 outputs it reads
    log_dir: Path = Path(".")

    def done(self) -> bool:
        return all(is_done(run) for run in self.stages)

    def stage(self, name: str) -> StageRun | None:
        """The cell's run of stage `name` (its own or a shared one), None if it has none."""
        return next((run for run in [*self.shared, *self.stages] if run.stage == name), None)


@dataclass
class ExperimentPlan:
    spec: ExperimentSpec
    root: Path
    data: DatasetPaths
    prepare: list[list[str]]
    shared: list[StageRun]  # distinct stage-1 runs, in order
    cells: list[CellPlan]
    train_list: Path | None = None  # the embedded default's training list, written before the cells (heads rows)


def plan_experiment(spec: ExperimentSpec, root: Path) -> ExperimentPlan:
    """Every cell's stages and the shared ones, with their output folders under `root`."""
    heads = "heads" in spec.rows
    if not heads:
        unused = sorted({stage for cell in expand_cells(spec) for stage in ("features", "heads") if cell.options[stage]})
        if unused:
            raise SpecError(f"{spec.path}: options for {', '.join(unused)} are given, but no cell runs that stage "
                            f"(rows has no \"heads\"); remove them")
    data = resolve_dataset(spec.dataset)
    if heads and not data.embedded and data.train_list is None:
        raise SpecError(f"{spec.path}: rows = \"heads\" needs [dataset] train_list: the field's training split list "
                        f"(UCF-Crime's Anomaly_Train.txt), relative to test_video_root like the test list")
    train_list = data.train_list or root / "lists" / "train.txt"  # the embedded one is written before the cells
    shared: dict[str, StageRun] = {}
    plans = []
    for cell in expand_cells(spec):
        keys = cell_keys(cell, data.identity(), test_frames_options(cell.options["frames"]))
        frames = frames_run(data, cell, keys, root)
        test = test_frames_run(data, cell, keys, root)
        shared.setdefault(f"frames-{frames.key}", frames)
        shared.setdefault(f"test-{test.key}", test)
        train = train_run(data, cell, keys, root, frames.output)
        stages = [train]
        if heads:
            features = features_run(data, cell, keys, root, train.output, test.output, train_list)
            stages += [features, heads_run(cell, keys, root, features.output)]
        if "prompt" in spec.rows:
            stages.append(eval_run(data, cell, keys, root, train.output, test.output))
        plans.append(CellPlan(cell, keys, stages, [frames, test], log_dir=root / "cells" / cell.name))
    return ExperimentPlan(spec, root, data, prepare_commands(data), list(shared.values()), plans,
                          train_list=train_list if heads and data.embedded else None)


def subprocess_env(root: Path, gpu: str | None = None) -> dict[str, str]:
    """The environment of every stage: offline, one inductor cache for the experiment, a GPU."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env["TORCHINDUCTOR_CACHE_DIR"] = str((root / INDUCTOR_CACHE).resolve())
    env["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    env["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def run_stage(run: StageRun, log_path: Path, env: dict[str, str]) -> float:
    """Run one stage's command with its output appended to `log_path`; its wall seconds.

    The stage's record (command, wall time) is written into its output folder only when the
    command succeeded, so a failed or killed stage is run again (and resumes) next time.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(run.command())}\n")
        log.flush()
        process = subprocess.Popen(run.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            returncode = process.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the stage too: let it stop cleanly (training finishes its step and
            # writes a checkpoint to resume from), rather than subprocess.run's kill after 0.25 s.
            process.wait()
            raise
    wall_s = time.perf_counter() - started
    if returncode < 0 or returncode > 128:  # killed by a signal, or ended by one (the shell's 128 + N)
        number = -returncode if returncode < 0 else returncode - 128
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else f"signal {number}"
        raise StageStopped(f"{run.stage} stopped by {name} (log {log_path}); run the same command again to resume "
                           f"(finished stages are kept, training continues from its last checkpoint)")
    if returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise ExperimentError(f"{run.stage} failed (exit {returncode}); log {log_path}; last lines:\n  "
                              + "\n  ".join(tail) + "\nFix the cause and run the experiment again: finished work is kept")
    run.output.mkdir(parents=True, exist_ok=True)
    record = {"stage": run.stage, "key": run.key, "command": run.argv, "wall_s": round(wall_s, 3),
              "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (run.output / STAGE_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return wall_s


def run_cell(plan: CellPlan, root: Path, gpu: str | None = None) -> dict:
    """Run the stages of one cell that are not done (a killed stage resumes: training's
    `--resume auto`); {stage: "done" | seconds}. Module-level so submitit can pickle it."""
    env = subprocess_env(root, gpu)
    outcome: dict[str, object] = {}
    for run in plan.stages:
        if is_done(run):
            outcome[run.stage] = "done"
            continue
        outcome[run.stage] = round(run_stage(run, plan.log_dir / run.log_name, env), 1)
    return outcome


def _run_shared(plan: ExperimentPlan, say: Callable[[str], None]) -> None:
    env = subprocess_env(plan.root)
    for argv in plan.prepare:
        say(f"prepare: fgclip-vad {' '.join(argv)}")
        log = plan.root / "logs" / "prepare.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as handle:
            result = subprocess.run(fgclip_command(argv), stdout=handle, stderr=subprocess.STDOUT, env=env)
        if result.returncode != 0:
            raise ExperimentError(f"`fgclip-vad {' '.join(argv)}` failed (exit {result.returncode}); log {log}")
    if plan.train_list is not None:
        embedded_train_list(plan.train_list)
    for run in plan.shared:
        if is_done(run):
            say(f"{run.stage} {run.key}: done, skipped ({run.output})")
            continue
        say(f"{run.stage} {run.key}: building {run.output}")
        seconds = run_stage(run, plan.root / "logs" / run.log_name, env)
        say(f"{run.stage} {run.key}: {seconds:.0f} s")


def _unique_cells(plan: ExperimentPlan) -> list[CellPlan]:
    """One plan per distinct set of outputs (cells listed in two tables run once)."""
    seen: dict[tuple[str, ...], CellPlan] = {}
    for cell_plan in plan.cells:
        seen.setdefault(tuple(str(run.output) for run in cell_plan.stages), cell_plan)
    return list(seen.values())


def run_cells(plan: ExperimentPlan, *, gpus: list[str] | None = None, executor: str = "inline",
              slurm: dict | None = None, say: Callable[[str], None] = print) -> None:
    """Run every cell that is not done; say which were skipped. Raises ExperimentError naming
    the failed cells (the others still run)."""
    todo = []
    for cell_plan in _unique_cells(plan):
        if cell_plan.done():
            say(f"cell {cell_plan.cell.name}: done, skipped")
        else:
            todo.append(cell_plan)
    if not todo:
        return
    failures: list[str] = []

    def report(cell_plan: CellPlan, outcome: dict | Exception) -> None:
        if isinstance(outcome, Exception):
            failures.append(f"{cell_plan.cell.name}: {outcome}")
            say(f"cell {cell_plan.cell.name}: FAILED: {outcome}")
        else:
            say(f"cell {cell_plan.cell.name}: " + ", ".join(
                f"{stage} {value if value == 'done' else f'{value} s'}" for stage, value in outcome.items()))

    if executor != "inline":
        _run_with_submitit(plan, todo, executor, slurm or {}, report)
    elif gpus and len(gpus) > 1:
        free: queue.Queue[str] = queue.Queue()
        for gpu in gpus:
            free.put(gpu)
        stopped = threading.Event()  # a stage was stopped by a signal: start no further cell

        def on_a_gpu(cell_plan: CellPlan) -> None:
            gpu = free.get()
            try:
                if stopped.is_set():
                    return
                say(f"cell {cell_plan.cell.name}: running on GPU {gpu}")
                report(cell_plan, run_cell(cell_plan, plan.root, gpu))
            except StageStopped:
                stopped.set()
                raise
            except ExperimentError as err:
                report(cell_plan, err)
            finally:
                free.put(gpu)

        with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
            list(pool.map(on_a_gpu, todo))
    else:
        gpu = gpus[0] if gpus else None
        for cell_plan in todo:
            say(f"cell {cell_plan.cell.name}: running")
            try:
                report(cell_plan, run_cell(cell_plan, plan.root, gpu))
            except StageStopped:
                raise
            except ExperimentError as err:
                report(cell_plan, err)
    if failures:
        raise ExperimentError(f"{len(failures)} of {len(todo)} cells failed:\n" + "\n".join(failures))


def _run_with_submitit(plan: ExperimentPlan, todo: list[CellPlan], executor: str, slurm: dict,
                       report: Callable[[CellPlan, object], None]) -> None:
    """Each cell a job of SLURM (or of submitit's local executor, which runs them here)."""
    try:
        import submitit  # an optional extra: pip install 'fgclip-vad[slurm]'
    except ImportError:
        raise ExperimentError("--executor slurm/local needs submitit: pip install 'fgclip-vad[slurm]'") from None
    folder = plan.root / "submitit"
    if executor == "local":
        jobs_executor = submitit.LocalExecutor(folder=folder)
        jobs_executor.update_parameters(timeout_min=int(slurm.get("timeout_min", 24 * 60)))
    else:
        jobs_executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        parameters = {"timeout_min": int(slurm.get("timeout_min", 24 * 60)), "gpus_per_node": 1, "tasks_per_node": 1,
                      "cpus_per_task": int(slurm.get("cpus_per_task", 8)), "name": f"fgclip-{plan.spec.name}"}
        if slurm.get("partition"):
            parameters["slurm_partition"] = slurm["partition"]
        jobs_executor.update_parameters(**parameters)
    jobs = [(cell_plan, jobs_executor.submit(run_cell, cell_plan, plan.root)) for cell_plan in todo]
    for cell_plan, job in jobs:
        try:
            report(cell_plan, job.result())
        except Exception as err:  # noqa: BLE001 - a job's failure comes back as the scheduler's exception
            report(cell_plan, ExperimentError(f"job {job.job_id}: {err}"))


def run_experiment(plan: ExperimentPlan, *, gpus: list[str] | None = None, executor: str = "inline",
                   slurm: dict | None = None, say: Callable[[str], None] = print) -> None:
    """The shared stages, then the cells (see the module docstring)."""
    plan.root.mkdir(parents=True, exist_ok=True)
    _run_shared(plan, say)
    run_cells(plan, gpus=gpus, executor=executor, slurm=slurm, say=say)
