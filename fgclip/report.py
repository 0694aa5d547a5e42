"""What `fgclip-vad eval` leaves behind, under its output directory:

    report.json        every number, the configuration, checkpoint paths, conventions, coverage
    report.md          the comparison table (each checkpoint and the baseline), per-class AUC, spatial
                       metric, setup
    report.html        the same, self-contained (images inlined): open it in a browser
    plots/roc.png      frame-level ROC curves of every model
    plots/per_class_auc.png
    plots/videos/<video>.png   score over frame number per model, ground-truth intervals shaded
    plots/heat/<video>.png     per anomalous video: patch maps at the score's peak and inside the
                               ground truth, one row per model (event boxes dashed where known)
    scores/<model>.npz raw snippet scores per video (before smoothing), to recompute anything
    tensorboard/<model>/       headline scalars (`tensorboard --logdir <out dir>`)

Plots use matplotlib's Agg canvas directly (no pyplot, no display needed).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc

from fgclip.metrics import VideoFrames, roc_points

BASELINE_STYLE = {"color": "0.45", "linestyle": "--"}


def safe_name(name: str) -> str:
    """A model or video name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def write_report(out_dir: Path, report: dict, frame_results: dict[str, list[VideoFrames]],
                 raw_scores: dict[str, dict[str, np.ndarray]], *, video_plots: bool = True,
                 heat_strips: tuple[list, dict] = ([], {})) -> None:
    """Write every output listed in the module docstring; `report` gains an "outputs" entry.

    `heat_strips`: (`fgclip.eval_maps` plans, {model name: ModelMaps}) for plots/heat/."""
    from fgclip.report_html import render_html
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roles = {m["name"]: m["role"] for m in report["models"]}
    outputs = {
        "report_json": "report.json",
        "report_md": "report.md",
        "roc_plot": "plots/roc.png",
        "per_class_plot": "plots/per_class_auc.png",
        "video_plots": "plots/videos/" if video_plots else None,
        "heat_strips": {},
        "report_html": "report.html",
        "scores": {name: f"scores/{safe_name(name)}.npz" for name in raw_scores},
        "tensorboard": "tensorboard/",
    }
    report["outputs"] = outputs
    plot_roc(frame_results, roles, out_dir / outputs["roc_plot"])
    plot_per_class_auc(report["models"], out_dir / outputs["per_class_plot"])
    if video_plots:
        plot_videos(frame_results, roles, out_dir / "plots" / "videos")
    plans, model_maps = heat_strips
    for plan in plans:
        relative = f"plots/heat/{safe_name(plan.key)}.png"
        plot_heat_strip(plan, model_maps, out_dir / relative)
        outputs["heat_strips"][plan.key] = relative
    for name, per_video in raw_scores.items():
        path = out_dir / outputs["scores"][name]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **per_video)
    write_tensorboard(out_dir / "tensorboard", report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(report, out_dir), encoding="utf-8")


# --- plots ------------------------------------------------------------------------------------------


def _style(name: str, roles: dict[str, str]) -> dict:
    return dict(BASELINE_STYLE) if roles.get(name) == "baseline" else {}


def _save(fig: Figure, path: Path, dpi: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)


def plot_roc(frame_results: dict[str, list[VideoFrames]], roles: dict[str, str], path: Path) -> None:
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for name, per_video in frame_results.items():
        points = roc_points(per_video)
        if points is None:
            continue
        fpr, tpr = points
        area = float(auc(fpr, tpr))
        ax.plot(fpr, tpr, label=f"{name} (AUC {area:.3f})", **_style(name, roles))
    ax.plot([0, 1], [0, 1], color="0.8", linewidth=0.8)
    ax.set(xlabel="false positive rate (frames)", ylabel="true positive rate (frames)", xlim=(0, 1), ylim=(0, 1),
           title="Frame-level ROC, all test videos")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_per_class_auc(models: list[dict], path: Path) -> None:
    classes = sorted({c for m in models for c in m["metrics"]["per_class_auc"]})
    fig = Figure(figsize=(max(6.0, 0.6 * len(classes) * max(1, len(models)) ** 0.5 + 2), 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    x = np.arange(len(classes))
    for i, model in enumerate(models):
        values = [model["metrics"]["per_class_auc"].get(c) for c in classes]
        heights = [np.nan if v is None else v for v in values]
        style = {"color": "0.6", "hatch": "//"} if model["role"] == "baseline" else {}
        ax.bar(x + (i - (len(models) - 1) / 2) * width, heights, width, label=model["name"], **style)
    ax.axhline(0.5, color="0.3", linewidth=0.8, linestyle=":")
    ax.set_xticks(x, classes, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="frame AUC (class videos + normal videos)", ylim=(0, 1), title="Per-class AUC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _step_points(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The change points of a piecewise-constant frame curve (one per snippet, not one per frame)."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(scores)) + 1])
    x = np.concatenate([starts, [len(scores)]])
    y = np.concatenate([scores[starts], scores[-1:]])
    return x, y


def plot_videos(frame_results: dict[str, list[VideoFrames]], roles: dict[str, str], out_dir: Path) -> None:
    """One PNG per test video: every model's score curve over frame number, ground truth shaded."""
    names = list(frame_results)
    if not names:
        return
    fig = Figure(figsize=(11, 2.8))
    for i, first in enumerate(frame_results[names[0]]):
        fig.clear()
        ax = fig.add_subplot()
        for j, (start, end) in enumerate(_runs(first.gt)):
            ax.axvspan(start, end, color="tab:red", alpha=0.18, linewidth=0, label="ground truth" if j == 0 else None)
        for name in names:
            x, y = _step_points(frame_results[name][i].scores)
            ax.plot(x, y, drawstyle="steps-post", linewidth=1.2, label=name, **_style(name, roles))
        # A little room above 1.0: a curve at the maximum stays visible instead of hiding in the frame.
        ax.set(xlim=(0, len(first.scores)), ylim=(-0.02, 1.05), xlabel="frame", ylabel="anomaly score",
               title=f"{first.video} ({first.label})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
        fig.tight_layout()
        _save(fig, out_dir / f"{safe_name(first.video)}.png", dpi=80)


def plot_heat_strip(plan, model_maps: dict, path: Path) -> None:
    """One anomalous video's strip: its planned frames with each model's patch map, a row per model."""
    from fgclip.overlay import Tile, draw_tile_grid

    boxes_of_row = dict(zip(plan.boxed_rows, plan.boxed_boxes))
    kinds = ["peak"] + ["in GT"] * (len(plan.strip_rows) - 1)
    rows, labels = [], []
    for name, maps in model_maps.items():
        rows.append([
            Tile(frame, maps.strip_maps[plan.key][k],
                 f"{kind} f{frame_number}: {maps.strip_scores[plan.key][k]:.2f}\n{maps.strip_classes[plan.key][k]}",
                 boxes_of_row.get(row))
            for k, (frame, row, frame_number, kind) in enumerate(zip(plan.strip_frames, plan.strip_rows,
                                                                    plan.strip_frame_numbers, kinds))
        ])
        labels.append(name)
    draw_tile_grid(rows, path, title=f"{plan.key} ({plan.label}): patch maps, frame score and top class",
                   row_labels=labels, tile_inches=1.6)


# --- TensorBoard --------------------------------------------------------------------------------------

HEADLINE_METRICS = ("auc", "auc_anomalous_videos", "ap", "ap_trapezoid", "false_alarm_rate")


def write_tensorboard(log_dir: Path, report: dict) -> None:
    """Headline and per-class scalars, one run per model, at the checkpoint's training step."""
    from torch.utils.tensorboard import SummaryWriter

    for model in report["models"]:
        writer = SummaryWriter(log_dir=str(Path(log_dir) / safe_name(model["name"])))
        step = model["step"] or 0
        try:
            for key in HEADLINE_METRICS:
                value = model["metrics"].get(key)
                if value is not None:
                    writer.add_scalar(f"eval/{key}", value, step)
            for label, value in model["metrics"]["per_class_auc"].items():
                if value is not None:
                    writer.add_scalar(f"eval_per_class_auc/{label}", value, step)
            spatial = model.get("spatial")
            if spatial and spatial["frames"]:
                writer.add_scalar("eval/pointing_game", spatial["pointing_game"], step)
            writer.add_text("eval/headline", report["headline"], step)
        finally:
            writer.close()


# --- the report's content, rendered as markdown (report.md) and HTML (fgclip.report_html) -------------


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@dataclass
class Block:
    """One piece of the report. kind: "heading" (text), "text" (text, inline `code` and **bold**),
    "table" (header, rows), "list" (items; an item starting with two spaces is nested), "image"
    (text = alt, path), "gallery" (text = one-line summary for markdown, images = [(alt, path)])."""

    kind: str
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    path: str = ""
    images: list[tuple[str, str]] = field(default_factory=list)


FIXED_THRESHOLD_CAVEAT = ("The rate at a fixed 0.5 is shown for comparison only: a softmax over 1 + C prompts is not "
                          "calibrated, so 0.5 does not mean 'as likely anomalous as not'.")


def auc_delta(model: dict, baseline: dict | None) -> str:
    """Frame AUC of `model` minus the baseline's, signed; empty for the baseline itself or when undefined."""
    if baseline is None or model is baseline or model["metrics"]["auc"] is None or baseline["metrics"]["auc"] is None:
        return ""
    return f"{model['metrics']['auc'] - baseline['metrics']['auc']:+.4f}"


def _summary_blocks(report: dict) -> list[Block]:
    models = report["models"]
    baseline = next((m for m in models if m["role"] == "baseline"), None)
    first = models[0]["metrics"]
    recall = f"{first['target_recall']:.0%}"
    header = ["model", "role", "frame AUC", "AUC (anomalous videos)", "AP (step-wise)", "AP (trapezoid)",
              f"false alarms @ {recall} recall (threshold)",
              f"false alarms @{first['false_alarm_threshold']}", "AUC vs baseline", "stored frames/s"]
    rows = []
    for m in models:
        met = m["metrics"]
        rows.append([m["name"], m["role"], _fmt(met["auc"]), _fmt(met["auc_anomalous_videos"]), _fmt(met["ap"]),
                     _fmt(met.get("ap_trapezoid")),
                     f"{_fmt(met['false_alarm_rate_at_recall'])} ({_fmt(met['threshold_at_recall'], 3)})",
                     _fmt(met["false_alarm_rate"]), auc_delta(m, baseline),
                     str(m["timing"]["stored_frames_per_s"] or "n/a")])
    return [
        Block("table", header=header, rows=rows),
        Block("text", f"{first['num_videos']} videos ({first['num_anomalous_videos']} anomalous, "
                      f"{first['num_normal_videos']} normal), {first['num_frames']:,} frames "
                      f"({first['num_anomalous_frames']:,} anomalous)."),
        Block("text", f"False alarms @ {recall} recall: {report['ground_truth']['false_alarm_rate_at_recall']}. "
                      + FIXED_THRESHOLD_CAVEAT),
    ]


def _per_class_blocks(report: dict) -> list[Block]:
    models = report["models"]
    classes = sorted({c for m in models for c in m["metrics"]["per_class_auc"]})
    if not classes:
        return []
    first = models[0]["metrics"]
    foreign = report.get("training_caption_scripts", {})

    def name(c: str) -> str:
        return f"{c} (trained on {' and '.join(foreign[c])} captions)" if c in foreign else c

    rows = [[name(c), str(first["per_class_videos"].get(c, 0))] + [_fmt(m["metrics"]["per_class_auc"].get(c)) for m in models]
            for c in classes]
    return [Block("heading", "Per-class AUC"), Block("text", "(" + report["ground_truth"]["per_class_auc"] + ")"),
            Block("table", header=["class", "videos"] + [m["name"] for m in models], rows=rows)]


def _spatial_blocks(report: dict) -> list[Block]:
    """The spatial metric: a table per model, or the sentence saying why there is none."""
    blocks = [Block("heading", "Spatial metric (patch maps vs event boxes)"),
              Block("text", report["config"].get("spatial") or "not computed")]
    rows = [m for m in report["models"] if m.get("spatial") and m["spatial"]["frames"]]
    if not rows:
        return blocks
    blocks.append(Block("text", "Pointing game: the map's peak inside an event box, on anomalous frames with boxes; "
                                "chance: the boxes' share of the frame (a random point's hit rate)."))
    blocks.append(Block("table", header=["model", "role", "frames", "pointing game", "chance", "mean map inside boxes",
                                         "outside"],
                        rows=[[m["name"], m["role"], str(m["spatial"]["frames"]), _fmt(m["spatial"]["pointing_game"], 3),
                               _fmt(m["spatial"]["chance"], 3), _fmt(m["spatial"]["mean_map_inside"], 3),
                               _fmt(m["spatial"]["mean_map_outside"], 3)] for m in rows]))
    classes = sorted({c for m in rows for c in m["spatial"]["per_class"]})

    def cell(entry: dict | None) -> str:
        if not entry or not entry["frames"]:
            return "n/a"
        return f"{entry['pointing_game']:.3f} ({entry['chance']:.3f}, {entry['frames']} frames)"

    blocks.append(Block("text", "Pointing game per class (chance, frames):"))
    blocks.append(Block("table", header=["class"] + [m["name"] for m in rows],
                        rows=[[c] + [cell(m["spatial"]["per_class"].get(c)) for m in rows] for c in classes]))
    return blocks


def _selection_blocks(report: dict) -> list[Block]:
    selection = report.get("selection")
    if not selection:
        return []
    blocks = [Block("heading", "Checkpoint selection"), Block("text", selection["note"])]
    if selection["on_test_set"]:
        blocks.append(Block("list", items=[f"{name}: {how}" for name, how in selection["models"].items()]))
    return blocks


def _setup_blocks(report: dict) -> list[Block]:
    models, config, gt = report["models"], report["config"], report["ground_truth"]
    items = [f"Test shards: `{config['test_shards']}`; annotations: `{config['annotations']}`",
             f"Ground truth: convention **{gt['convention']}** ({gt['meaning']}); frame counts: {gt['frame_counts']}",
             *(f"Score ({objective} family): {definition}" for objective, definition in config["score"].items()),
             "Scale (and bias) per model: " +
             ", ".join(f"{m['name']} ({m.get('family', 'clip')}) {m['temperature']:.2f}"
                       + (f" / bias {m['logit_bias']:.2f}" if m.get("logit_bias") is not None else "") for m in models),
             "Prompt templates: " + "; ".join(f"`{t}`" for t in config["prompt_templates"]) +
             f"; normal phrase: `{config['normal_phrase']}`",
             f"Temporal smoothing: **{config['smoothing']}**",
             f"Patch maps: {config.get('patch_map') or 'off'}",
             f"Expansion: {config['expansion']}",
             f"False alarm rate: {gt['false_alarm_rate']}",
             f"Device: {config['device']} ({config['precision']}), batch {config['batch_frames']} frames",
             "Models:"]
    items += [f"  {m['name']}: `{m['path']}`" + (f" (from `{m['given']}`)" if m["given"] != m["path"] else "")
              for m in models]
    return [Block("heading", "Setup"), Block("list", items=items)]


def _coverage_blocks(report: dict) -> list[Block]:
    coverage, gt = report["coverage"], report["ground_truth"]
    blocks = [Block("heading", "Coverage"),
              Block("text", f"{coverage['evaluated_videos']} of {coverage['annotated_videos']} annotated test videos "
                            f"evaluated; {coverage['videos_in_shards']} videos in the shards.")]
    if coverage["missing_from_shards"]:
        blocks += [Block("text", f"Missing from the shards ({len(coverage['missing_from_shards'])}, not scored):"),
                   Block("list", items=[f"{m['video']} ({m['label']}): {m['reason']}"
                                        for m in coverage["missing_from_shards"]])]
    if coverage["not_annotated"]:
        blocks += [Block("text", f"In the shards without annotation ({len(coverage['not_annotated'])}, not scored):"),
                   Block("list", items=[f"{m['video']} ({m['label']})" for m in coverage["not_annotated"]])]
    if coverage["duplicates_in_shards"]:
        blocks.append(Block("text", "Duplicate records in the shards (first copy used): " +
                            ", ".join(d["video"] for d in coverage["duplicates_in_shards"])))
    if gt["intervals_cut_at_video_end"]:
        blocks.append(Block("text", "Annotated intervals that run past the video's last frame (cut there): " +
                            ", ".join(f"{c['video']} {c['ranges']} of {c['num_frames']} frames"
                                      for c in gt["intervals_cut_at_video_end"])))
    return blocks


def _plot_blocks(report: dict) -> list[Block]:
    outputs = report["outputs"]
    blocks = [Block("heading", "Plots"), Block("image", "ROC", path=outputs["roc_plot"]),
              Block("image", "Per-class AUC", path=outputs["per_class_plot"])]
    if outputs.get("video_plots"):
        curves = [(v["video"], f"{outputs['video_plots']}{safe_name(v['video'])}.png") for v in report["videos"]]
        blocks.append(Block("gallery", "Score curves per video: `plots/videos/<video>.png`.", images=curves))
    strips = outputs.get("heat_strips") or {}
    if strips:
        blocks += [Block("heading", "Heat strips"),
                   Block("text", "Per anomalous test video: patch maps at the first model's score peak and inside the "
                                 "ground truth, one row per model (colour: 1 - P(normal) per patch, 0 to 1; dashed: "
                                 "event boxes).")]
        blocks += [Block("image", video, path=relative) for video, relative in strips.items()]
    return blocks


def report_blocks(report: dict) -> list[Block]:
    """Everything report.md and report.html show, in order, after the title and headline."""
    return (_summary_blocks(report) + _per_class_blocks(report) + _spatial_blocks(report) + _selection_blocks(report)
            + _setup_blocks(report)
            + _coverage_blocks(report) + _plot_blocks(report))


def report_title(report: dict) -> str:
    return f"{report.get('dataset', {}).get('title', 'UCF-Crime')} evaluation"


def render_markdown(report: dict) -> str:
    lines = [f"# {report_title(report)}", "", f"**{report['headline']}**", ""]
    for block in report_blocks(report):
        if block.kind == "heading":
            lines += [f"## {block.text}", ""]
        elif block.kind in ("text", "gallery"):
            lines += [block.text, ""]
        elif block.kind == "table":
            lines += ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            lines.append("")
        elif block.kind == "list":
            lines += [("  * " + item[2:]) if item.startswith("  ") else f"* {item}" for item in block.items]
            lines.append("")
        elif block.kind == "image":
            lines += [f"![{block.text}]({block.path})", ""]
    return "\n".join(lines)
