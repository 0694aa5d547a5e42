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
from fgclip.models import fgclip2_layout
from fgclip.models.families import family_of
from fgclip.train.batch import MicroBatch, first_frames, window_frames

log = logging.getLogger(__name__)

FULL_PRESET_FRAMES = 232 * 256 * 10  # UCF-Crime's 232 training records x the full preset's 256 frames x 10 epochs

# `bench --smoke`: every measurement in seconds on a CPU, so CI keeps the command working.
SMOKE = {"records": 4, "num_frames": 4, "size": 56, "test_videos": 1, "baseline_videos": 1, "feature_videos": 2,
         "feature_seconds": 2.0,
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
    batch_size: int = 2  # with auto_batch: batch_size x grad_accum is the contrastive batch kept
    grad_accum: int = 8
    auto_batch: bool = True  # --batch-size auto, as training does on a GPU
    workers: int = 8
    gradient_checkpointing: bool | None = None  # None: as training decides
    compile: bool | None = None  # None: as training decides (on with a GPU)
    bf16: bool | None = None
    warmup_steps: int = 2
    steps: int = 5
    baseline_steps: int = 2
    eval_batch_frames: int = 512
    eval_readers: int = 2  # more readers were slower on an H200 (docs/PERFORMANCE.md)
    extra_settings: bool = False  # also time EXTRA_SETTINGS
    label: str = ""
    profile: bool = False  # also write a kernel table of one ceiling step (torch.profiler)
    feature_videos: int = 64  # `fgclip-vad features` timing on this many generated videos, several per decoder (0: skip it)
    feature_seconds: float = 60.0  # length of each generated video (30 fps)


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


def time_steps(step, windows, *, warmup: int, steps: int, device: torch.device, frames_per_step: int | None = None) -> dict:
    """Median and mean seconds per optimizer step of `step(window)` over `windows` (an iterator).
    Frames per step are counted from each window unless `frames_per_step` is given."""
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
            frames += frames_per_step if frames_per_step is not None else window_frames(window, distributed.world_size())
    total = sum(durations)
    return {"steps": steps, "step_s_median": float(np.median(durations)), "step_s_mean": total / steps,
            "frames": frames, "frames_per_s": frames / total}


# Host calls that wait for the GPU: a scalar read (.item(), float(), bool()), nonzero (boolean
# indexing and unique call it), and the CUDA synchronisations themselves.
_HOST_WAIT_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "cudaStreamSynchronize", "cudaDeviceSynchronize")


def _busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals (kernels of several streams overlap)."""
    busy, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        busy += end - max(start, reach)
        reach = end
    return busy


def trace_step(step, window, device: torch.device) -> dict:
    """One step under torch.profiler: device busy time (union of kernels and copies), the
    number of host waits by kind, and the profiler's key averages (for `write_profile`)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step(window)
        _sync(device)
    events = prof.events()
    device_intervals = [(e.time_range.start / 1e6, e.time_range.end / 1e6) for e in events
                        if e.device_type == torch.autograd.DeviceType.CUDA]
    waits = {name: 0 for name in _HOST_WAIT_OPS}
    for event in events:
        if event.device_type == torch.autograd.DeviceType.CPU and event.name in waits:
            waits[event.name] += 1
    def write_timeline(path: Path) -> Path:
        """The step's timeline (Chrome trace format, gzipped): where the GPU waits, and on what."""
        import gzip
        import tempfile

        if distributed.rank() == 0:
            with tempfile.NamedTemporaryFile(suffix=".json") as raw:
                prof.export_chrome_trace(raw.name)
                path.write_bytes(gzip.compress(Path(raw.name).read_bytes()))
        return path

    return {"device_busy_s": _busy_seconds(device_intervals) if device_intervals else None,
            "device_events": len(device_intervals), "host_waits": waits, "key_averages": prof.key_averages(),
            "write_timeline": write_timeline}


def idle_share(busy_s: float | None, step_s: float) -> float | None:
    """Share of a step's wall time in which no kernel or copy ran on the GPU."""
    return None if busy_s is None else max(0.0, 1.0 - busy_s / step_s)


def write_profile(key_averages, path: Path, rows: int = 40) -> Path:
    """One step's kernels and ops by own device (else CPU) time to `path` (rank 0 writes), so a
    missed goal comes with what is in the way."""
    sort_by = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    table = key_averages.table(sort_by=sort_by, row_limit=rows, max_name_column_width=90)
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


# --- path 0: the bare vision tower ------------------------------------------------------------


def _bare_vision_tower(model_dir: str, device: torch.device, compiled: bool):
    """(tower, inputs) for path 0: the family's own Hugging Face vision tower of the model's width,
    depth and resolution (random weights: only its speed is measured), compiled as a whole when
    `compiled`, and `inputs(frames, generator)`, the keyword arguments of one batch of random frames
    in the form that tower takes (CLIP: pixels; SigLIP 2: NaFlex patch rows of the square grid the
    model is fed, with `spatial_shapes` and an all-true mask)."""
    if family_of(model_dir) == "siglip2":
        from transformers import Siglip2VisionModel

        config = json.loads((Path(model_dir) / "config.json").read_text())
        vision_config = fgclip2_layout.siglip2_config(config)[0].vision_config
        tower = Siglip2VisionModel._from_config(vision_config, attn_implementation="sdpa").to(device)
        grid = int(round(vision_config.num_patches ** 0.5))
        patch_values = vision_config.num_channels * vision_config.patch_size ** 2

        def inputs(frames: int, generator: torch.Generator) -> dict:
            return {"pixel_values": torch.randn(frames, grid * grid, patch_values, device=device, generator=generator),
                    "pixel_attention_mask": torch.ones(frames, grid * grid, dtype=torch.long, device=device),
                    "spatial_shapes": torch.tensor([[grid, grid]], device=device).expand(frames, 2)}
    else:
        from transformers import CLIPConfig, CLIPVisionModel

        vision_config = CLIPConfig.from_pretrained(model_dir).vision_config
        tower = CLIPVisionModel._from_config(vision_config, attn_implementation="sdpa").to(device)
        size = vision_config.image_size

        def inputs(frames: int, generator: torch.Generator) -> dict:
            return {"pixel_values": torch.randn(frames, 3, size, size, device=device, generator=generator)}
    if compiled:
        tower.compile()
    return tower, inputs


def time_vision_tower(model_dir: str, *, frames_per_micro_batch: int, grad_accum: int, steps: int, warmup: int,
                      inference_frames: int, device: torch.device, compiled: bool, autocast) -> dict:
    """Path 0, the ceiling of our math: the bare vision tower doing what the step's vision part
    does. A training step is, per micro-batch of the step's frames, one forward without graph
    (gradient caching's embedding pass), then per micro-batch forward and backward, then fused
    AdamW. (The step itself skips the graph-free pass of its last micro-batch, whose graph it
    keeps, so with k micro-batches it can run up to 4k / (4k - 1) times path 0's speed.)
    Inference is forward passes of `inference_frames` frames (evaluation's batch)."""
    amp = autocast if autocast is not None else contextlib.nullcontext()
    tower, make_inputs = _bare_vision_tower(model_dir, device, compiled)
    generator = torch.Generator(device=device).manual_seed(0)
    inputs = [make_inputs(frames_per_micro_batch, generator) for _ in range(2)]
    optimizer = torch.optim.AdamW(tower.parameters(), lr=1e-5, fused=device.type == "cuda")

    def train_step(_window) -> None:
        with torch.no_grad(), amp:
            for i in range(grad_accum):
                tower(**inputs[i % 2]).pooler_output
        for i in range(grad_accum):
            with amp:
                pooled = tower(**inputs[i % 2]).pooler_output
            pooled.float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    results: dict = {"frames_per_micro_batch": frames_per_micro_batch, "grad_accum": grad_accum, "compiled": compiled}
    tower.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results["train"] = time_steps(train_step, iter(lambda: None, 1), warmup=warmup, steps=steps, device=device,
                                  frames_per_step=frames_per_micro_batch * grad_accum)
    if device.type == "cuda":
        results["train"]["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    traced = trace_step(train_step, None, device)
    results["train"]["device_busy_s"] = traced["device_busy_s"]
    results["train"]["idle_share"] = idle_share(traced["device_busy_s"], results["train"]["step_s_median"])
    del optimizer, inputs

    tower.eval()
    frames = [make_inputs(inference_frames, generator) for _ in range(2)]
    repeats = max(4, steps * 2)

    def inference(_window) -> None:
        with torch.inference_mode(), amp:
            for i in range(repeats):
                tower(**frames[i % 2]).pooler_output
    results["inference"] = time_steps(inference, iter(lambda: None, 1), warmup=1, steps=2, device=device,
                                      frames_per_step=inference_frames * repeats)
    results["inference"]["batch_frames"] = inference_frames
    del tower, frames
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def _peak_tflops(device: torch.device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in name:
            return value, name
    return None, name


def _trainer(config: BenchConfig, output_dir: Path, *, auto_batch: bool, batch_size: int, grad_accum: int,
             gradient_checkpointing: bool | None):
    from fgclip.train.presets import resolve_config
    from fgclip.train.loop import Trainer

    train_config = resolve_config("full", {
        "shards": config.shards, "model": config.model, "output_dir": str(output_dir),
        "num_frames": config.num_frames, "batch_size": batch_size, "grad_accum": grad_accum, "auto_batch": auto_batch,
        "workers": config.workers, "gradient_checkpointing": gradient_checkpointing, "bf16": config.bf16,
        "compile": config.compile,
        "epochs": 1000, "save_every": 10**9, "log_every": 10**9, "max_records": None,
    })
    return Trainer(train_config, show_progress=False)


def _settings(trainer) -> dict:
    fit = trainer.step_fit
    return {"batch_size": trainer.config.batch_size, "grad_accum": trainer.config.grad_accum,
            "gradient_checkpointing": trainer.config.gradient_checkpointing, "compiled": trainer.compiled,
            "auto_batch": fit is not None, "predicted_peak_gib": fit.predicted_peak_gib if fit else None,
            "usable_gib": fit.budget_gib if fit else None}


def time_setting(config: BenchConfig, label: str, *, auto_batch: bool, batch_size: int, grad_accum: int,
                 gradient_checkpointing: bool | None, device: torch.device) -> dict:
    """Another configuration of the step on the real path only (a trainer of its own): frames/s,
    peak memory, and the idle share of one traced step."""
    trainer = _trainer(config, Path(config.out_dir) / f"train-{label}", auto_batch=auto_batch, batch_size=batch_size,
                       grad_accum=grad_accum, gradient_checkpointing=gradient_checkpointing)
    results = {"label": label, **_settings(trainer)}
    try:
        windows = trainer.loader.windows(trainer.config.grad_accum)
        first = next(windows)
        trainer.optimizer_step(first)  # compiles
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        real = time_steps(trainer.optimizer_step, windows, warmup=1, steps=max(2, config.steps - 1), device=device)
        if device.type == "cuda":
            real["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        traced = trace_step(trainer.optimizer_step, first, device)
        real["device_busy_s"] = traced["device_busy_s"]
        real["idle_share"] = idle_share(traced["device_busy_s"], real["step_s_median"])
        windows.close()
        results["real"] = real
    finally:
        trainer.loader.close()
        trainer.release()
    return results


def _free_device_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# Other configurations timed after the main one (label, auto micro-batch, batch size x accumulation,
# checkpointing): checkpointing forced on with the micro-batch the trainer picks for it, and the
# preset's 2 x 256 frames with checkpointing, the setting of a 24 GB card.
EXTRA_SETTINGS = (("checkpointing", True, 2, 8, True), ("checkpointing-2x256", False, 2, 8, True))


def run_features_bench(config: BenchConfig) -> dict:
    """The features rows alone (`bench --only-features`): bench-LABEL.json with the environment and them."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    peak_tflops, device_name = _peak_tflops(device)
    results: dict = {"label": config.label, "config": dataclasses.asdict(config), "world_size": 1,
                     "environment": {"torch": torch.__version__, "python": platform.python_version(),
                                     "date": time.strftime("%Y-%m-%d"), "host_cpus": os.cpu_count(),
                                     "device": device_name, "bf16_peak_tflops": peak_tflops}}
    results["features"] = _time_features(config, device)
    results["json_path"] = str(_write_results(config, results))
    return results


def run_bench(config: BenchConfig) -> dict:
    """Run the measurements; rank 0 writes bench.json and returns the results."""
    out_dir = Path(config.out_dir)
    trainer = _trainer(config, out_dir / "train", auto_batch=config.auto_batch, batch_size=config.batch_size,
                       grad_accum=config.grad_accum, gradient_checkpointing=config.gradient_checkpointing)
    device = trainer.device
    world = distributed.world_size()
    results: dict = {"label": config.label, "config": dataclasses.asdict(config), "world_size": world,
                     **_settings(trainer)}
    results["environment"] = {"torch": torch.__version__, "python": platform.python_version(),
                              "date": time.strftime("%Y-%m-%d"), "host_cpus": os.cpu_count()}
    peak_tflops, device_name = _peak_tflops(device)
    results["environment"].update(device=device_name, bf16_peak_tflops=peak_tflops)

    step = trainer.optimizer_step
    try:
        # 0. The bare vision tower at the step's frames per micro-batch (its memory is freed again).
        results["vision_tower"] = time_vision_tower(
            str(config.model), frames_per_micro_batch=trainer.config.batch_size * config.num_frames,
            grad_accum=trainer.config.grad_accum, steps=config.steps, warmup=config.warmup_steps,
            inference_frames=config.eval_batch_frames, device=device, compiled=trainer.compiled,
            autocast=trainer.autocast)

        # 2. The real path first (its first window also feeds the ceiling): the trainer's windows.
        windows = trainer.loader.windows(trainer.config.grad_accum)
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
        # Idle share: kernel time of one traced step against the untraced steps' wall time.
        traced = trace_step(step, fixed, device)
        ceiling["device_busy_s"] = traced["device_busy_s"]
        ceiling["host_waits"] = traced["host_waits"]
        ceiling["idle_share"] = idle_share(traced["device_busy_s"], ceiling["step_s_median"])
        real["idle_share"] = idle_share(traced["device_busy_s"], real["step_s_median"])
        if config.profile:
            name = f"profile{'-' + config.label if config.label else ''}.txt"
            results["profile"] = str(write_profile(traced["key_averages"], out_dir / name))
            results["timeline"] = str(traced["write_timeline"](out_dir / name.replace("profile", "timeline").replace(".txt", ".json.gz")))
        results["ceiling"] = ceiling
        results["real"] = real
        results["loader_efficiency"] = real["frames_per_s"] / ceiling["frames_per_s"]
        tower_fps = results["vision_tower"]["train"]["frames_per_s"]
        for path in ("ceiling", "real"):
            results[path]["of_vision_tower"] = results[path]["frames_per_s"] / tower_fps
        results["projected_full_preset_s"] = FULL_PRESET_FRAMES / real["frames_per_s"]
        _write_results(config, results)

        # 3. Decode-in-the-loop baseline.
        if config.videos and config.baseline_steps > 0:
            results["baseline"] = _time_baseline(config, trainer, fixed, step, device)
            results["speedup_over_baseline"] = real["frames_per_s"] / results["baseline"]["frames_per_s"]
            results["baseline"]["of_vision_tower"] = results["baseline"]["frames_per_s"] / tower_fps
    finally:
        trainer.loader.close()
        trainer.release()
    del trainer, step, fixed, first
    _free_device_memory(device)

    # 4. Evaluation inference, as `fgclip-vad eval` runs it (a fresh model, compiled on a GPU).
    if config.test_shards and distributed.rank() == 0:
        results["eval"] = _time_eval(config, device)
        results["eval"]["of_vision_tower"] = (results["eval"]["frames_per_s"]
                                              / results["vision_tower"]["inference"]["frames_per_s"])
        _write_results(config, results)

    # 5. Feature extraction (`fgclip-vad features`), decoding included, 1 and 10 crops.
    if config.feature_videos and distributed.rank() == 0:
        results["features"] = _time_features(config, device)
        _write_results(config, results)

    # 6. Other settings of the step, each with a trainer of its own.
    results["settings"] = {}
    for label, auto_batch, batch_size, grad_accum, checkpointing in (EXTRA_SETTINGS if config.extra_settings else ()):
        _free_device_memory(device)
        try:
            results["settings"][label] = time_setting(config, label, auto_batch=auto_batch, batch_size=batch_size,
                                                      grad_accum=grad_accum, gradient_checkpointing=checkpointing,
                                                      device=device)
        except Exception as err:  # noqa: BLE001 - a setting that fails (e.g. out of memory) is reported, not fatal
            log.exception("setting %s failed", label)
            results["settings"][label] = {"label": label, "error": f"{type(err).__name__}: {err}"}
        _write_results(config, results)

    results["json_path"] = str(_write_results(config, results))
    return results


def _write_results(config: BenchConfig, results: dict) -> Path:
    """bench[-LABEL].json (rank 0), rewritten after each measurement so a cut-short run keeps what it measured."""
    out_dir = Path(config.out_dir)
    path = out_dir / f"bench{('-' + config.label) if config.label else ''}.json"
    if distributed.rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {name: value for name, value in results.items() if name != "json_path"}
        path.write_text(json.dumps(written, indent=2) + "\n")
    return path


def _time_baseline(config: BenchConfig, trainer, template: list[MicroBatch], step, device: torch.device) -> dict:
    """Same step, but every micro-batch's pixels come from decoding video files in DataLoader workers."""
    videos = sorted(p for p in Path(config.videos).iterdir() if p.suffix in {".mp4", ".avi", ".mkv"})
    if not videos:
        raise FileNotFoundError(f"{config.videos}: no video files for the decode baseline")
    dataset = DecodingDataset(videos, config.num_frames, trainer.model.image_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=trainer.config.batch_size, shuffle=True,
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


def _time_eval(config: BenchConfig, device: torch.device) -> dict:
    from fgclip.eval.evaluate import list_test_videos, load_scoring_model, score_videos

    model, tokenizer = load_scoring_model(Path(config.model), device)
    test_set = list_test_videos(Path(config.test_shards))
    stored = sum(v.stored_frames for v in test_set.videos)
    kwargs = dict(class_names=["Fighting", "Explosion", "RoadAccidents", "Stealing"], device=device,
                  batch_frames=config.eval_batch_frames, num_readers=config.eval_readers, progress=False)
    # Warm-up: compiles the blocks and starts the readers, which the timed call reuses, as the
    # second model of an `fgclip-vad eval` does (the first model's call pays their start, ~0.3 s).
    score_videos(model, tokenizer, Path(config.test_shards), videos=[test_set.videos[0].key], **kwargs)
    _sync(device)
    start = time.perf_counter()
    score_videos(model, tokenizer, Path(config.test_shards), **kwargs)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"videos": len(test_set.videos), "stored_frames": stored, "seconds": seconds, "frames_per_s": stored / seconds,
            "readers": config.eval_readers, "readers_started_before": True, "compiled": device.type == "cuda"}


def _time_features(config: BenchConfig, device: torch.device) -> dict:
    """Features rows: generated videos (two distinct ones, linked to `feature_videos` files so every
    file is decoded on its own), the bench model at its own input size, 1 and 10 crops."""
    from fgclip.features.speed import time_features
    from fgclip.models.families import load_video_model

    folder = Path(config.out_dir) / "data" / "feature_videos"
    sources = folder / "sources"
    _write_videos(sources, 2, config.feature_seconds, np.random.default_rng(7))
    videos = []
    for i in range(config.feature_videos):
        link = folder / f"video{i:03d}.mp4"
        if not link.exists():
            link.symlink_to((sources / f"video{i % 2:03d}.mp4").resolve())
        videos.append(link)
    size = load_video_model(config.model).image_size
    return {f"crops_{crops}": time_features(Path(config.model), videos, crops=crops, size=size, device=device)
            for crops in (1, 10)}


def _share(value) -> str:
    return "" if value is None else f"{value:.1%}"


def feature_rows(results: dict) -> list[tuple[str, ...]]:
    """Table rows of the features timing: its own share is of the model's bare inference."""
    rows = []
    for row in results.get("features", {}).values():
        rows.append((f"5 features, {row['crops']} crop{'s' if row['crops'] > 1 else ''}", f"{row['extraction_frames_per_s']:.0f}",
                     "", _share(row["of_bare_inference"]), "",
                     f"of its bare inference ({row['bare_inference_frames_per_s']:.0f}); decoding alone "
                     f"{row['decode_model_frames_per_s']:.0f} ({row['decode_snippets_per_s']:.0f} snippets/s, "
                     f"{row['decode_workers']} decoders), {row['of_decode']:.0%} of it: {row['bound']}-bound; "
                     f"{row['videos']} videos"))
    return rows


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]


def format_features_table(results: dict) -> str:
    env = results["environment"]
    header = ("path", "frames/s", "", "of bare", "", "note")
    return "\n".join([f"{results.get('label') or 'bench'}: {env['device']}, torch {env['torch']}"]
                     + _aligned([header] + feature_rows(results)))


def format_table(results: dict) -> str:
    rows = [("path", "frames/s", "step s", "of path 0", "GPU idle", "note")]
    share = _share

    tower, ceiling, real = results["vision_tower"], results["ceiling"], results["real"]
    train0 = tower["train"]
    rows.append(("0 bare vision tower (train)", f"{train0['frames_per_s']:.0f}", f"{train0['step_s_median']:.3f}", "100%",
                 share(train0.get("idle_share")), f"{tower['frames_per_micro_batch']} frames x {tower['grad_accum']}"
                 + (f", peak {train0['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in train0 else "")))
    mem = f", peak {ceiling['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in ceiling else ""
    mfu = f", MFU {ceiling['mfu']:.1%}" if ceiling.get("mfu") else ""
    waits = sum(ceiling.get("host_waits", {}).values())
    rows.append(("1 ceiling (data on device)", f"{ceiling['frames_per_s']:.0f}", f"{ceiling['step_s_median']:.3f}",
                 share(ceiling["of_vision_tower"]), share(ceiling.get("idle_share")),
                 f"{ceiling['achieved_tflops']:.0f} TFLOP/s{mfu}{mem}, {waits} host waits"))
    rows.append(("2 real (HDF5 loader)", f"{real['frames_per_s']:.0f}", f"{real['step_s_median']:.3f}",
                 share(real["of_vision_tower"]), share(real.get("idle_share")),
                 f"data wait {real['data_wait_share']:.1%}, {results['loader_efficiency']:.1%} of ceiling"))
    if "baseline" in results:
        base = results["baseline"]
        rows.append(("3 decode in the loop", f"{base['frames_per_s']:.0f}", f"{base['step_s_median']:.3f}",
                     share(base["of_vision_tower"]), "",
                     f"{base['decoder']}; real path is {results['speedup_over_baseline']:.1f}x faster"))
    for label, setting in results.get("settings", {}).items():
        if "error" in setting:
            rows.append((f"2 real, {label}", "failed", "", "", "", setting["error"][:80]))
            continue
        step = setting["real"]
        rows.append((f"2 real, {label}", f"{step['frames_per_s']:.0f}", f"{step['step_s_median']:.3f}",
                     share(step["frames_per_s"] / train0["frames_per_s"]), share(step.get("idle_share")),
                     f"{setting['batch_size']} x {setting['grad_accum']}, checkpointing {setting['gradient_checkpointing']}"
                     + (f", peak {step['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in step else "")))
    inference0 = tower["inference"]
    rows.append(("0 bare vision tower (inference)", f"{inference0['frames_per_s']:.0f}", "", "100%", "",
                 f"batches of {inference0['batch_frames']} frames"))
    if "eval" in results:
        ev = results["eval"]
        rows.append(("4 evaluation inference", f"{ev['frames_per_s']:.0f}", "", share(ev["of_vision_tower"]), "",
                     f"{ev['stored_frames']} stored frames, {ev['readers']} readers, compiled {ev['compiled']}"))
    rows += feature_rows(results)
    lines = _aligned(rows)
    env = results["environment"]
    lines.insert(0, f"{results.get('label') or 'bench'}: {env['device']} x{results['world_size']}, torch {env['torch']}, "
                    f"{results['batch_size']} x {results['config']['num_frames']} frames x accum "
                    f"{results['grad_accum']}{' (auto)' if results.get('auto_batch') else ''}, checkpointing "
                    f"{results['gradient_checkpointing']}, compiled {results.get('compiled', False)}")
    lines.append(f"projected full preset (232 x 256 x 10 epochs): {results['projected_full_preset_s'] / 60:.1f} min")
    return "\n".join(lines)
