"""An experiment's numbers: results.csv (one row per cell and seed), table.md and table.tex.

Each row reads what the stages wrote: the report's checkpoint model (report.json: frame AUC,
AP, AUC on anomalous videos, false alarms at each recall the report gives, evaluation frames/s),
the training run (metrics.jsonl: peak GPU memory, the steps' time; run_config.json: the step's
frames) and each stage's wall time (`experiment_stage.json`). The tables give mean ± std over
seeds per variant (sample std, n-1; "–" for one seed), the best of each column in bold, and a
caption with the selection rule and the ground-truth convention read from the reports.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from fgclip import run_dir
from fgclip.experiments.runner import CellPlan, ExperimentPlan
from fgclip.experiments.stages import STAGE_RECORD


@dataclass(frozen=True)
class Column:
    key: str  # results.csv column
    title: str  # table heading
    better: str  # "high" or "low": which end is bold
    scale: float = 1.0  # shown value = value x scale (AUC in %)
    digits: int = 2


# The table's columns (every one also in results.csv). False alarms at 95% recall appear when the
# reports carry them (`false_alarm_rate_at_recall_95`).
TABLE_COLUMNS = (
    Column("auc", "AUC (%)", "high", 100),
    Column("ap", "AP (%)", "high", 100),
    Column("auc_anomalous_videos", "AUC$_A$ (%)", "high", 100),
    Column("false_alarm_rate_at_recall_90", "FA@90\\%R (%)", "low", 100),
    Column("false_alarm_rate_at_recall_95", "FA@95\\%R (%)", "low", 100),
    Column("train_peak_gpu_gb", "GPU mem (GB)", "low", 1, 1),
    Column("eval_frames_per_s", "eval fps", "high", 1, 0),
)
TIME_COLUMNS = ("frames_wall_s", "train_wall_s", "train_steps_s", "train_steps", "eval_wall_s", "cell_wall_s")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _wall_s(folder: Path) -> float | None:
    record = _read_json(folder / STAGE_RECORD)
    return record.get("wall_s") if record else None


def recall_false_alarms(metrics: dict) -> dict[str, float | None]:
    """False-alarm rates at each recall the report gives, keyed by the recall in percent.

    The report's `false_alarm_rate_at_recall` is at its `target_recall` (0.9); further ones may
    come as `false_alarm_rate_at_recall_95` or as a mapping {recall: rate}.
    """
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if not key.startswith("false_alarm_rate_at_recall"):
            continue
        if isinstance(value, dict):
            for recall, rate in value.items():
                percent = round(float(recall) * 100) if float(recall) <= 1 else round(float(recall))
                out[f"false_alarm_rate_at_recall_{percent}"] = rate
        elif key == "false_alarm_rate_at_recall":
            out[f"false_alarm_rate_at_recall_{round(100 * float(metrics.get('target_recall', 0.9)))}"] = value
        else:
            out[key] = value
    return out


def training_figures(run: Path) -> dict:
    """Peak GPU memory (GB, max over the log) and the steps' time from a run's metrics.jsonl.

    A line's `frames_per_s` covers the steps since the line before, so the steps' time is the
    sum of (steps since the previous line x frames per step / frames_per_s), frames per step
    from run_config.json (batch x accumulation x frames, one process).
    """
    config = run_dir.read_run_config(run) or {}
    frames_per_step = (config.get("batch_size") or 0) * (config.get("grad_accum") or 0) * (config.get("num_frames") or 0)
    peak, steps_s, steps, previous = None, 0.0, 0, 0
    try:
        lines = (run / run_dir.METRICS_NAME).read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "step" not in record:
            continue
        if record.get("gpu_mem_peak_gb") is not None:
            peak = max(peak or 0.0, float(record["gpu_mem_peak_gb"]))
        if record.get("frames_per_s"):
            steps_s += (record["step"] - previous) * frames_per_step / float(record["frames_per_s"])
        previous, steps = record["step"], record["step"]
    return {"train_peak_gpu_gb": peak, "train_steps_s": round(steps_s, 2) if frames_per_step else None,
            "train_steps": steps}


def selection_rule(run: Path) -> str | None:
    """How a run's evaluated checkpoint is chosen, as a rule (the same words for every cell that
    follows it): best/ on held-out training videos, or the end of a fixed schedule."""
    config = run_dir.read_run_config(run)
    if not config:
        return None
    fraction = float(config.get("val_fraction") or 0)
    if fraction <= 0:
        return f"the final model of a fixed schedule ({config.get('epochs')} epochs)"
    metric = config.get("val_metric") or "auto"
    if metric == "auto":
        metric = "frame_auc" if config.get("val_annotations") else "retrieval"
    every = int(config.get("val_every") or 0)
    return (f"best/ by {metric} on {fraction:.0%} of the training videos held out, scored "
            + (f"every {every} steps" if every else "at every checkpoint"))


def cell_row(cell_plan: CellPlan) -> dict:
    """One results.csv row: the cell's variant, seed, every metric, its times and its report."""
    cell = cell_plan.cell
    train, evaluation = cell_plan.stage("train"), cell_plan.stage("eval")
    row: dict = {"cell": cell.name, "group": cell.group, "variant": cell.variant, "seed": cell.seed}
    row.update({axis: label for axis, label in cell.labels})
    report = _read_json(evaluation.output / "report.json")
    model = next((m for m in (report or {}).get("models", []) if m.get("role") == "checkpoint"), None)
    if model is not None:
        metrics = model["metrics"]
        row.update({key: metrics.get(key) for key in ("auc", "ap", "ap_trapezoid", "auc_anomalous_videos",
                                                     "false_alarm_rate")})
        row.update(recall_false_alarms(metrics))
        row["eval_frames_per_s"] = model.get("timing", {}).get("stored_frames_per_s")
        row["selection"] = model.get("selection")
        row["convention"] = (report.get("ground_truth") or {}).get("convention")
    row.update(training_figures(train.output))
    row["selection_rule"] = selection_rule(train.output)
    frames = cell_plan.stage("frames")
    row["frames_wall_s"] = _wall_s(frames.output) if frames else None
    row["train_wall_s"] = _wall_s(train.output)
    row["eval_wall_s"] = _wall_s(evaluation.output)
    parts = [row["train_wall_s"], row["eval_wall_s"]]
    row["cell_wall_s"] = round(sum(parts), 2) if all(p is not None for p in parts) else None
    row["report"] = str(evaluation.output / "report.md") if report else ""
    row["run"] = str(train.output)
    return row


def collect_rows(plan: ExperimentPlan) -> list[dict]:
    """Every cell's row; paths relative to the experiment folder (the tables' links work where it is)."""
    rows = [cell_row(cell_plan) for cell_plan in plan.cells]
    for row in rows:
        for key in ("report", "run"):
            if row[key]:
                row[key] = os.path.relpath(row[key], plan.root)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in columns})


@dataclass
class Summary:
    """One variant's column over its seeds."""

    mean: float | None
    std: float | None
    n: int


def summarise(values: list) -> Summary:
    numbers = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not numbers:
        return Summary(None, None, 0)
    return Summary(statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else None, len(numbers))


def _groups(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """{table group: {variant: rows over seeds}}, in the rows' order."""
    tables: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        tables.setdefault(row["group"], {}).setdefault(row["variant"], []).append(row)
    return tables


def _columns(rows: list[dict]) -> list[Column]:
    """The table columns any row has a value for."""
    return [c for c in TABLE_COLUMNS if any(row.get(c.key) is not None for row in rows)]


def _cells(variants: dict[str, list[dict]], columns: list[Column]) -> tuple[dict, dict]:
    """Summaries per (variant, column) and the best mean of each column."""
    summaries = {(v, c.key): summarise([r.get(c.key) for r in rows]) for v, rows in variants.items() for c in columns}
    best = {}
    for c in columns:
        means = [summaries[(v, c.key)].mean for v in variants if summaries[(v, c.key)].mean is not None]
        if means:
            best[c.key] = max(means) if c.better == "high" else min(means)
    return summaries, best


def _shown(summary: Summary, column: Column, plus_minus: str) -> str:
    if summary.mean is None:
        return "–"
    text = f"{summary.mean * column.scale:.{column.digits}f}"
    if summary.std is not None:
        text += f" {plus_minus} {summary.std * column.scale:.{column.digits}f}"
    return text


def caption(rows: list[dict], spec_caption: str = "") -> str:
    """Seeds, the selection rule and the ground-truth convention, as the reports state them."""
    seeds = sorted({row["seed"] for row in rows})
    selections = sorted({str(row["selection_rule"]) for row in rows if row.get("selection_rule")})
    conventions = sorted({str(row["convention"]) for row in rows if row.get("convention")})
    parts = [f"Mean ± std over {len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))}); "
             f"best of each column in bold."]
    if selections:
        parts.append("Checkpoint: " + "; ".join(selections) + "; the test split never used to choose.")
    if conventions:
        parts.append("Ground truth: frame labels from the official temporal annotation, intervals "
                     + ", ".join(conventions) + "; frame AUC over all test frames concatenated.")
    if spec_caption:
        parts.append(spec_caption)
    return " ".join(parts)


def markdown_tables(rows: list[dict], title: str, spec_caption: str = "") -> str:
    out = [f"# {title}", "", caption(rows, spec_caption), ""]
    for group, variants in _groups(rows).items():
        columns = _columns([r for rs in variants.values() for r in rs])
        summaries, best = _cells(variants, columns)
        if group:
            out += [f"## {group}", ""]
        out.append("| variant | " + " | ".join(c.title.replace("\\%", "%").replace("$_A$", " anomalous") for c in columns)
                   + " | seeds | reports |")
        out.append("|---|" + "---:|" * len(columns) + "---:|---|")
        for variant, members in variants.items():
            values = []
            for c in columns:
                text = _shown(summaries[(variant, c.key)], c, "±")
                bold = summaries[(variant, c.key)].mean is not None and summaries[(variant, c.key)].mean == best.get(c.key)
                values.append(f"**{text}**" if bold and len(variants) > 1 else text)
            links = " ".join(f"[s{r['seed']}]({r['report']})" for r in members if r.get("report"))
            out.append(f"| {variant} | " + " | ".join(values) + f" | {len(members)} | {links} |")
        out.append("")
    return "\n".join(out)


def _tex_escape(text: str) -> str:
    for char, escaped in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#"),
                          ("$", "\\$"), ("{", "\\{"), ("}", "\\}")):
        text = text.replace(char, escaped)
    return text


def latex_tables(rows: list[dict], title: str, spec_caption: str = "") -> str:
    """booktabs tables (one per group), the caption on each."""
    out = ["% generated by `fgclip-vad experiment`; needs \\usepackage{booktabs}"]
    for group, variants in _groups(rows).items():
        columns = _columns([r for rs in variants.values() for r in rs])
        summaries, best = _cells(variants, columns)
        name = f"{title}: {group}" if group else title
        members = [r for rs in variants.values() for r in rs]
        text_caption = _tex_escape(caption(members, spec_caption)).replace("±", "$\\pm$")
        out += ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex_escape(name)}. {text_caption}}}",
                "\\begin{tabular}{l" + "c" * len(columns) + "}", "\\toprule",
                "Variant & " + " & ".join(c.title for c in columns) + " \\\\", "\\midrule"]
        for variant, _ in variants.items():
            values = []
            for c in columns:
                summary = summaries[(variant, c.key)]
                text = _shown(summary, c, "$\\pm$")
                if text == "–":
                    text = "--"
                elif summary.mean == best.get(c.key) and len(variants) > 1:
                    text = f"\\textbf{{{text}}}"
                values.append(text)
            out.append(f"{_tex_escape(variant)} & " + " & ".join(values) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def write_results(plan: ExperimentPlan) -> dict[str, Path]:
    """results.csv, table.md and table.tex in the experiment's folder; their paths."""
    rows = collect_rows(plan)
    paths = {"csv": plan.root / "results.csv", "md": plan.root / "table.md", "tex": plan.root / "table.tex"}
    write_csv(rows, paths["csv"])
    paths["md"].write_text(markdown_tables(rows, plan.spec.name, plan.spec.caption) + "\n", encoding="utf-8")
    paths["tex"].write_text(latex_tables(rows, plan.spec.name, plan.spec.caption) + "\n", encoding="utf-8")
    return paths
