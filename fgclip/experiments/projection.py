"""`--dry-run`: the cells and their projected time, from a bench figure (docs/bench/*.json).

A cell is projected as the frames it trains (epochs x records x frames per record) over the
bench's training frames/s (`real.frames_per_s`: the shard loader's path), plus the test shards'
stored frames over the bench's evaluation frames/s, plus a fixed per-cell overhead (processes,
model loading, the first step, evaluation's set-up; the spec's `[projection] cell_overhead_s`,
default the 50 s measured on an H200 with the inductor cache warm, docs/PERFORMANCE.md). Record
and frame counts come from the data when it is here (annotation file, test shard manifest),
else from the spec's `[projection]` hints. Stage 1 is the spec's `stage1_s` per build. A stage
already done costs nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from fgclip.experiments.runner import CellPlan, ExperimentPlan
from fgclip.experiments.stages import StageRun, is_done
from fgclip.train.presets import preset_config

DEFAULT_BENCH = Path(__file__).resolve().parents[2] / "docs" / "bench" / "bench-h200.json"
DEFAULT_CELL_OVERHEAD_S = 50.0  # a warm cell on one H200 beyond its steps and scoring (docs/PERFORMANCE.md)


@dataclass(frozen=True)
class BenchFigures:
    train_frames_per_s: float
    eval_frames_per_s: float
    source: str  # the file and its device


def read_bench(path: Path) -> BenchFigures:
    try:
        bench = json.loads(Path(path).read_text(encoding="utf-8"))
        train, evaluation = float(bench["real"]["frames_per_s"]), float(bench["eval"]["frames_per_s"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a bench result with real.frames_per_s and eval.frames_per_s ({err}); "
                         f"give one written by `fgclip-vad bench` (docs/bench/*.json)") from None
    device = (bench.get("environment") or {}).get("device", "unknown device")
    return BenchFigures(train, evaluation, f"{Path(path).name} ({device})")


def _records(plan: ExperimentPlan) -> int | None:
    try:
        records = json.loads(plan.data.annotations.read_text(encoding="utf-8"))
        return len(records) if isinstance(records, list) else None
    except (OSError, ValueError):
        hint = plan.spec.projection.get("train_records")
        return int(hint) if hint else None


def _test_frames(plan: ExperimentPlan, test_run: StageRun) -> int | None:
    try:
        return int(json.loads((test_run.output / "manifest.json").read_text())["summary"]["frames"])
    except (OSError, ValueError, KeyError):
        hint = plan.spec.projection.get("test_frames")
        return int(hint) if hint else None


def train_seconds(cell_plan: CellPlan, records: int | None, bench: BenchFigures) -> float | None:
    """The training steps' seconds at the bench's speed (None without a record count)."""
    options = cell_plan.cell.options["train"]
    config = preset_config(options.get("preset", "debug"))
    if records is None:
        return None
    max_records = options.get("max_records", config.max_records)
    used = min(records, max_records) if max_records else records
    used = math.floor(used * (1 - float(options.get("val_fraction", config.val_fraction))))
    frames = int(options.get("epochs", config.epochs)) * used * int(options.get("num_frames", config.num_frames))
    return frames / bench.train_frames_per_s


def project(plan: ExperimentPlan, bench: BenchFigures) -> tuple[list[tuple[str, str, float | None]], float | None]:
    """[(what, state, seconds)] for the shared stages and each cell, and the total (None if unknown)."""
    overhead_s = float(plan.spec.projection.get("cell_overhead_s", DEFAULT_CELL_OVERHEAD_S))
    stage1_s = plan.spec.projection.get("stage1_s")
    records = _records(plan)
    lines: list[tuple[str, str, float | None]] = []
    for run in plan.shared:
        done = is_done(run)
        lines.append((f"{run.stage} {run.key}", "done" if done else "to run",
                      0.0 if done else (float(stage1_s) if stage1_s is not None else None)))
    seen = set()
    for cell_plan in plan.cells:
        outputs = tuple(str(run.output) for run in cell_plan.stages)
        if outputs in seen:
            lines.append((f"cell {cell_plan.cell.name}", "same as an earlier cell", 0.0))
            continue
        seen.add(outputs)
        if cell_plan.done():
            lines.append((f"cell {cell_plan.cell.name}", "done", 0.0))
            continue
        train = train_seconds(cell_plan, records, bench)
        test_frames = _test_frames(plan, cell_plan.stage("test-frames"))
        evaluation = test_frames / bench.eval_frames_per_s if test_frames is not None else None
        seconds = None if train is None or evaluation is None else train + evaluation + overhead_s
        lines.append((f"cell {cell_plan.cell.name}", "to run", seconds))
    known = [s for _, _, s in lines]
    return lines, (sum(known) if all(s is not None for s in known) else None)
