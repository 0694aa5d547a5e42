"""What `fgclip-vad eval` leaves behind, under its output directory:

    report.json        every number, the configuration, checkpoint paths, conventions, coverage
    report.md          the comparison table (each checkpoint and the baseline), per-class AUC, setup
    plots/roc.png      frame-level ROC curves of every model
    plots/per_class_auc.png
    plots/videos/<video>.png   score over frame number per model, ground-truth intervals shaded
    scores/<model>.npz raw snippet scores per video (before smoothing), to recompute anything
    tensorboard/<model>/       headline scalars (`tensorboard --logdir <out dir>`)

Plots use matplotlib's Agg canvas directly (no pyplot, no display needed).
"""

from __future__ import annotations

import json
import re
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
                 raw_scores: dict[str, dict[str, np.ndarray]], *, video_plots: bool = True) -> None:
    """Write every output listed in the module docstring; `report` gains an "outputs" entry."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roles = {m["name"]: m["role"] for m in report["models"]}
    outputs = {
        "report_json": "report.json",
        "report_md": "report.md",
        "roc_plot": "plots/roc.png",
        "per_class_plot": "plots/per_class_auc.png",
        "video_plots": "plots/videos/" if video_plots else None,
        "scores": {name: f"scores/{safe_name(name)}.npz" for name in raw_scores},
        "tensorboard": "tensorboard/",
    }
    report["outputs"] = outputs
    plot_roc(frame_results, roles, out_dir / outputs["roc_plot"])
    plot_per_class_auc(report["models"], out_dir / outputs["per_class_plot"])
    if video_plots:
        plot_videos(frame_results, roles, out_dir / "plots" / "videos")
    for name, per_video in raw_scores.items():
        path = out_dir / outputs["scores"][name]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **per_video)
    write_tensorboard(out_dir / "tensorboard", report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")


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
        ax.set(xlim=(0, len(first.scores)), ylim=(0, 1), xlabel="frame", ylabel="anomaly score",
               title=f"{first.video} ({first.label})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
        fig.tight_layout()
        _save(fig, out_dir / f"{safe_name(first.video)}.png", dpi=80)


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
            writer.add_text("eval/headline", report["headline"], step)
        finally:
            writer.close()


# --- markdown -----------------------------------------------------------------------------------------


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict) -> str:
    models = report["models"]
    baseline = next((m for m in models if m["role"] == "baseline"), None)
    config, gt, coverage = report["config"], report["ground_truth"], report["coverage"]
    title = report.get("dataset", {}).get("title", "UCF-Crime")
    lines = [f"# {title} evaluation", "", f"**{report['headline']}**", ""]

    lines += ["| model | role | frame AUC | AUC (anomalous videos) | AP (step-wise) | AP (trapezoid) | false alarms @" +
              f"{models[0]['metrics']['false_alarm_threshold']} | AUC vs baseline | stored frames/s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        met = m["metrics"]
        delta = ""
        if baseline is not None and m is not baseline and met["auc"] is not None and baseline["metrics"]["auc"] is not None:
            delta = f"{met['auc'] - baseline['metrics']['auc']:+.4f}"
        lines.append(f"| {m['name']} | {m['role']} | {_fmt(met['auc'])} | {_fmt(met['auc_anomalous_videos'])} | "
                     f"{_fmt(met['ap'])} | {_fmt(met.get('ap_trapezoid'))} | {_fmt(met['false_alarm_rate'])} | {delta} | "
                     f"{m['timing']['stored_frames_per_s'] or 'n/a'} |")
    first = models[0]["metrics"]
    lines += ["", f"{first['num_videos']} videos ({first['num_anomalous_videos']} anomalous, "
                  f"{first['num_normal_videos']} normal), {first['num_frames']:,} frames "
                  f"({first['num_anomalous_frames']:,} anomalous).", ""]

    classes = sorted({c for m in models for c in m["metrics"]["per_class_auc"]})
    if classes:
        lines += ["## Per-class AUC", "", "(" + gt["per_class_auc"] + ")", "",
                  "| class | videos | " + " | ".join(m["name"] for m in models) + " |",
                  "|---|---|" + "---|" * len(models)]
        foreign = report.get("training_caption_scripts", {})
        for c in classes:
            videos = first["per_class_videos"].get(c, 0)
            name = f"{c} (trained on {' and '.join(foreign[c])} captions)" if c in foreign else c
            lines.append(f"| {name} | {videos} | " + " | ".join(_fmt(m["metrics"]["per_class_auc"].get(c)) for m in models) + " |")
        lines.append("")

    selection = report.get("selection")
    if selection:
        lines += ["## Checkpoint selection", "", selection["note"], ""]
        if selection["on_test_set"]:
            lines += [f"* {name}: {how}" for name, how in selection["models"].items()] + [""]

    lines += ["## Setup", "",
              f"* Test shards: `{config['test_shards']}`; annotations: `{config['annotations']}`",
              f"* Ground truth: convention **{gt['convention']}** ({gt['meaning']}); frame counts: {gt['frame_counts']}",
              *(f"* Score ({objective} family): {definition}" for objective, definition in config["score"].items()),
              "* Scale (and bias) per model: " +
              ", ".join(f"{m['name']} ({m.get('family', 'clip')}) {m['temperature']:.2f}"
                        + (f" / bias {m['logit_bias']:.2f}" if m.get("logit_bias") is not None else "") for m in models),
              f"* Prompt templates: " + "; ".join(f"`{t}`" for t in config["prompt_templates"]) +
              f"; normal phrase: `{config['normal_phrase']}`",
              f"* Temporal smoothing: **{config['smoothing']}**",
              f"* Expansion: {config['expansion']}",
              f"* False alarm rate: {gt['false_alarm_rate']}",
              f"* Device: {config['device']} ({config['precision']}), batch {config['batch_frames']} frames",
              "* Models:"]
    lines += [f"  * {m['name']}: `{m['path']}`" + (f" (from `{m['given']}`)" if m["given"] != m["path"] else "")
              for m in models]
    lines.append("")

    lines += ["## Coverage", "",
              f"{coverage['evaluated_videos']} of {coverage['annotated_videos']} annotated test videos evaluated; "
              f"{coverage['videos_in_shards']} videos in the shards.", ""]
    if coverage["missing_from_shards"]:
        lines += [f"Missing from the shards ({len(coverage['missing_from_shards'])}, not scored):", ""]
        lines += [f"* {m['video']} ({m['label']}): {m['reason']}" for m in coverage["missing_from_shards"]]
        lines.append("")
    if coverage["not_annotated"]:
        lines += [f"In the shards without annotation ({len(coverage['not_annotated'])}, not scored):", ""]
        lines += [f"* {m['video']} ({m['label']})" for m in coverage["not_annotated"]]
        lines.append("")
    if coverage["duplicates_in_shards"]:
        lines += [f"Duplicate records in the shards (first copy used): " +
                  ", ".join(d["video"] for d in coverage["duplicates_in_shards"]), ""]
    if gt["intervals_cut_at_video_end"]:
        lines += ["Annotated intervals that run past the video's last frame (cut there): " +
                  ", ".join(f"{c['video']} {c['ranges']} of {c['num_frames']} frames" for c in gt["intervals_cut_at_video_end"]),
                  ""]

    lines += ["## Plots", "", "![ROC](plots/roc.png)", "", "![Per-class AUC](plots/per_class_auc.png)", ""]
    if report["outputs"].get("video_plots"):
        lines += ["Score curves per video: `plots/videos/<video>.png`.", ""]
    return "\n".join(lines)
