"""`fgclip-vad score`: anomaly scores and heat maps for any video file, no annotation needed.

Per video, the same path as evaluation without shards: stage 1's decoder (`pipeline.decode`)
with stride sampling (one frame per `stride` source frames, the centre of its snippet; squashed
to the model's input size, bicubic, as stage 1 stores test frames), streamed in batches, then
evaluation's prompt scoring (`fgclip.eval.prompts.anomaly_scores`: for CLIP 1 - P(normal) over
{normal, each class}, templates averaged, the model's temperature; the sigmoid family's own rule). Written under OUT/<video>/:

    scores.csv          frame, time_s, score, top_class (+ the baseline's) per scored frame; a
                        frame's score holds for its snippet, frames [k*stride, (k+1)*stride)
    curve.png           score over time, the contact sheet's frames marked
    contact_sheet.png   the highest-scoring frames plus evenly spaced ones, each with its patch
                        map (`fgclip.eval.patch_map`) overlaid and its top class named
    overlay.mp4         (--video) every scored frame with its patch map, at fps / stride

and OUT/summary.json: the settings, each video's peak, and every file skipped with the reason.
The classes of the prompts come from --classes, else from the training data of the checkpoint
(its run's config.json names the shards), else UCF-Crime's 13.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fgclip.eval.evaluate import ModelChoice, choose_models, pick_device
from fgclip.eval.overlay import Tile, draw_tile_grid, heat_overlay
from fgclip.eval.patch_map import PATCH_MAP_DOC, frame_maps
from fgclip.eval.prompts import (ANOMALY_SCORE_DEFINITIONS, NORMAL_PHRASE, PROMPT_TEMPLATES, anomaly_scores,
                                 prompt_embeddings, prompt_logits)
from fgclip.eval.report import BASELINE_STYLE
from fgclip.eval.report_content import safe_name
from fgclip.models.families import load_model_and_tokenizer
from fgclip.run_dir import read_run_config
from pipeline.decode import VideoError, decode_selected, find_ffmpeg, probe_video, stream_selected
from pipeline.sampling import stride_indices
from pipeline.shards import ShardFormatError, iter_record_metas
from pipeline.ucf_split import ANOMALY_CLASSES

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".ts", ".wmv", ".flv", ".3gp")
DEFAULT_STRIDE = 16
TOP_FRAMES = 6  # highest-scoring frames on the contact sheet
EVEN_FRAMES = 6  # evenly spaced frames on the contact sheet
DISPLAY_HEIGHT = 240  # pixels of a contact-sheet / overlay-video frame (width from the video's aspect)


class ScoreError(RuntimeError):
    """Inputs that cannot be scored at all (no videos, a bad option); the message says what to do."""


@dataclass
class ScoringModel:
    """A loaded model with its prompts, ready to score frames."""

    choice: ModelChoice
    model: torch.nn.Module
    prompts: torch.Tensor  # (1 + C, D)
    temperature: torch.Tensor
    bias: torch.Tensor | None  # the sigmoid family's global bias; None for CLIP


@dataclass
class VideoScore:
    """One video's result: a score and top class per scored frame, per model."""

    path: Path
    fps: float
    num_frames: int
    frame_numbers: np.ndarray  # (S,) source frames scored
    stride: int = DEFAULT_STRIDE  # source frames per scored frame
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # model name -> (S,)
    top_class: dict[str, list[str]] = field(default_factory=dict)  # model name -> (S,) class names

    @property
    def time_s(self) -> np.ndarray:
        return self.frame_numbers / self.fps


def find_videos(inputs: Sequence[Path]) -> tuple[list[Path], list[dict]]:
    """Video files named or found (recursively, by suffix) in the directories named; inputs that do
    not exist are returned as skipped, with the reason."""
    videos, skipped = [], []
    for given in inputs:
        given = Path(given)
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                skipped.append({"video": str(given), "reason": f"no video files ({', '.join(VIDEO_SUFFIXES)}) in it"})
            videos += found
        elif given.is_file():
            videos.append(given)
        else:
            skipped.append({"video": str(given), "reason": "no such file or directory"})
    unique = list(dict.fromkeys(videos))
    return unique, skipped


def training_classes(model_or_run_dir: Path) -> list[str] | None:
    """The anomaly classes of the data a checkpoint was trained on (labels of its training shards)."""

    config = read_run_config(Path(model_or_run_dir))
    shards = Path(config["shards"]) if config and config.get("shards") else None
    if shards is None or not shards.is_dir():
        return None
    try:
        labels = {meta.label for meta in iter_record_metas(shards) if meta.is_anomaly}
    except (ShardFormatError, OSError):
        return None
    return sorted(labels) or None


def choose_classes(classes: Sequence[str] | None, checkpoint: Path) -> tuple[list[str], str]:
    """(class names, where they came from)."""

    if classes:
        return list(classes), "--classes"
    learned = training_classes(checkpoint)
    if learned:
        return learned, f"the training shards of {checkpoint}"
    return list(ANOMALY_CLASSES), "UCF-Crime's 13 classes (the checkpoint's training data was not found)"


def load_models(choices: Sequence[ModelChoice], class_names: Sequence[str], device: torch.device, *,
                templates: Sequence[str] = PROMPT_TEMPLATES, normal_phrase: str = NORMAL_PHRASE) -> list[ScoringModel]:

    loaded = []
    for choice in choices:
        model, tokenizer = load_model_and_tokenizer(choice.path)  # either family, its tokenizer checked
        model = model.to(device).eval()
        prompts = prompt_embeddings(model, tokenizer, class_names, device=device, templates=templates,
                                    normal_phrase=normal_phrase)
        with torch.inference_mode():
            temperature = model.temperatures()["global"].float().to(device)
            bias = model.logit_biases().get("global")
        loaded.append(ScoringModel(choice, model, prompts, temperature, None if bias is None else bias.float().to(device)))
    return loaded


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


@torch.inference_mode()
def score_video(path: Path, models: Sequence[ScoringModel], class_names: Sequence[str], *, device: torch.device,
                stride: int = DEFAULT_STRIDE, batch_frames: int = 64, bar=None) -> VideoScore:
    """Scores of every stride frame of one video by every model; VideoError if it cannot be decoded."""
    info = probe_video(path)
    wanted = stride_indices(info.num_frames, stride)
    size = models[0].model.image_size  # a baseline of another input size resizes these in `preprocess`
    result = VideoScore(path=Path(path), fps=info.fps, num_frames=info.num_frames, frame_numbers=wanted, stride=stride)
    scores = {m.choice.name: [] for m in models}
    classes = {m.choice.name: [] for m in models}
    got = []
    for frame_numbers, frames in stream_selected(path, wanted, size=size, batch_frames=batch_frames):
        batch = torch.from_numpy(frames).to(device)
        for m in models:
            with _autocast(device):
                embeds = m.model.encode_frames(m.model.preprocess(batch))
            scores[m.choice.name].append(anomaly_scores(embeds, m.prompts, m.temperature, objective=m.model.objective,
                                                        bias=m.bias).cpu().numpy())
            logits = prompt_logits(embeds, m.prompts, m.temperature).cpu()
            classes[m.choice.name] += [class_names[int(k)] for k in logits[:, 1:].argmax(dim=1)]
        got.append(frame_numbers)
        if bar is not None:
            bar.update(len(frame_numbers))
    if not got:
        raise VideoError(f"{path}: ffmpeg decoded none of its {info.num_frames} frames")
    # A video whose true length is shorter than its header says ends early: score what it holds.
    result.frame_numbers = np.concatenate(got)
    result.scores = {name: np.concatenate(parts) for name, parts in scores.items()}
    result.top_class = classes
    return result


def sheet_frames(scores: np.ndarray, top: int = TOP_FRAMES, even: int = EVEN_FRAMES) -> tuple[list[int], list[int]]:
    """(highest-scoring, evenly spaced) indices into `scores`: the top ones at least a few frames
    apart (so they are not all one event's neighbours), the even ones avoiding those."""
    count = len(scores)
    spacing = max(1, count // (4 * max(1, top)))
    chosen: list[int] = []
    for index in np.argsort(-scores, kind="stable").tolist():
        if len(chosen) == top:
            break
        if all(abs(index - c) >= spacing for c in chosen):
            chosen.append(index)
    evenly = [i for i in np.linspace(0, count - 1, even).round().astype(int).tolist() if i not in chosen]
    return sorted(chosen), sorted(set(evenly))


def _display_size(path: Path) -> tuple[int, int]:
    """(height, width), even numbers (for H.264), the video's displayed aspect."""
    info = probe_video(path)
    height = min(DISPLAY_HEIGHT, info.height) // 2 * 2
    return height, max(2, round(height * info.display_aspect / 2) * 2)


def _unsquash(frames_square: np.ndarray, height: int, width: int) -> np.ndarray:
    """Square display frames back to the video's aspect."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC)) for f in frames_square])


def _caption(result: VideoScore, name: str, index: int, tag: str) -> str:
    return (f"{tag} {result.time_s[index]:.1f} s (f{result.frame_numbers[index]})\n"
            f"{result.scores[name][index]:.2f} {result.top_class[name][index]}")


def write_csv(result: VideoScore, path: Path) -> None:
    names = list(result.scores)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        header = ["frame", "time_s", "score", "top_class"]
        for name in names[1:]:
            header += [f"{name} score", f"{name} top_class"]
        writer.writerow(header)
        for i, frame in enumerate(result.frame_numbers.tolist()):
            row = [frame, f"{result.time_s[i]:.3f}"]
            for name in names:
                row += [f"{result.scores[name][i]:.6f}", result.top_class[name][i]]
            writer.writerow(row)


def plot_curve(result: VideoScore, marked: Sequence[int], path: Path, roles: dict[str, str]) -> None:
    """Score over time, one step per snippet, every model; the contact sheet's frames marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure


    fig = Figure(figsize=(11, 2.8))
    ax = fig.add_subplot()
    end_s = result.num_frames / result.fps
    snippet_start_s = np.arange(len(result.frame_numbers)) * result.stride / result.fps
    x = np.concatenate([snippet_start_s, [end_s]])
    for name, scores in result.scores.items():
        style = dict(BASELINE_STYLE) if roles.get(name) == "baseline" else {}
        ax.plot(x, np.concatenate([scores, scores[-1:]]), drawstyle="steps-post", linewidth=1.2, label=name, **style)
    first = next(iter(result.scores.values()))
    marked = list(marked)
    ax.plot(result.time_s[marked], first[marked], "v", color="black", markersize=4, label="on the contact sheet")
    # A little room above 1.0: a curve at the maximum stays visible.
    ax.set(xlim=(0, end_s), ylim=(-0.02, 1.05), xlabel="time (s)", ylabel="anomaly score", title=result.path.name)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=80)


def write_contact_sheet(result: VideoScore, primary: ScoringModel, path: Path, *, device: torch.device) -> list[int]:
    """The contact sheet of the first model; returns the indices of the frames on it."""

    name = primary.choice.name
    top, evenly = sheet_frames(result.scores[name])
    indices = sorted(set(top) | set(evenly))
    frame_numbers = result.frame_numbers[indices]
    model_frames = decode_selected(result.path, frame_numbers, size=primary.model.image_size)
    height, width = _display_size(result.path)
    display = decode_selected(result.path, frame_numbers, size=max(height, width))
    if len(model_frames.frame_numbers) < len(indices) or len(display.frame_numbers) < len(indices):
        raise VideoError(f"{result.path}: a second decode returned fewer frames than the first; the file changed?")
    maps = frame_maps(primary.model, model_frames.frames_uint8, primary.prompts, device=device)
    frames = _unsquash(display.frames_uint8, height, width)
    tiles = [Tile(frame, patch_map, _caption(result, name, index, "top" if index in top else "even"))
             for frame, patch_map, index in zip(frames, maps, indices)]
    columns = 4
    rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    draw_tile_grid(rows, path, title=f"{result.path.name}: {name}; highest-scoring ('top') and evenly spaced frames, "
                                     f"patch maps, frame score and top class")
    return indices


def write_overlay_video(result: VideoScore, primary: ScoringModel, path: Path, *, device: torch.device,
                        batch_frames: int = 32) -> None:
    """Every scored frame with the first model's patch map, its time, score and top class, as H.264
    at fps / stride (real time: each frame stands for its snippet)."""
    from PIL import Image, ImageDraw


    name = primary.choice.name
    height, width = _display_size(result.path)
    rate = result.fps / result.stride
    command = [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", f"{rate:.6f}", "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", str(path)]
    encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    model_stream = stream_selected(result.path, result.frame_numbers, size=primary.model.image_size,
                                   batch_frames=batch_frames)
    display_stream = stream_selected(result.path, result.frame_numbers, size=max(height, width),
                                     batch_frames=batch_frames)
    index = 0
    try:
        for (_, model_frames), (_, display_frames) in zip(model_stream, display_stream):
            maps = frame_maps(primary.model, model_frames, primary.prompts, device=device)
            for frame, patch_map in zip(_unsquash(display_frames, height, width), maps):
                image = Image.fromarray(heat_overlay(frame, patch_map))
                ImageDraw.Draw(image).text(
                    (4, 4), f"{result.time_s[index]:.1f} s  {result.scores[name][index]:.2f}  "
                            f"{result.top_class[name][index]}", fill=(255, 255, 255), stroke_width=1,
                    stroke_fill=(0, 0, 0))
                encoder.stdin.write(image.tobytes())
                index += 1
        encoder.stdin.close()
    except BrokenPipeError:
        pass
    finally:
        model_stream.close()
        display_stream.close()
    stderr = encoder.stderr.read().decode(errors="replace")
    if encoder.wait() != 0:
        raise VideoError(f"ffmpeg failed writing {path} (exit {encoder.returncode}): {stderr.strip()[-300:]}")


def _output_names(videos: Sequence[Path]) -> list[str]:
    """A folder name per video: its stem, made unique with the parent folder's name, then a number."""

    names, seen = [], set()
    for video in videos:
        name = safe_name(video.stem)
        if name in seen:
            name = safe_name(f"{video.parent.name}_{video.stem}")
        base, n = name, 2
        while name in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name)
        names.append(name)
    return names


def score_files(inputs: Sequence[Path], checkpoint: Path, out_dir: Path, *, baseline: Path | None = None,
                classes: Sequence[str] | None = None, device: str | None = None, stride: int = DEFAULT_STRIDE,
                batch_frames: int = 64, video: bool = False, templates: Sequence[str] = PROMPT_TEMPLATES,
                normal_phrase: str = NORMAL_PHRASE, progress: bool = True, echo=print) -> dict:
    """Score every video of `inputs` (files or directories); write the outputs of the module docstring.
    Returns the summary (also written as OUT/summary.json)."""
    from tqdm import tqdm

    if stride < 1:
        raise ScoreError(f"--stride {stride}: must be at least 1")
    videos, skipped = find_videos(inputs)
    choices = choose_models([checkpoint], baseline)
    class_names, classes_from = choose_classes(classes, choices[0].path)
    torch_device = pick_device(device)
    models = load_models(choices, class_names, torch_device, templates=templates, normal_phrase=normal_phrase)
    roles = {m.choice.name: m.choice.role for m in models}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    echo(f"classes ({classes_from}): {', '.join(class_names)}")

    total = 0
    probed: list[tuple[Path, str]] = []
    for path, name in zip(videos, _output_names(videos)):
        try:
            total += len(stride_indices(probe_video(path).num_frames, stride))
            probed.append((path, name))
        except VideoError as err:
            skipped.append({"video": str(path), "reason": str(err)})
    for entry in skipped:
        echo(f"skipped {entry['video']}: {entry['reason']}")

    scored = []
    bar = tqdm(total=total, unit="frame", desc="scoring", disable=not progress, dynamic_ncols=True)
    try:
        for path, name in probed:
            bar.set_description(path.name)
            try:
                result = score_video(path, models, class_names, device=torch_device, stride=stride,
                                     batch_frames=batch_frames, bar=bar)
                video_dir = out_dir / name
                video_dir.mkdir(parents=True, exist_ok=True)
                write_csv(result, video_dir / "scores.csv")
                marked = write_contact_sheet(result, models[0], video_dir / "contact_sheet.png", device=torch_device)
                plot_curve(result, marked, video_dir / "curve.png", roles)
                if video:
                    write_overlay_video(result, models[0], video_dir / "overlay.mp4", device=torch_device)
            except VideoError as err:
                skipped.append({"video": str(path), "reason": str(err)})
                bar.write(f"skipped {path}: {err}")
                continue
            primary = result.scores[models[0].choice.name]
            peak = int(np.argmax(primary))
            scored.append({
                "video": str(path), "out": str(video_dir), "frames": result.num_frames, "fps": result.fps,
                "scored_frames": len(result.frame_numbers),
                "peak": {"frame": int(result.frame_numbers[peak]), "time_s": round(float(result.time_s[peak]), 3),
                         "score": float(primary[peak]), "top_class": result.top_class[models[0].choice.name][peak]},
                "mean_score": {n: float(s.mean()) for n, s in result.scores.items()},
            })
    finally:
        bar.close()
    summary = {
        "checkpoint": str(choices[0].path), "baseline": str(choices[1].path) if len(choices) > 1 else None,
        "models": [m.choice.name for m in models], "device": str(torch_device), "stride": stride,
        "classes": class_names, "classes_from": classes_from, "prompt_templates": list(templates),
        "normal_phrase": normal_phrase,
        "score": {m.choice.name: ANOMALY_SCORE_DEFINITIONS[m.model.objective] for m in models}, "patch_map": PATCH_MAP_DOC,
        "videos": scored, "skipped": skipped,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
