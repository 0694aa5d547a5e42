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
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc

from fgclip.eval.metrics import VideoFrames, roc_points
from fgclip.eval.overlay import Tile, draw_tile_grid
from fgclip.eval.report_content import render_markdown, safe_name
from fgclip.eval.report_html import render_html

BASELINE_STYLE = {"color": "0.45", "linestyle": "--"}


def write_report(out_dir: Path, report: dict, frame_results: dict[str, list[VideoFrames]],
                 raw_scores: dict[str, dict[str, np.ndarray]], *, video_plots: bool = True,
                 heat_strips: tuple[list, dict] = ([], {})) -> None:
    """Write every output listed in the module docstring; `report` gains an "outputs" entry.

    `heat_strips`: (`fgclip.eval.heat_strips` plans, {model name: ModelMaps}) for plots/heat/."""
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


def rewrite_documents(out_dir: Path, report: dict) -> None:
    """report.json, report.md and report.html again from `report` (rows added after scoring: heads)."""
    out_dir = Path(out_dir)
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
