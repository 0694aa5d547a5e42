"""`fgclip-vad doctor`: the handbook's pre-flight checklist, one verdict per line.

Checks: training shards present and readable (every shard opened, the first record of each
read through its checksum), the annotation file and its videos (when given), a GPU (a warning
on CPU, not a failure), free disk space in the output directory, and the model directory
loadable with its tokenizer (its layout named: plain CLIP, FG-CLIP v1 or one of our checkpoints).
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATUSES = ("OK", "WARN", "FAIL")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "OK", "WARN" or "FAIL" (FAIL = training cannot start)
    detail: str

    def line(self) -> str:
        return f"[{self.status:^4}] {self.name:<12} {self.detail}"


def check_shards(shard_dir: Path, num_frames: int | None = None) -> Check:
    """All shards of the manifest open, and the first record of each reads (checksums verified)."""
    from pipeline.shards import ShardFormatError, ShardReader, list_shards

    try:
        paths = list_shards(shard_dir)
        records, stored = 0, set()
        size = None
        for path in paths:
            with ShardReader(path) as reader:
                if reader.attrs.sampling != "uniform":
                    return Check("shards", "FAIL", f"{shard_dir}: {reader.attrs.sampling} sampling (test shards); "
                                 f"training needs uniformly sampled shards")
                records += reader.num_records
                stored.add(reader.attrs.num_frames)
                size = (reader.attrs.height, reader.attrs.width)
                lo, hi = reader.frame_range(0)
                frames = np.empty((hi - lo, size[0], size[1], 3), dtype=np.uint8)
                reader.read_frames_into(0, frames)
    except ShardFormatError as err:
        return Check("shards", "FAIL", f"{err}")
    if not paths:
        return Check("shards", "FAIL", f"{shard_dir}: the manifest lists no shards; rerun `fgclip-vad frames`")
    detail = (f"{shard_dir}: {len(paths)} shards, {records} records, {'/'.join(map(str, sorted(stored)))} frames "
              f"of {size[1]}x{size[0]} px, readable")
    if num_frames is not None and num_frames > min(stored):
        return Check("shards", "FAIL", f"{detail}; but {num_frames} frames per video are asked (build shards with "
                     f"`fgclip-vad frames --num-frames {num_frames}`)")
    return Check("shards", "OK", detail)


def check_annotations(path: Path) -> tuple[Check, list]:
    """The annotation file parses; validation errors are a warning (the shards were built from it)."""
    from pipeline.annotations import validate_annotations

    if not path.is_file():
        return Check("annotations", "FAIL", f"{path}: file not found"), []
    report = validate_annotations(path, allow_test_overlap=True)
    if not report.records and report.errors():
        return Check("annotations", "FAIL", report.errors()[0].message), []
    errors = report.errors()
    detail = f"{path}: {len(report.records)} usable of {report.num_source_records} records"
    if report.test_overlap:
        detail += f", {len(report.test_overlap)} videos also in the official test split (test AUC would be contaminated)"
    if errors or report.test_overlap:
        problems = f", {len(errors)} record errors" if errors else ""
        return Check("annotations", "WARN", f"{detail}{problems}: see `fgclip-vad validate {path}`"), report.records
    return Check("annotations", "OK", detail), report.records


def check_videos(records: list, video_root: Path, workers: int = 8) -> Check:
    """Every distinct video of the records exists and ffmpeg can read its stream."""
    from pipeline.decode import VideoError, probe_video

    videos = sorted({record.video for record in records})
    if not videos:
        return Check("videos", "WARN", "no records, no videos to check")

    def probe(video: str) -> str | None:
        try:
            probe_video(video_root / video)
            return None
        except VideoError as err:
            return str(err)

    with ThreadPoolExecutor(max_workers=workers) as pool:  # each probe is an ffmpeg subprocess
        failures = [message for message in pool.map(probe, videos) if message]
    if failures:
        shown = "; ".join(failures[:3]) + (f"; ... {len(failures) - 3} more" if len(failures) > 3 else "")
        return Check("videos", "FAIL", f"{len(failures)} of {len(videos)} videos unreadable under {video_root}: {shown}")
    return Check("videos", "OK", f"{len(videos)} videos under {video_root} readable")


def check_gpu() -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("gpu", "WARN", "no CUDA GPU visible: training runs on the CPU (fine for the demo, far too slow for UCF-Crime)")
    names = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        names.append(f"{props.name} ({props.total_memory / 2**30:.0f} GiB)")
    bf16 = "bf16 supported" if torch.cuda.is_bf16_supported() else "no bf16: train with --no-bf16"
    return Check("gpu", "OK", f"{len(names)} GPU(s): {', '.join(names)}; {bf16}")


def check_disk(output_dir: Path, min_free_gb: float) -> Check:
    """Free space where the output directory is (or would be created)."""
    probe = output_dir.resolve()
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    detail = f"{free_gb:.1f} GB free at {probe} (for {output_dir}), {min_free_gb:g} GB needed"
    return Check("disk", "OK" if free_gb >= min_free_gb else "FAIL", detail)


def check_model(model_dir: Path) -> Check:
    from fgclip.models.families import load_model_and_tokenizer
    from fgclip.models.clip_video import ModelDirError

    try:
        model, _ = load_model_and_tokenizer(model_dir)
    except (ModelDirError, FileNotFoundError, OSError) as err:
        return Check("model", "FAIL", str(err))
    from fgclip.models.layouts import LAYOUT_DESCRIPTIONS

    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    patch = model.image_size // model.patch_grid
    layout = model.source_layout
    return Check("model", "OK", f"{model_dir}: layout {layout}: {LAYOUT_DESCRIPTIONS[layout]}; "
                 f"{parameters:.1f}M parameters, {model.image_size} px input in patches of {patch} "
                 f"({model.patch_grid}x{model.patch_grid} grid), tokenizer found")


def run_checks(*, shards: Path, model: Path, output_dir: Path, annotations: Path | None = None,
               video_root: Path | None = None, min_free_gb: float = 20.0, num_frames: int | None = None) -> list[Check]:
    """All checks in the handbook's order."""
    checks = [check_shards(shards, num_frames)]
    if annotations is not None:
        annotation_check, records = check_annotations(annotations)
        checks.append(annotation_check)
        if records:
            checks.append(check_videos(records, video_root if video_root is not None else annotations.parent))
    checks.append(check_gpu())
    checks.append(check_disk(output_dir, min_free_gb))
    checks.append(check_model(model))
    return checks
