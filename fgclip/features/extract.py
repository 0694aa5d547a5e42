"""`fgclip-vad features`: per-snippet features of every video, for several models, from one decode.

The flow, per video (each rank of a `torchrun` takes every world-size-th video of the plan):

1. **Decode once** (a pool of decode threads, each driving its own ffmpeg process, stays ahead of
   the model: `pipeline.decode.decode_selected`, the frames stage 1 decodes for its test shards):
   one frame per snippet of 16 source frames, frame `min(16 k + offset, n - 1)` of snippet k,
   offset 8 by default (the snippet's centre, which is what stage 1's test shards store), squashed
   to a square: `size` for one crop, `size * 256 / 224` for ten. A video shorter than one snippet
   gives T = 1; one that ends before its header says gives the snippets it holds.
   With `--test-shards`, test videos' frames come from stage 1's shards instead (no second decode).
2. **Crops** (`CropRule`): 1 = the frame as the model is fed it in training (its own preprocessing);
   10 = VadCLIP's order: `__0` centre, `__1`..`__4` top-left, top-right, bottom-left, bottom-right
   crops of `size` px, `__5`..`__9` the horizontal flips of `__0`..`__4`.
3. **Every model and crop from those frames**: the model's own preprocessing (family interface),
   `frame_features` (the frame embedding before normalisation), batched, bf16 autocast on CUDA.
4. **Files** (`fgclip.features.files`): `<Folder>/<video>__<crop>.npy` per model, written
   atomically; a progress line per finished video so that a killed run resumes where it stopped.
   When every rank is done, rank 0 writes each model's lists, ground truth and manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import transformers

from fgclip import distributed
from fgclip.eval.ground_truth import DEFAULT_CONVENTION, frame_labels, load_ground_truth, video_key
from fgclip.features.files import (
    MANIFEST_NAME,
    SNIPPET_FRAMES,
    FeatureEntry,
    check_ground_truth_lengths,
    feature_path,
    save_feature,
    save_json,
    list_label,
    snippet_ground_truth,
    write_ground_truth,
    write_lists,
)
from fgclip.models.families import VideoModel, family_of, load_video_model
from fgclip.models.layouts import ModelDirError
from pipeline.datasets import get_dataset, label_from_path
from pipeline.decode import VideoError, decode_selected, find_ffmpeg, probe_video
from pipeline.sampling import stride_indices
from pipeline.shards import ShardFormatError, ShardReader, list_shards
from pipeline.ucf_split import read_split_list
from pipeline.video_paths import VIDEO_SUFFIXES, resolve_video

log = logging.getLogger(__name__)

PROGRESS_DIR = ".progress"  # per rank, one JSON line per finished video (resume)
IDENTITY_NAME = "identity.json"  # in PROGRESS_DIR: the weights and rules the folder's features come from
TEN_CROP_DECODE_RATIO = 256 / 224  # ten crops of `size` px from a frame squashed to size * 256 / 224


class FeaturesError(RuntimeError):
    """Inputs that cannot be extracted (no videos, a model of an unknown layout, ...); the message says what to do."""


@dataclass(frozen=True)
class VideoItem:
    """One video of the plan."""

    path: Path  # the video file
    folder: str  # the output folder: the video's folder in its split list (UCF-Crime: its class)
    key: str  # file name without its video extension: "Abuse001_x264" (`fgclip.eval.ground_truth.video_key`)
    label: str  # class, or the dataset's normal label
    split: str  # "train" | "test"


@dataclass(frozen=True)
class SnippetRule:
    """Which source frame stands for each snippet: `min(frames * k + offset, n - 1)`."""

    frames: int = SNIPPET_FRAMES
    offset: int | None = None  # None: frames // 2, the centre (stage 1's test shards)

    @property
    def frame_offset(self) -> int:
        return self.frames // 2 if self.offset is None else self.offset

    def frame_numbers(self, num_source_frames: int) -> np.ndarray:
        return stride_indices(num_source_frames, self.frames, self.frame_offset)

    def describe(self) -> str:
        return (f"one feature per {self.frames} source frames: snippet k is source frame "
                f"min({self.frames} k + {self.frame_offset}, n - 1) (0-based); T = ceil(n / {self.frames})")


@dataclass(frozen=True)
class CropRule:
    crops: int = 1  # 1 or 10
    size: int = 224  # the crop side in pixels (one crop: the squashed frame's side)

    def __post_init__(self) -> None:
        if self.crops not in (1, 10):
            raise FeaturesError(f"--crops {self.crops}: 1 (the model's own preprocessing) or 10 (VadCLIP's ten crops)")

    @property
    def decode_size(self) -> int:
        return self.size if self.crops == 1 else round(self.size * TEN_CROP_DECODE_RATIO)

    def views(self, frames: torch.Tensor) -> list:
        """(T, S', S', 3) uint8 -> one (T, size, size, 3) crop per entry, in the crop order of the
        module docstring, sliced by `crop_batches`: the five crops are views (no copy), the flips
        are made a slice at a time."""
        if self.crops == 1:
            return [frames]
        side, size = frames.shape[1], self.size
        lo, hi, mid = 0, side - size, (side - size) // 2
        corners = [(mid, mid), (lo, lo), (lo, hi), (hi, lo), (hi, hi)]
        views = [frames[:, y:y + size, x:x + size] for y, x in corners]
        return views + [_Flipped(view) for view in views]

    def apply(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, S', S', 3) uint8 -> (crops, T, size, size, 3): every crop materialised."""
        return torch.stack([view[:] for view in self.views(frames)])

    def describe(self) -> str:
        if self.crops == 1:
            return f"1 crop: the frame squashed to {self.size} x {self.size} (stage 1's rule), then the model's own preprocessing"
        return (f"10 crops in VadCLIP's order from the frame squashed to {self.decode_size} x {self.decode_size}: __0 centre, "
                f"__1..__4 top-left, top-right, bottom-left, bottom-right ({self.size} px), __5..__9 their horizontal flips; "
                f"then the model's own preprocessing")


class _Flipped:
    """A crop's horizontal flip, made a batch at a time: a long video's ten crops never exist at once
    (an hour at 30 fps is 6,750 snippets: 10 GB of 224 px crops)."""

    def __init__(self, view: torch.Tensor) -> None:
        self.view = view
        self.shape = view.shape

    def __len__(self) -> int:
        return len(self.view)

    def __getitem__(self, index: slice) -> torch.Tensor:
        return self.view[index].flip(2)


@dataclass
class FeatureModel:
    """One model of the run and where its features go."""

    name: str
    path: Path
    out_dir: Path
    model: VideoModel | None = None
    weights_sha256: dict[str, str] | None = None  # read with the model, not in the timed run (1.5 GB for fgclip2-base)

    def load(self, device: torch.device) -> None:
        try:
            self.model = load_video_model(self.path).to(device).eval()
        except ModelDirError as err:
            raise FeaturesError(f"--checkpoint {self.name}={self.path}: {err}") from None
        self.weights_sha256 = _weights_digest(self.path)


@dataclass
class DecodedVideo:
    item: VideoItem
    frames_uint8: np.ndarray | None  # (T, S', S', 3)
    frame_numbers: np.ndarray | None
    num_source_frames: int = 0
    fps: float = 0.0
    source: str = "decoded"
    skip_reason: str | None = None


@dataclass
class ExtractionSettings:
    snippet: SnippetRule = field(default_factory=SnippetRule)
    crop: CropRule = field(default_factory=CropRule)
    test_crop: int = 0  # the crop the test lists name (one per video, as the field's test lists)
    dataset: str = "ucf-crime"
    annotations: Path | None = None  # the test split's ground truth (official format)
    convention: str = DEFAULT_CONVENTION
    batch_frames: int = 256
    decode_workers: int = 2  # videos decoded at once (`default_decode_workers()` from the CLI)


# --- decoding ---------------------------------------------------------------------------------------


def default_decode_workers() -> int:
    """Videos decoded at once: every core but two (the model's host thread and the file writer), and
    at least two, so that a small machine still decodes one video while the model reads another."""
    return max(2, (os.cpu_count() or 1) - 2)


def decode_video(item: VideoItem, settings: ExtractionSettings) -> DecodedVideo:
    """The snippet frames of one video, squashed to the crop rule's decode size; a skip reason
    (never an exception) for a missing, unreadable or empty video."""
    if not item.path.is_file():
        return DecodedVideo(item, None, None, skip_reason=f"no such file: {item.path}")
    try:
        info = probe_video(item.path)
        if info.num_frames <= 0:
            return DecodedVideo(item, None, None, skip_reason="ffmpeg reports no frames")
        wanted = settings.snippet.frame_numbers(info.num_frames)
        # One ffmpeg thread per video: the decoders run side by side, and the cores they leave keep the
        # model's host thread (kernel launches) and the writer from waiting behind them.
        decoded = decode_selected(item.path, wanted, size=settings.crop.decode_size, threads=1)
    except VideoError as err:
        return DecodedVideo(item, None, None, skip_reason=str(err))
    if not len(decoded.frame_numbers):
        return DecodedVideo(item, None, None, num_source_frames=info.num_frames, fps=info.fps,
                            skip_reason=f"ffmpeg decoded none of its {info.num_frames} frames")
    # A video that ends before its header says: the snippets it holds (its true length is decoded_count).
    true_frames = min(info.num_frames, max(decoded.decoded_count, int(decoded.frame_numbers[-1]) + 1))
    return DecodedVideo(item, decoded.frames_uint8, decoded.frame_numbers, num_source_frames=true_frames, fps=info.fps)


class TestShardFrames:
    """Test videos' snippet frames from stage 1's stride-mode test shards (no second decode)."""

    def __init__(self, shard_dir: Path, settings: ExtractionSettings) -> None:
        self.records: dict[str, tuple[Path, int]] = {}
        shards = list_shards(shard_dir)
        if not shards:
            raise FeaturesError(f"--test-shards {shard_dir}: no shards there (build them with `fgclip-vad frames --test-list`)")
        for path in shards:
            with ShardReader(path) as reader:
                attrs = reader.attrs
                if attrs.sampling != "stride" or attrs.stride != settings.snippet.frames:
                    raise FeaturesError(f"{path}: sampled {attrs.sampling} stride {attrs.stride}; features need test "
                                        f"shards of stride {settings.snippet.frames}")
                if settings.crop.crops != 1 or attrs.height != settings.crop.size:
                    raise FeaturesError(f"{path}: stores {attrs.height} px frames; --test-shards needs --crops 1 "
                                        f"--size {attrs.height} (the frames the shards hold)")
                for meta in reader.metas():
                    self.records.setdefault(Path(meta.video).stem, (path, meta.local_index))

    def frames(self, item: VideoItem, settings: ExtractionSettings) -> DecodedVideo | None:
        where = self.records.get(item.key)
        if where is None:
            return None
        path, index = where
        try:
            with ShardReader(path) as reader:
                meta = reader.metas()[index]
                lo, hi = reader.frame_range(index)
                frames = np.empty((hi - lo, reader.attrs.height, reader.attrs.width, 3), dtype=np.uint8)
                reader.read_frames_into(index, frames)
                frame_numbers = reader.read_frame_index(index)
        except ShardFormatError as err:
            return DecodedVideo(item, None, None, skip_reason=str(err))
        expected = settings.snippet.frame_numbers(meta.num_source_frames)[:len(frame_numbers)]
        if not np.array_equal(frame_numbers, expected):
            raise FeaturesError(f"{path}: record {index} ({item.key}) stores other frames than the snippet rule "
                                f"({settings.snippet.describe()}); rebuild the test shards or drop --test-shards")
        return DecodedVideo(item, frames, np.asarray(frame_numbers), num_source_frames=meta.num_source_frames,
                            fps=meta.fps, source=f"test shards ({path.name})")


# --- features ---------------------------------------------------------------------------------------


@torch.inference_mode()
def snippet_features(model: VideoModel, crops_uint8: torch.Tensor, *, device: torch.device,
                     batch_frames: int) -> np.ndarray:
    """(C, T, S, S, 3) uint8 -> (C, T, D) float32: each frame through the model's preprocessing and
    `frame_features`, `batch_frames` at a time (crops and snippets flattened into one batch stream)."""
    return video_features(model, crops_uint8, device=device, batch_frames=batch_frames).cpu().numpy()


@torch.inference_mode()
def video_features(model: VideoModel, crops_uint8, *, device: torch.device, batch_frames: int) -> torch.Tensor:
    """`snippet_features` left on the device (kernels queued, nothing waited for): (C, T, D) float32.
    `crops_uint8`: a (C, T, S, S, 3) tensor or `CropRule.views`' list."""
    count, snippets = len(crops_uint8), len(crops_uint8[0])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    parts = []
    for batch in crop_batches(crops_uint8, batch_frames):
        with autocast:
            parts.append(model.frame_features(model.preprocess(batch.to(device, non_blocking=True))).float())
    return torch.cat(parts).reshape(count, snippets, -1)


def crop_batches(crops_uint8, batch_frames: int) -> Iterator[torch.Tensor]:
    """The (crop, snippet) frames in that order, `batch_frames` at a time, each batch copied from
    slices of the crops: only one batch of crops is ever materialised."""
    pending, filled = [], 0
    for crop in crops_uint8:
        start = 0
        while start < len(crop):
            take = min(batch_frames - filled, len(crop) - start)
            pending.append(crop[start:start + take])
            filled, start = filled + take, start + take
            if filled == batch_frames:
                yield torch.cat(pending)
                pending, filled = [], 0
    if pending:
        yield torch.cat(pending)


def _weights_digest(model_dir: Path) -> dict[str, str]:
    """sha256 of each weight file of a model directory (what the features were computed with)."""
    digests = {}
    for path in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        sha = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                sha.update(block)
        digests[path.name] = sha.hexdigest()
    return digests


def _progress_file(model: FeatureModel, rank: int) -> Path:
    return model.out_dir / PROGRESS_DIR / f"rank-{rank}.jsonl"


def finished_videos(model: FeatureModel) -> dict[str, dict]:
    """Videos a previous run finished for this model (any rank), by key."""
    done = {}
    for path in sorted((model.out_dir / PROGRESS_DIR).glob("rank-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill: that video is redone
            done[record["key"]] = record
    return done


def output_identity(model: FeatureModel, settings: ExtractionSettings) -> dict:
    """What a model's feature files depend on: its weights, the snippet rule and the crops."""
    if model.weights_sha256 is None:
        model.weights_sha256 = _weights_digest(model.path)
    return {"weights_sha256": model.weights_sha256, "snippet_frames": settings.snippet.frames,
            "snippet_offset": settings.snippet.frame_offset, "crop_size": settings.crop.size,
            "decode_size": settings.crop.decode_size}


def other_features(model: FeatureModel, settings: ExtractionSettings) -> str | None:
    """None when the model's folder is new or holds features of the same weights and rules, else
    what differs (--crops 10 after --crops 1 differs too: its __0 is a centre crop of a larger frame)."""
    path = model.out_dir / PROGRESS_DIR / IDENTITY_NAME
    if not path.is_file():
        return None
    found, wanted = json.loads(path.read_text(encoding="utf-8")), output_identity(model, settings)
    changed = sorted(key for key in set(found) | set(wanted) if found.get(key) != wanted.get(key))
    return "; ".join(f"{key}: {found.get(key)} there, {wanted.get(key)} now" for key in changed) or None


def claim_outputs(models: Sequence[FeatureModel], settings: ExtractionSettings, *, replace_stale: bool,
                  echo: Callable[[str], None]) -> None:
    """Resume only what the same weights and rules wrote. A folder of other features (a model
    trained again, another --size or --snippet-frame) is refused by name, never mixed with new ones;
    with `replace_stale` (the embedded default's own output) it is deleted and extracted again."""
    stale = {model.name: other_features(model, settings) for model in models}
    stale = {name: why for name, why in stale.items() if why}
    distributed.barrier()  # every rank has looked before rank 0 deletes anything
    for model in models:
        if model.name not in stale:
            continue
        if not replace_stale:
            raise FeaturesError(f"{model.out_dir} holds features of other weights or rules than --checkpoint "
                                f"{model.name}={model.path} with these options ({stale[model.name]}); give another "
                                f"--out, or delete that folder to extract again")
        if distributed.rank() == 0:
            echo(f"{model.out_dir}: features of other weights or rules ({stale[model.name]}): extracting again")
            shutil.rmtree(model.out_dir)
    distributed.barrier()
    for model in models:
        identity = model.out_dir / PROGRESS_DIR / IDENTITY_NAME
        if not identity.is_file():
            save_json(identity, output_identity(model, settings))


def _files_of(model: FeatureModel, item: VideoItem, crops: int) -> list[Path]:
    return [feature_path(model.out_dir, item.folder, item.key, crop) for crop in range(crops)]


def _write_video(model: FeatureModel, item: VideoItem, features: np.ndarray, rank: int, record: dict) -> None:
    """One video's crop files for one model, then its progress line (the line says the files are whole)."""
    for crop, path in enumerate(_files_of(model, item, len(features))):
        save_feature(path, features[crop])
    _append_progress(model, rank, record)


def _append_progress(model: FeatureModel, rank: int, record: dict) -> None:
    path = _progress_file(model, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def extract(videos: Sequence[VideoItem], models: Sequence[FeatureModel], settings: ExtractionSettings, *,
            device: torch.device, test_shards: Path | None = None, progress: bool = True, replace_stale: bool = False,
            echo: Callable[[str], None] = print) -> dict[str, dict]:
    """Features of `videos` for every model; returns each model's manifest (rank 0; {} on other ranks).
    `replace_stale`: a model folder of other weights or rules is extracted again instead of refused."""
    from tqdm import tqdm

    if not videos:
        raise FeaturesError("no videos to extract: give --train-list / --test-list or --videos, and --video-root")
    rank, world = distributed.rank(), distributed.world_size()
    for model in models:
        if model.model is None:
            model.load(device)
    claim_outputs(models, settings, replace_stale=replace_stale, echo=echo)
    shard_frames = TestShardFrames(test_shards, settings) if test_shards is not None else None
    done = {model.name: finished_videos(model) for model in models}
    mine = [v for v in videos[rank::world]
            if not all(v.key in done[m.name] and all(p.is_file() for p in _files_of(m, v, settings.crop.crops))
                       for m in models)]
    skipped_now: list[dict] = []
    started = time.perf_counter()
    bar = tqdm(total=len(mine), unit="video", desc=f"features (rank {rank})" if world > 1 else "features",
               disable=not progress or not mine, dynamic_ncols=True)

    def load(item: VideoItem) -> DecodedVideo:
        if shard_frames is not None and item.split == "test":
            from_shards = shard_frames.frames(item, settings)
            if from_shards is not None:
                return from_shards
        return decode_video(item, settings)

    snippets_done = 0
    writes: deque = deque()
    with ThreadPoolExecutor(max_workers=max(1, settings.decode_workers)) as pool, ThreadPoolExecutor(1) as writer:
        queue: deque = deque()
        upcoming = iter(mine)
        for item in upcoming:  # keep the decoders a few videos ahead of the model
            queue.append(pool.submit(load, item))
            if len(queue) > settings.decode_workers:
                break
        while queue:
            decoded = queue.popleft().result()
            nxt = next(upcoming, None)
            if nxt is not None:
                queue.append(pool.submit(load, nxt))
            item = decoded.item
            if decoded.skip_reason is not None:
                skipped_now.append({"video": str(item.path), "key": item.key, "split": item.split,
                                    "reason": decoded.skip_reason})
                bar.write(f"skipped {item.path}: {decoded.skip_reason}")
                bar.update(1)
                continue
            # Frames go to the device once; crops and flips are views taken there, for every model.
            crops = settings.crop.views(torch.from_numpy(decoded.frames_uint8).to(device, non_blocking=True))
            record = {"key": item.key, "video": str(item.path), "folder": item.folder, "label": item.label,
                      "split": item.split, "snippets": int(len(decoded.frame_numbers)),
                      "num_source_frames": int(decoded.num_source_frames), "fps": float(decoded.fps),
                      "source": decoded.source}
            for model in models:
                features = video_features(model.model, crops, device=device, batch_frames=settings.batch_frames).cpu()
                # Files and the progress line are written beside the next video's inference.
                writes.append(writer.submit(_write_video, model, item, features.numpy(), rank, record))
            while writes and writes[0].done():
                writes.popleft().result()  # a failed write (disk full) stops the run here
            snippets_done += len(decoded.frame_numbers)
            bar.update(1)
            bar.set_postfix(snippets_per_s=f"{snippets_done / (time.perf_counter() - started):.0f}", refresh=False)
        for write in writes:
            write.result()
    bar.close()
    skipped_file = models[0].out_dir.parent / PROGRESS_DIR / f"skipped-rank-{rank}.json" if models else None
    if skipped_file is not None:
        save_json(skipped_file, skipped_now)
    distributed.barrier()
    if rank != 0:
        return {}
    skipped = []
    for path in sorted((models[0].out_dir.parent / PROGRESS_DIR).glob("skipped-rank-*.json")):
        skipped += json.loads(path.read_text(encoding="utf-8"))
    return {model.name: finish_model(model, videos, settings, skipped, echo=echo) for model in models}


# --- lists, ground truth, manifest --------------------------------------------------------------------


def _environment() -> dict:
    return {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
            "ffmpeg": find_ffmpeg(), "host": platform.node()}


def finish_model(model: FeatureModel, videos: Sequence[VideoItem], settings: ExtractionSettings,
                 skipped: list[dict], *, echo: Callable[[str], None] = print) -> dict:
    """Lists, ground truth and manifest of one model's finished features (rank 0, after every rank)."""
    done = finished_videos(model)
    planned = {v.key for v in videos}
    # A skip of an earlier run (another world size's rank file) counts only while the video is still not done.
    skipped = list({s["key"]: s for s in skipped if s["key"] in planned and s["key"] not in done}.values())
    crops = settings.crop.crops
    present = [v for v in videos if v.key in done]
    train = [FeatureEntry(path, list_label(v.key, v.label, settings.dataset), v.key, crop) for v in present
             if v.split == "train" for crop, path in enumerate(_files_of(model, v, crops))]
    test_videos = [v for v in present if v.split == "test"]
    test = [FeatureEntry(feature_path(model.out_dir, v.folder, v.key, settings.test_crop),
                         list_label(v.key, v.label, settings.dataset), v.key, settings.test_crop) for v in test_videos]
    lists = {}
    if train:
        lists["train"] = {fmt: str(p.relative_to(model.out_dir)) for fmt, p in write_lists(model.out_dir, "train", train).items()}
    if test:
        lists["test"] = {fmt: str(p.relative_to(model.out_dir)) for fmt, p in write_lists(model.out_dir, "test", test).items()}
    ground_truth = None
    if test_videos and settings.annotations is not None:
        ground_truth = write_test_ground_truth(model, test_videos, done, settings)
    manifest = {
        "model": {"name": model.name, "path": str(model.path.resolve()), "family": family_of(model.path),
                  "weights_sha256": model.weights_sha256 or _weights_digest(model.path), "embed_dim": int(model.model.embed_dim),
                  "image_size": int(model.model.image_size)},
        "dataset": settings.dataset,
        "feature": "the frame embedding before normalisation, float32 [T, D] per video and crop: "
                   + ("CLS -> post-layernorm -> visual projection" if family_of(model.path) == "clip"
                      else "the vision tower's attention-pooling head"),
        "snippet": {"frames": settings.snippet.frames, "offset": settings.snippet.frame_offset,
                    "rule": settings.snippet.describe()},
        "crops": {"count": crops, "size": settings.crop.size, "decode_size": settings.crop.decode_size,
                  "rule": settings.crop.describe(), "test_crop": settings.test_crop},
        "preprocessing": "frames squashed to a square by ffmpeg (bicubic, as stage 1), then the model's own "
                         "preprocess (resize to its input size, its mean and std); bf16 autocast on CUDA",
        "videos": [done[v.key] for v in present],
        "skipped": skipped,
        "lists": lists,
        "ground_truth": ground_truth,
        "environment": _environment(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    save_json(model.out_dir / MANIFEST_NAME, manifest)
    echo(f"{model.name}: {len(present)} videos ({len(train)} train files, {len(test)} test files), "
         f"{len(skipped)} skipped -> {model.out_dir}")
    return manifest


def write_test_ground_truth(model: FeatureModel, test_videos: Sequence[VideoItem], done: dict,
                            settings: ExtractionSettings) -> dict:
    """Both constructions of the test ground truth, checked against the feature files' lengths."""
    dataset, annotations = load_ground_truth(settings.annotations, settings.dataset)
    normal_label = "A" if dataset == "xd-violence" else "Normal"
    keys = [v.key for v in test_videos]
    snippets = [done[k]["snippets"] for k in keys]
    gt = snippet_ground_truth(keys, snippets, annotations, normal_label, settings.snippet.frames)
    for key in keys:
        frames = done[key]["num_source_frames"]
        annotation = annotations.get(key)
        gt.exact[key] = frame_labels(annotation, frames, settings.convention).astype(np.uint8) if annotation is not None \
            else np.zeros(frames, dtype=np.uint8)
    lengths = {key: int(np.load(feature_path(model.out_dir, v.folder, key, settings.test_crop), mmap_mode="r").shape[0])
               for key, v in zip(keys, test_videos)}
    check_ground_truth_lengths(gt, lengths, settings.snippet.frames)
    files = write_ground_truth(model.out_dir, dataset, gt)
    return {"annotations": str(Path(settings.annotations).resolve()), "dataset": dataset,
            "vadclip": "per test video in the test list's order, T x 16 zeros with each annotated [start, end) "
                       "set to 1 (cut at T x 16), concatenated",
            "exact": f"per test video, its true frame count, intervals read as {settings.convention}",
            "files": {name: str(path.relative_to(model.out_dir)) for name, path in files.items()},
            "frames": int(len(gt.vadclip_frames))}


# --- plans ------------------------------------------------------------------------------------------


def items_from_list(list_file: Path, video_root: Path, split: str, dataset: str) -> list[VideoItem]:
    """A split list (`Abuse/Abuse001_x264.mp4` per line, UCF-Crime's format; other datasets' lists
    by their rules, names without extension looked for as .mp4, .avi, ...) -> videos of the plan.
    A video not found keeps its first candidate path and is skipped, with the reason, when extracted."""
    items = []
    for entry in read_split_list(list_file, get_dataset(dataset)):
        found = resolve_video(entry.path, video_root)
        folder = PurePosixPath(entry.path).parent.as_posix()
        items.append(VideoItem(path=found.path or found.tried[0], folder=entry.label if folder == "." else folder,
                               key=video_key(entry.path), label=entry.label, split=split))
    return items


def items_from_folder(folder: Path, split: str, dataset: str) -> list[VideoItem]:
    """Every video file under a folder (its sub-folder names the output folder and, by the
    dataset's rules, the label)."""
    registry_entry = get_dataset(dataset)
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    items = []
    for path in paths:
        relative = path.relative_to(folder).as_posix()
        label = label_from_path(relative, registry_entry)[0]
        items.append(VideoItem(path=path, folder=path.parent.relative_to(folder).as_posix() if path.parent != Path(folder)
                               else label, key=video_key(relative), label=label, split=split))
    return items


def unique_items(items: Iterable[VideoItem]) -> list[VideoItem]:
    """Each video key once (a later duplicate of a key is dropped; keys name the output files)."""
    seen: dict[str, VideoItem] = {}
    for item in items:
        seen.setdefault(item.key, item)
    return list(seen.values())


def settings_dict(settings: ExtractionSettings) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()}
