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
from fgclip.experiments.stages import HEAD_RESULTS, STAGE_RECORD


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


METRIC_KEYS = ("auc", "ap", "ap_trapezoid", "auc_anomalous_videos", "false_alarm_rate")
PROMPT_ROW, HEAD_ROW = "prompt scoring", "head"
# The head's ground truth in the tables: our exact frames, the construction prompt scoring uses too
# (the anchors' T x 16 one is in results.csv with the suffix _anchors).
HEAD_GROUND_TRUTH = "exact"


def _metric_columns(metrics: dict, suffix: str = "") -> dict:
    values = {key: metrics.get(key) for key in METRIC_KEYS}
    values.update(recall_false_alarms(metrics))
    return {key + suffix: value for key, value in values.items()}


def prompt_row(evaluation: Path) -> dict:
    """The metrics of a report's checkpoint model (prompt scoring)."""
    report = _read_json(evaluation / "report.json")
    model = next((m for m in (report or {}).get("models", []) if m.get("role") == "checkpoint"), None)
    if model is None:
        return {"report": ""}
    return {**_metric_columns(model["metrics"]), "eval_frames_per_s": model.get("timing", {}).get("stored_frames_per_s"),
            "selection": model.get("selection"), "convention": (report.get("ground_truth") or {}).get("convention"),
            "report": str(evaluation / "report.md")}


def head_row(heads: Path) -> dict:
    """The metrics of a head run's one seed on the test videos (`train-head`'s test_results.json)."""
    results = _read_json(heads / HEAD_RESULTS)
    seeds = (results or {}).get("seeds") or []
    if not seeds:
        return {"report": ""}
    by_gt = seeds[0].get("metrics", {})
    row = {**_metric_columns(by_gt.get(HEAD_GROUND_TRUTH, {}))}
    for gt, metrics in by_gt.items():
        if gt != HEAD_GROUND_TRUTH:
            row.update(_metric_columns(metrics, f"_{gt}"))
    row.update({"method": results.get("method"), "head_selection_rule": head_selection_rule(heads),
                "convention": results.get("ground_truths", {}).get(HEAD_GROUND_TRUTH), "report": str(heads / HEAD_RESULTS)})
    return row


def head_selection_rule(heads: Path) -> str | None:
    """How a head run chose its head, as a rule: best epoch on held-out training videos, or the end."""
    config = _read_json(heads / run_dir.RUN_CONFIG_NAME)  # a head run's settings (`fgclip.heads.train`)
    if not config:
        return None
    fraction = float(config.get("val_fraction") or 0)
    method = config.get("method", "head")
    if fraction > 0:
        return f"{method} heads: the epoch of best video-level AUC on {fraction:.0%} of the training videos held out"
    return f"{method} heads: the end of a fixed schedule ({config.get('epochs')} epochs)"


def cell_rows(cell_plan: CellPlan) -> list[dict]:
    """The results.csv rows of a cell: one per row kind it reports (prompt scoring, head), each with
    the cell's variant, seed, training figures and times."""
    cell = cell_plan.cell
    train = cell_plan.stage("train")
    common: dict = {"cell": cell.name, "group": cell.group, "variant": cell.variant, "seed": cell.seed}
    common.update({axis: label for axis, label in cell.labels})
    common.update(training_figures(train.output))
    common["selection_rule"] = selection_rule(train.output)
    frames = cell_plan.stage("frames")
    common["frames_wall_s"] = _wall_s(frames.output) if frames else None
    walls = {run.stage: _wall_s(run.output) for run in cell_plan.stages}
    common.update({f"{stage.replace('-', '_')}_wall_s": wall for stage, wall in walls.items()})
    common["cell_wall_s"] = round(sum(walls.values()), 2) if all(w is not None for w in walls.values()) else None
    common["run"] = str(train.output)
    kinds = [(PROMPT_ROW, cell_plan.stage("eval"), prompt_row), (HEAD_ROW, cell_plan.stage("heads"), head_row)]
    kinds = [(kind, run, read) for kind, run, read in kinds if run is not None]
    rows = []
    for kind, run, read in kinds:
        row = {**common, "row": kind, **read(run.output)}
        if len(kinds) > 1:  # one table line per variant and row kind
            row["variant"] = f"{cell.variant} ({kind})"
        rows.append(row)
    return rows


def collect_rows(plan: ExperimentPlan) -> list[dict]:
    """Every cell's rows; paths relative to the experiment folder (the tables' links work where it is)."""
    rows = [row for cell_plan in plan.cells for row in cell_rows(cell_plan)]
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
    head_rules = sorted({str(row["head_selection_rule"]) for row in rows if row.get("head_selection_rule")})
    if head_rules:
        parts.append("Heads on the checkpoint's snippet features: " + "; ".join(head_rules) + ".")
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
