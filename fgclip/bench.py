"""`fgclip-vad bench` / `make bench`: where the training and evaluation time goes, measured.

One run on one machine times the exact training step (`Trainer.optimizer_step`: both towers,
region path, losses, gradient caching, all-reduce, clipping, AdamW) fed four ways:

1. ceiling: one window of micro-batches already in device memory, stepped again and again;
2. real path: the `ShardLoader` reading HDF5 shards into the same step;
3. decode-in-the-loop baseline: the same step fed by a torch DataLoader whose workers decode
   the video files at every step (OpenCV when installed, like the user's scripts, else ffmpeg);
4. evaluation inference: `score_videos` over stride-mode test shards.

It reports frames/s of each, real/ceiling (loader efficiency) and real/baseline (speed-up), the
data-wait share, FLOPs of one step (counted by torch's FlopCounterMode) and the model FLOP
utilisation against the card's bf16 peak, peak device memory, and the projected wall time of
the full preset (232 records x 256 frames x 10 epochs) at the real path's speed. The numbers
go to `bench.json` in the output directory and a short table is printed last.

`--make-data` writes full-size benchmark inputs first (shards of synthetic frames, test shards
and short video files), so the GPU machine, which has no ffmpeg, needs nothing but this tree.
Under `torchrun`, every rank steps and rank 0 reports frames/s of all ranks together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fgclip import distributed
from fgclip.batch import MicroBatch, first_frames, window_frames

log = logging.getLogger(__name__)

FULL_PRESET_FRAMES = 232 * 256 * 10  # UCF-Crime's 232 training records x the full preset's 256 frames x 10 epochs

# `bench --smoke`: every measurement in seconds on a CPU, so CI keeps the command working.
SMOKE = {"records": 4, "num_frames": 4, "size": 56, "test_videos": 1, "baseline_videos": 1,
         "data": {"test_stored_frames": 24, "video_seconds": 1.0}}

# Dense bf16 tensor-core peaks from the vendors' datasheets, by a substring of the device name.
BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "RTX 3090": 71.0, "L40S": 362.0, "A10": 125.0}

_CAPTIONS = (
    "A surveillance video of fighting: two people hit each other near the door.",
    "A surveillance video of an explosion: a bright flash fills the parking lot.",
    "A normal surveillance video: people walk across the street.",
    "A surveillance video of a road accident: two cars collide at the crossing.",
    "A surveillance video of stealing: a man grabs a bag and runs away.",
)


@dataclass
class BenchConfig:
    out_dir: str
    model: str  # model directory (e.g. from `init-model --preset vit-b16`)
    shards: str  # uniform training shards
    test_shards: str | None  # stride-mode test shards (None: skip evaluation timing)
    videos: str | None  # folder of video files for the decode baseline (None: skip it)
    num_frames: int = 256
    batch_size: int = 2
    grad_accum: int = 8
    workers: int = 8
    gradient_checkpointing: bool = True
    compile: bool | None = None  # None: as training decides (on with a GPU)
    bf16: bool | None = None
    warmup_steps: int = 2
    steps: int = 5
    baseline_steps: int = 2
    eval_batch_frames: int = 512
    eval_readers: int = 4
    label: str = ""
    profile: bool = False  # also write a kernel table of one ceiling step (torch.profiler)


# --- benchmark inputs -------------------------------------------------------------------------


def _synthetic_frames(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """Frames with structure (moving blobs on a gradient), not constants: (count, size, size, 3) uint8."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([xx, yy, 1 - xx], axis=-1) * 120 + 40
    frames = np.empty((count, size, size, 3), dtype=np.uint8)
    centre = rng.uniform(0.2, 0.8, size=2)
    velocity = rng.normal(0, 0.01, size=2)
    colour = rng.uniform(0, 255, size=3)
    for t in range(count):
        c = (centre + velocity * t) % 1.0
        blob = np.exp(-(((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / 0.01))[..., None]
        frames[t] = np.clip(base * (1 - blob) + colour * blob + rng.normal(0, 4, size=(size, size, 3)), 0, 255)
    return frames


def make_bench_data(data_dir: Path, *, records: int = 232, num_frames: int = 256, size: int = 224,
                    test_videos: int = 24, test_stored_frames: int = 1600, baseline_videos: int = 8,
                    video_seconds: float = 30.0, seed: int = 0) -> dict[str, Path]:
    """Write full-size benchmark inputs under `data_dir` (skipping parts already there)."""
    from pipeline.shards import ShardAttrs, ShardRecord, shard_name, write_manifest, write_shard

    rng = np.random.default_rng(seed)
    paths = {"shards": data_dir / f"train_t{num_frames}", "test_shards": data_dir / "test_stride16",
             "videos": data_dir / "videos"}
    pool = _synthetic_frames(rng, num_frames, size)  # one clip's worth, rolled per record

    def record(index: int, frames_uint8: np.ndarray, *, regions: int, stride: int) -> ShardRecord:
        count = frames_uint8.shape[0]
        t = np.linspace(0, 1, count, dtype=np.float32)
        track = np.stack([0.1 + 0.3 * t, np.full_like(t, 0.2), 0.5 + 0.3 * t, np.full_like(t, 0.8)], axis=-1)
        boxes = np.broadcast_to(track, (regions, count, 4))
        caption = _CAPTIONS[index % len(_CAPTIONS)]
        return ShardRecord(
            frames_uint8=frames_uint8, frame_index=np.arange(count, dtype=np.int64) * stride,
            boxes=boxes.astype(np.float32), box_mask=np.ones((regions, count), dtype=bool),
            global_caption=caption, region_captions=[f"person {r} in {caption.lower()}" for r in range(regions)],
            video=f"bench/video{index:04d}.mp4", label="Fighting", is_anomaly=True, window_s=(0.0, count / 30.0),
            fps=30.0, num_source_frames=count * stride, record_index=index,
            hard_negatives=[[f"person {r} standing still"] for r in range(regions)],
        )

    def write_set(out: Path, attrs: ShardAttrs, count: int, per_shard: int, frames_of, regions: int) -> None:
        if (out / "manifest.json").is_file():
            return
        entries = []
        for shard_id, first in enumerate(range(0, count, per_shard)):
            recs = [record(i, frames_of(i), regions=regions, stride=max(1, attrs.stride)) for i in range(first, min(count, first + per_shard))]
            write_shard(out / shard_name(shard_id), recs, attrs)
            entries.append({"file": shard_name(shard_id), "records": [r.record_index for r in recs],
                            "num_frames": int(sum(r.num_frames for r in recs))})
        write_manifest(out, {"schema_version": attrs.schema_version, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                             "sampling": attrs.sampling, "num_frames": attrs.num_frames, "stride": attrs.stride,
                             "size": size, "resize_mode": attrs.resize_mode, "source": "fgclip.bench synthetic",
                             "source_sha256": "", "shards": entries, "skipped": [], "summary": {"records": count}})

    write_set(paths["shards"], ShardAttrs("uniform", num_frames, 0, size, size, "squash"), records, 8,
              lambda i: np.roll(pool, i, axis=0), regions=2)
    if test_videos:
        test_pool = np.concatenate([pool] * math.ceil(test_stored_frames / num_frames))[:test_stored_frames]
        write_set(paths["test_shards"], ShardAttrs("stride", 0, 16, size, size, "squash"), test_videos, 4,
                  lambda i: np.roll(test_pool, i, axis=0), regions=0)
    if baseline_videos:
        _write_videos(paths["videos"], baseline_videos, video_seconds, rng)
    return paths


def _write_videos(out: Path, count: int, seconds: float, rng: np.random.Generator) -> None:
    """Short 320x240 30 fps videos for the decode baseline (OpenCV's writer, else ffmpeg/libx264)."""
    out.mkdir(parents=True, exist_ok=True)
    frames = _synthetic_frames(rng, int(seconds * 30), 240)
    frames = np.concatenate([frames, frames[:, :, :80]], axis=2)  # 240 x 320
    for i in range(count):
        target = out / f"video{i:03d}.mp4"
        if target.is_file():
            continue
        try:
            import cv2

            writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (320, 240))
            for frame in np.roll(frames, i, axis=0):
                writer.write(np.ascontiguousarray(frame[..., ::-1]))
            writer.release()
        except ImportError:
            import subprocess

            from pipeline.decode import find_ffmpeg

            command = [find_ffmpeg(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "320x240",
                       "-r", "30", "-i", "pipe:", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(target)]
            subprocess.run(command, input=np.roll(frames, i, axis=0).tobytes(), check=True)


# --- the decode-in-the-loop baseline ------------------------------------------------------------


class DecodingDataset(torch.utils.data.Dataset):
    """Decodes a whole video file on every access and keeps `num_frames` uniform frames, resized.

    This is what the user's scripts do inside the training step (they read with OpenCV and
    resize with PIL); decoding all of the video is needed to sample uniformly over it.
    """

    def __init__(self, videos: list[Path], num_frames: int, size: int):
        self.videos, self.num_frames, self.size = videos, num_frames, size

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.videos[index % len(self.videos)]
        try:
            import cv2
        except ImportError:
            return torch.from_numpy(self._decode_ffmpeg(path))
        capture = cv2.VideoCapture(str(path))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = np.floor((np.arange(self.num_frames) + 0.5) * total / self.num_frames).astype(int)
        out = np.empty((self.num_frames, self.size, self.size, 3), dtype=np.uint8)
        frame_number, ok = 0, True
        while ok and frame_number <= wanted[-1]:
            ok, frame = capture.read()
            if not ok:
                break
            hits = np.nonzero(wanted == frame_number)[0]
            if len(hits):
                out[hits] = cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_AREA)[..., ::-1]
            frame_number += 1
        capture.release()
        return torch.from_numpy(out)

    def _decode_ffmpeg(self, path: Path) -> np.ndarray:
        from pipeline.decode import decode_selected, probe_video

        total = probe_video(path).num_frames
        wanted = np.floor((np.arange(self.num_frames) + 0.5) * total / self.num_frames).astype(int)
        unique, inverse = np.unique(wanted, return_inverse=True)
        decoded = decode_selected(path, unique.tolist(), size=self.size)
        return decoded.frames_uint8[inverse]


# --- timing ---------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clone_window(window: list[MicroBatch]) -> list[MicroBatch]:
    return [{key: value.clone() for key, value in batch.items()} for batch in window]


def time_steps(step, windows, *, warmup: int, steps: int, device: torch.device) -> dict:
    """Median and mean seconds per optimizer step of `step(window)` over `windows` (an iterator)."""
    durations = []
    frames = 0
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        window = next(windows)  # inside the timed span: waiting for data is part of the step
        step(window)
        _sync(device)
        if i >= warmup:
            durations.append(time.perf_counter() - start)
            frames += window_frames(window, distributed.world_size())
    total = sum(durations)
    return {"steps": steps, "step_s_median": float(np.median(durations)), "step_s_mean": total / steps,
            "frames": frames, "frames_per_s": frames / total}


def profile_step(step, window: list[MicroBatch], path: Path, rows: int = 40) -> Path:
    """One optimizer step under torch.profiler; its kernels and ops by own device (else CPU)
    time go to `path` (rank 0 writes), so a missed goal comes with what is in the way."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        step(window)
        _sync(window[0]["pixels"].device)
    sort_by = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=rows, max_name_column_width=90)
    if distributed.rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table)
    return path


def count_step_flops(step, window: list[MicroBatch]) -> int:
    """FLOPs of one optimizer step on `window`, counted by torch's FlopCounterMode.

    Counting a full 256-frame window under the counter needs far more memory than the step
    itself (the counter keeps tensors alive), so the step is counted at 8 and 16 frames per
    video and extended to the window's length: every term is affine in the frame count (the
    vision tower and region path scale with frames, the text tower does not).
    """
    from torch.utils.flop_counter import FlopCounterMode

    def counted(frames: int) -> int:
        counter = FlopCounterMode(display=False)
        # eager: the counter sees every op, and other frame counts cause no recompilation
        eager = getattr(torch.compiler, "set_stance", None)  # torch >= 2.6
        with counter, (eager("force_eager") if eager else contextlib.nullcontext()):
            step([first_frames(batch, frames) for batch in window])
        return int(counter.get_total_flops())

    frames = int(window[0]["pixels"].shape[1])
    small, large = min(8, frames), min(16, frames)
    flops_small, flops_large = counted(small), counted(large)
    if large == small:
        return flops_small
    per_frame = (flops_large - flops_small) / (large - small)
    return int(round(flops_small + per_frame * (frames - small)))


def _peak_tflops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value, name
    return None, name


def run_bench(config: BenchConfig) -> dict:
    """Run the four measurements; rank 0 writes bench.json and returns the results."""
    from fgclip.presets import resolve_config
    from fgclip.train import Trainer

    out_dir = Path(config.out_dir)
    train_config = resolve_config("full", {
        "shards": config.shards, "model": config.model, "output_dir": str(out_dir / "train"),
        "num_frames": config.num_frames, "batch_size": config.batch_size, "grad_accum": config.grad_accum,
        "workers": config.workers, "gradient_checkpointing": config.gradient_checkpointing, "bf16": config.bf16,
        "compile": config.compile,
        "epochs": 1000, "save_every": 10**9, "log_every": 10**9, "max_records": None,
    })
    trainer = Trainer(train_config, show_progress=False)
    device = trainer.device
    world = distributed.world_size()
    results: dict = {"label": config.label, "config": dataclasses.asdict(config), "world_size": world,
                     "compiled": trainer.compiled}
    results["environment"] = {"torch": torch.__version__, "python": platform.python_version(),
                              "date": time.strftime("%Y-%m-%d"), "host_cpus": os.cpu_count()}
    peak_tflops, device_name = _peak_tflops(device)
    results["environment"].update(device=device_name, bf16_peak_tflops=peak_tflops)

    step = trainer.optimizer_step
    try:
        # 2. The real path first (its first window also feeds the ceiling): the trainer's windows.
        windows = trainer.loader.windows(config.grad_accum)
        first = next(windows)
        fixed = _clone_window(first)
        step(first)
        wait_before = trainer.loader.data_wait_s
        _sync(device)
        started = time.perf_counter()
        real = time_steps(step, windows, warmup=config.warmup_steps, steps=config.steps, device=device)
        elapsed = time.perf_counter() - started
        real["data_wait_share"] = (trainer.loader.data_wait_s - wait_before) / elapsed
        windows.close()

        # 1. Ceiling: the same step on a window already in device memory.
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ceiling = time_steps(step, iter(lambda: fixed, None), warmup=1, steps=config.steps, device=device)
        if device.type == "cuda":
            ceiling["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        flops = count_step_flops(step, fixed)
        ceiling["flops_per_step"] = flops
        ceiling["achieved_tflops"] = flops * world / ceiling["step_s_median"] / 1e12
        # achieved_tflops is all ranks together, so utilisation is against all their peaks
        ceiling["mfu"] = ceiling["achieved_tflops"] / (peak_tflops * world) if peak_tflops else None
        if config.profile:
            results["profile"] = str(profile_step(step, fixed, out_dir / f"profile{'-' + config.label if config.label else ''}.txt"))
        results["ceiling"] = ceiling
        results["real"] = real
        results["loader_efficiency"] = real["frames_per_s"] / ceiling["frames_per_s"]

        # 3. Decode-in-the-loop baseline.
        if config.videos and config.baseline_steps > 0:
            results["baseline"] = _time_baseline(config, trainer, fixed, step, device)
            results["speedup_over_baseline"] = real["frames_per_s"] / results["baseline"]["frames_per_s"]
    finally:
        trainer.loader.close()

    # 4. Evaluation inference.
    if config.test_shards and distributed.rank() == 0:
        results["eval"] = _time_eval(config, trainer.model, trainer.tokenizer, device)

    results["projected_full_preset_s"] = FULL_PRESET_FRAMES / results["real"]["frames_per_s"]
    if distributed.rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        name = f"bench{('-' + config.label) if config.label else ''}.json"
        (out_dir / name).write_text(json.dumps(results, indent=2) + "\n")
        results["json_path"] = str(out_dir / name)
    return results


def _time_baseline(config: BenchConfig, trainer, template: list[MicroBatch], step, device: torch.device) -> dict:
    """Same step, but every micro-batch's pixels come from decoding video files in DataLoader workers."""
    videos = sorted(p for p in Path(config.videos).iterdir() if p.suffix in {".mp4", ".avi", ".mkv"})
    if not videos:
        raise FileNotFoundError(f"{config.videos}: no video files for the decode baseline")
    dataset = DecodingDataset(videos, config.num_frames, trainer.model.image_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                         num_workers=config.workers, pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=config.workers > 0)

    # One decoded micro-batch per micro-batch of the template window (captions, boxes kept).
    batches = _batches_forever(loader)

    def windows():
        while True:
            window = []
            for micro in template:
                frames = next(batches)
                pixels = trainer.model.preprocess(frames.to(device, non_blocking=True))
                window.append({**micro, "pixels": pixels})
            yield window

    return time_steps(step, windows(), warmup=1, steps=config.baseline_steps, device=device) | {
        "decoder": "opencv" if _has_cv2() else "ffmpeg", "videos": len(videos)}


def _batches_forever(loader):
    while True:
        yield from loader


def _has_cv2() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _time_eval(config: BenchConfig, model, tokenizer, device: torch.device) -> dict:
    from fgclip.evaluate import list_test_videos, score_videos

    test_set = list_test_videos(Path(config.test_shards))
    stored = sum(v.stored_frames for v in test_set.videos)
    kwargs = dict(class_names=["Fighting", "Explosion", "RoadAccidents", "Stealing"], device=device,
                  batch_frames=config.eval_batch_frames, num_readers=config.eval_readers, progress=False)
    score_videos(model, tokenizer, Path(config.test_shards), videos=[test_set.videos[0].key], **kwargs)  # warm-up
    _sync(device)
    start = time.perf_counter()
    score_videos(model, tokenizer, Path(config.test_shards), **kwargs)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"videos": len(test_set.videos), "stored_frames": stored, "seconds": seconds, "frames_per_s": stored / seconds}


def format_table(results: dict) -> str:
    rows = [("path", "frames/s", "step s", "note")]
    ceiling, real = results["ceiling"], results["real"]
    mem = f", peak {ceiling['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in ceiling else ""
    mfu = f", MFU {ceiling['mfu']:.1%}" if ceiling.get("mfu") else ""
    rows.append(("1 ceiling (data on device)", f"{ceiling['frames_per_s']:.0f}", f"{ceiling['step_s_median']:.3f}",
                 f"{ceiling['achieved_tflops']:.0f} TFLOP/s{mfu}{mem}"))
    rows.append(("2 real (HDF5 loader)", f"{real['frames_per_s']:.0f}", f"{real['step_s_median']:.3f}",
                 f"data wait {real['data_wait_share']:.1%}, {results['loader_efficiency']:.1%} of ceiling"))
    if "baseline" in results:
        base = results["baseline"]
        rows.append(("3 decode in the loop", f"{base['frames_per_s']:.0f}", f"{base['step_s_median']:.3f}",
                     f"{base['decoder']}; real path is {results['speedup_over_baseline']:.1f}x faster"))
    if "eval" in results:
        ev = results["eval"]
        rows.append(("4 evaluation inference", f"{ev['frames_per_s']:.0f}", "", f"{ev['stored_frames']} stored frames"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    env = results["environment"]
    lines.insert(0, f"{results.get('label') or 'bench'}: {env['device']} x{results['world_size']}, torch {env['torch']}, "
                    f"{results['config']['batch_size']} x {results['config']['num_frames']} frames x accum "
                    f"{results['config']['grad_accum']}, checkpointing {results['config']['gradient_checkpointing']}, "
                    f"compiled {results.get('compiled', False)}")
    lines.append(f"projected full preset (232 x 256 x 10 epochs): {results['projected_full_preset_s'] / 60:.1f} min")
    return "\n".join(lines)
