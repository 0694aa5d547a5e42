"""The report's content: the blocks of `report.md` and `report.html` (`fgclip.eval.report_html`)
built from report.json's dict, and the markdown rendering. Knows file names, draws nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def safe_name(name: str) -> str:
    """A model or video name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"



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


def _mean_std(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def _head_blocks(report: dict) -> list[Block]:
    """Heads on snippet features (`fgclip-vad eval --head`) beside prompt scoring: both ground truths."""
    heads = report.get("heads") or []
    if not heads:
        return []
    header = ["row", "seeds", "frame AUC (anchors' T x 16)", "frame AUC (our exact frames)", "AP (anchors)",
              "AP (exact)", "false alarms @ 95% recall (exact)", "detection mAP IoU 0.1-0.5 (anchors)"]
    rows = [[f"prompt scoring: {m['name']}", "-", "n/a", _fmt(m["metrics"]["auc"]), "n/a", _fmt(m["metrics"]["ap"]),
             _fmt(m["metrics"].get("false_alarm_rate_at_recall_95")), "n/a"] for m in report["models"]]
    for head in heads:
        summary = head["summary"]
        anchors, exact = summary.get("anchors", {}), summary.get("exact", {})
        rows.append([head["name"], str(len(head["seeds"])), _mean_std(anchors.get("auc")), _mean_std(exact.get("auc")),
                     _mean_std(anchors.get("ap")), _mean_std(exact.get("ap")),
                     _mean_std(exact.get("false_alarm_rate_at_recall_95")), _mean_std(anchors.get("detection_map"))])
    items = []
    for head in heads:
        items.append(f"{head['name']} ({head['run']}, test crop: {head['test_crop']}):")
        for seed in head["seeds"]:
            values = ", ".join(f"{gt} AUC {_fmt(m['auc'])}" for gt, m in seed["metrics"].items())
            chosen = seed["selection"]["epoch"] if seed.get("selection") else "end of schedule"
            items.append(f"  seed {seed['seed']}: {values} (epoch: {chosen})")
    return [
        Block("heading", "Heads on snippet features"),
        Block("text", "Mean ± std over each head run's seeds. Ground truths: **anchors' T x 16** (VadCLIP's gt_<dataset>.npy: "
                      "T x 16 frames per video, the published numbers' construction) and **our exact frames** (each "
                      "video's true frame count). Prompt scoring scores stage 1's test shards, so it has the exact "
                      "construction only. Each head was chosen on training data (fixed schedule or held-out training "
                      "videos), never on the test set; detection mAP is class-agnostic."),
        Block("table", header=header, rows=rows),
        Block("list", items=items),
    ]


def report_blocks(report: dict) -> list[Block]:
    """Everything report.md and report.html show, in order, after the title and headline."""
    return (_summary_blocks(report) + _head_blocks(report) + _per_class_blocks(report) + _spatial_blocks(report) + _selection_blocks(report)
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
