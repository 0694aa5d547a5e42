"""Stage 1: annotation records + videos -> HDF5 shards and a manifest per sampling setting.

Flow: records are grouped by video; one worker process per video probes it, works out every
frame that any of its records needs under any requested sampling (e.g. T = 64 and T = 256 at
once), decodes the video once keeping only those frames (`pipeline.decode`), and returns one
`ShardRecord` per record and sampling, with its box tracks (`pipeline.tracks`). The parent
collects them and writes shard k of each output directory as soon as the k-th group of
`records_per_shard` input records is resolved.

Determinism and resume: shard k always holds the k-th group of input records minus the
skipped ones, so a rerun produces the same files. Each shard is written atomically
(`pipeline.shards.write_shard`) and the manifest is rewritten after every shard; a rerun keeps
a shard whose file exists and whose manifest entry matches, and redoes the rest. Temp files
(`*.h5.tmp`) are never read, only deleted. A kept shard keeps its skipped records too: after
fixing a broken video, delete the shard named in its `skipped` entry (or the directory) and rerun.

Bad input does not stop the run: a missing, empty or undecodable video, a window past the
video's end or an invalid box skips the record, with its reason in the manifest's `skipped`
list and in the summary. `strict=True` turns the first of these into an error. A region whose
track meets no sampled frame is dropped from its record (listed under `dropped_regions`).
A video that is not found is skipped with every path tried (`pipeline.video_paths`: Label
Studio URLs and `--path-map` rewrites resolve under the video root).

Annotations made at another frame rate show as keyframes past the video's last frame, or a
window ending past it (clipped when within `WINDOW_END_TOLERANCE_S`): each such record is
kept and listed under `warnings` with the video's frame count and rate; `strict=True` makes
it an error.

Keyframes outside a record's window stay in its box tracks (see `pipeline.tracks`): they
shape the interpolation inside the window, and one within half a sampling stride of the
window's edge is held onto the edge sample.

Memory: a worker holds the sampled frames of one video (all its records, all samplings), the
parent the records of the shards still being filled; never a whole decoded video. Frames go
from worker to parent through a spool file (see `_write_spool`).

Manifest (`manifest.json` per output directory, `pipeline.shards.write_manifest`):
`schema_version`, `sampling`, `num_frames` (T, uniform) and `stride` (stride mode), `size`,
`resize_mode`, `records_per_shard`, `source` (annotation file or test list), `source_sha256`,
`created`, `updated`, `shards` (`file`, `records` = record indices in order, `num_frames` =
stored frames), `skipped` (`record_index`, `video`, `kind`, `reason`, `shard`, and `tried`:
the paths looked at, for a video not found), `warnings` (`record_index`, `video`, `kind`,
`message`, `num_frames`, `fps`),
`dropped_regions` (`record_index`, `region`, `caption`, `keyframes`, `sampling`, `reason`) and
`summary` (counts; `complete` is true once a run finished).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import errno
import hashlib
import multiprocessing
import os
import shutil
import threading
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from pipeline import embedded
from pipeline.annotations import AnnotationRecord, read_split_list, validate_annotations
from pipeline.datasets import Dataset, dataset_of_path
from pipeline.decode import CropRegion, VideoError, VideoInfo, crop_for, decode_selected, probe_video, probe_videos
from pipeline.record_policy import RecordPolicy, choose_regions
from pipeline.run_lock import LOCK_FILE_NAME, RunLock, RunLockError
from pipeline.sampling import SamplingSpec, WindowError, window_frames
from pipeline.video_paths import PathMap, resolve_video
from pipeline.shards import (
    RESIZE_MODES,
    SCHEMA_VERSION,
    SHARD_SUFFIX,
    TMP_SUFFIX,
    ShardAttrs,
    ShardFormatError,
    ShardRecord,
    manifest_path,
    read_manifest,
    shard_name,
    write_manifest,
    write_shard,
)
from pipeline.tracks import TrackError, region_tracks


SPOOL_DIR = ".spool"  # in the first output directory: frames on their way from the workers
TRAIN_RECORDS_PER_SHARD = 8  # uniform records (T frames each) per shard file
TEST_RECORDS_PER_SHARD = 4  # whole test videos per shard file


class FramesError(RuntimeError):
    """Stage 1 cannot go on (strict mode hit a bad record, nothing usable, incompatible output dir)."""


def write_failure(path: Path, err: OSError) -> FramesError:
    """The error for a file stage 1 could not write (most often: the disk is full)."""
    full = err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    cause = "the disk is full (or a file size limit was hit)" if full else (err.strerror or str(err))
    return FramesError(f"{path}: cannot write it: {cause}. Finished shards are kept: "
                       f"{'free some space, then ' if full else ''}rerun the same command to continue")


# --- work items -------------------------------------------------------------------------------


@dataclass
class VideoJob:
    """Everything a worker needs for one video: its records and the samplings each one needs."""

    path: Path
    records: list[AnnotationRecord]
    specs: dict[int, list[SamplingSpec]]  # record index -> samplings still to build
    size: int
    resize_mode: str
    probe: VideoInfo | VideoError | None = None  # filled by a batch probe; None = probe it alone
    decoder_threads: int = 0  # ffmpeg decoder and filter threads (0 = ffmpeg's choice)
    spool: Path | None = None  # file that carries the frames to the parent (None: in the result itself)
    build: int = 0  # which of the builds run together this video belongs to
    tried: list[Path] = field(default_factory=list)  # where the video was looked for (all missing if `path` is)
    policy: RecordPolicy = RecordPolicy()  # window strategy, boxless regions, region cap


@dataclass
class Skip:
    record_index: int
    video: str
    kind: str  # short stable code: video-missing, video-unreadable, window-past-end, ...
    reason: str
    tried: list[str] = field(default_factory=list)  # paths looked at, for a video not found

    def to_dict(self) -> dict:
        entry = {"record_index": self.record_index, "video": self.video, "kind": self.kind, "reason": self.reason}
        if self.tried:
            entry["tried"] = self.tried
        return entry


@dataclass
class VideoResult:
    path: Path
    build: int = 0
    # (record index, sampling) -> shard record; with a spool, its frames are still in the spool file
    built: dict[tuple[int, SamplingSpec], ShardRecord] = field(default_factory=dict)
    spool: Path | None = None  # the frames of `built`, back to back in `built`'s order
    skipped: list[Skip] = field(default_factory=list)
    dropped_regions: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)  # records kept with a problem (keyframes past the end, ...)
    decoded_frames: int = 0  # frames the decoder went through (0 if the video was not decoded)
    kept_frames: int = 0  # distinct frames kept and scaled
    decode_passes: int = 0
    seconds: float = 0.0


# --- the worker: one video --------------------------------------------------------------------


def _video_skip_kind(err: VideoError, path: Path) -> str:
    if not path.is_file():
        return "video-missing"
    if path.stat().st_size == 0:
        return "video-empty"
    if "no video stream" in str(err):
        return "no-video-stream"
    return "no-frames" if "no frames" in str(err) else "video-unreadable"


@dataclass
class _RecordPlan:
    record: AnnotationRecord
    start: int
    stop: int
    samples: dict[SamplingSpec, tuple[np.ndarray, float]]  # spec -> (frame numbers, half stride)


def _plan_records(job: VideoJob, num_frames: int, fps: float) -> tuple[list[_RecordPlan], list[Skip], list[dict]]:
    """Each record's window and samples, the records skipped, and the warnings of those kept."""
    plans, skips, warnings = [], [], []
    for record in job.records:
        if job.policy.window_s(record.window_s) is None and record.window_s is not None:
            record = dataclasses.replace(record, window_s=None)  # --window whole-video
        try:
            start, stop = window_frames(record.window_s, fps, num_frames)
        except WindowError as err:
            skips.append(Skip(record.index, record.video, "window-past-end", f"{job.path}: {err}"))
            continue
        samples = {spec: spec.sample(start, stop, num_frames) for spec in job.specs[record.index]}
        plans.append(_RecordPlan(record, start, stop, samples))
        warnings += past_end_warnings(record, num_frames, fps)
    return plans, skips, warnings


def past_end_warnings(record: AnnotationRecord, num_frames: int, fps: float) -> list[dict]:
    """A warning per kind for a record whose keyframes lie past the video's last frame, or whose
    window ends more than a frame past the video's end (it was clipped): the annotation was
    most likely made at another frame rate or on another copy of the video."""
    video_s = num_frames / fps
    facts = {"record_index": record.index, "video": record.video, "num_frames": num_frames, "fps": fps}
    warnings = []
    late = [(j, kf.frame) for j, region in enumerate(record.regions) for kf in region.keyframes if kf.frame >= num_frames]
    if late:
        shown = ", ".join(f"region {j} frame {frame}" for j, frame in late[:5]) + (" ..." if len(late) > 5 else "")
        warnings.append({**facts, "kind": "keyframe-past-end", "keyframes": [frame for _, frame in late],
                         "message": f"{len(late)} keyframes past the last frame of the video ({num_frames} frames at "
                                    f"{fps:g} fps, last frame {num_frames - 1}): {shown}; annotated at another frame "
                                    f"rate? Their boxes only shape the track toward the end"})
    if record.window_s is not None and record.window_s[1] > video_s + 1.0 / fps:
        warnings.append({**facts, "kind": "window-past-end",
                         "message": f"window [{record.window_s[0]:g}, {record.window_s[1]:g}] s ends "
                                    f"{record.window_s[1] - video_s:.2f} s past the end of the video ({video_s:.2f} s, "
                                    f"{num_frames} frames at {fps:g} fps); clipped to the video's end"})
    return warnings


def _wanted_frames(plans: Iterable[_RecordPlan]) -> np.ndarray:
    wanted = [frames for plan in plans for frames, _ in plan.samples.values()]
    return np.unique(np.concatenate(wanted)) if wanted else np.zeros(0, dtype=np.int64)


def process_video(job: VideoJob) -> VideoResult:
    """Probe and decode one video once; build the shard records of all its records and samplings."""
    started = time.perf_counter()
    result = VideoResult(path=job.path, build=job.build)

    def skip_all(records: Iterable[AnnotationRecord], kind: str, reason: str) -> VideoResult:
        result.skipped.extend(Skip(r.index, r.video, kind, reason) for r in records)
        result.seconds = time.perf_counter() - started
        return result

    if job.tried and not job.path.is_file():
        tried = [str(path) for path in job.tried]
        reason = (f"{job.path}: video file not found (record video {job.records[0].video!r}; tried "
                  f"{', '.join(tried)}; see --video-root, --path-map)")
        result.skipped.extend(Skip(r.index, r.video, "video-missing", reason, tried) for r in job.records)
        result.seconds = time.perf_counter() - started
        return result
    try:
        info = job.probe if job.probe is not None else probe_video(job.path)
        if isinstance(info, VideoError):
            raise info
    except VideoError as err:
        return skip_all(job.records, _video_skip_kind(err, job.path), str(err))
    crop = crop_for(info, job.resize_mode)

    num_frames = info.num_frames
    plans, window_skips, warnings = _plan_records(job, num_frames, info.fps)
    try:
        decoded = None
        # The packet count can disagree with what the decoder delivers (damaged files): then the
        # decoder's count is the truth, and the sampling is redone with it (a second pass only
        # when the frames it needs were not decoded in the first).
        for _ in range(2):
            wanted = _wanted_frames(plans)
            if len(wanted) == 0:
                break
            if decoded is None or not np.isin(wanted, decoded.frame_numbers).all():
                decoded = decode_selected(job.path, wanted, size=job.size, crop=crop, threads=job.decoder_threads)
                result.decode_passes += 1
                result.decoded_frames += decoded.decoded_count
            if decoded.decoded_count == num_frames:
                break
            num_frames = decoded.decoded_count
            if num_frames == 0:
                return skip_all(job.records, "no-frames", f"{job.path}: the decoder produced no frames")
            plans, window_skips, warnings = _plan_records(job, num_frames, info.fps)
    except VideoError as err:
        return skip_all(job.records, "video-unreadable", str(err))
    result.skipped.extend(window_skips)
    result.warnings.extend(warnings)
    if decoded is None:
        result.seconds = time.perf_counter() - started
        return result
    result.kept_frames = len(decoded.frame_numbers)

    rows: dict[tuple[int, SamplingSpec], np.ndarray] = {}  # rows of decoded.frames_uint8 per built record
    for plan in plans:
        _build_record(plan, decoded.frame_numbers, info, num_frames, crop, result, rows, job.policy)
    if job.spool is not None and result.built:
        try:
            _write_spool(result, decoded.frames_uint8, rows, job.spool)
        except OSError as err:
            job.spool.unlink(missing_ok=True)
            raise write_failure(job.spool, err) from None
    else:
        for key, record in result.built.items():
            record.frames_uint8 = decoded.frames_uint8[rows[key]]
    result.seconds = time.perf_counter() - started
    return result


# Frames go back to the parent through a file, not the result pipe: pickling hundreds of MB
# through the pool's pipe costs four copies and more CPU than the HDF5 writes (measured,
# docs/PERFORMANCE.md). The file is read back and unlinked at once, so it lives in the page
# cache and usually never reaches the disk; a killed run leaves only files the next run deletes.


def _write_spool(result: VideoResult, decoded_uint8: np.ndarray, rows: dict, spool: Path) -> None:
    """Write each built record's frames (its `rows` of the decoded frames) to `spool`, back to back."""
    spool.parent.mkdir(parents=True, exist_ok=True)
    longest = max(len(r) for r in rows.values())
    staging = np.empty((longest, *decoded_uint8.shape[1:]), dtype=np.uint8)  # reused: no fresh pages per record
    with open(spool, "wb") as out:
        for key in result.built:
            n = len(rows[key])
            np.take(decoded_uint8, rows[key], axis=0, out=staging[:n])
            out.write(memoryview(staging[:n]).cast("B"))
    result.spool = spool


def _read_spool(result: VideoResult, size: int) -> None:
    """Parent side of _write_spool: read the spool into the records' frames and delete it."""
    if result.spool is None:
        return
    frames = np.fromfile(result.spool, dtype=np.uint8).reshape(-1, size, size, 3)
    result.spool.unlink()
    offset = 0
    for record in result.built.values():
        record.frames_uint8 = frames[offset:offset + record.num_frames]
        offset += record.num_frames
    result.spool = None


def _build_record(plan: _RecordPlan, frame_numbers: np.ndarray, info: VideoInfo, num_frames: int,
                  crop: CropRegion | None, result: VideoResult, rows_of: dict,
                  policy: RecordPolicy = RecordPolicy()) -> None:
    """Add the shard records of one record (one per sampling) to `result`, or its skip.

    The records' frames stay empty here; `rows_of` gets which decoded frames each one holds.
    """
    record = plan.record
    built: dict[SamplingSpec, ShardRecord] = {}
    built_rows: dict[SamplingSpec, np.ndarray] = {}
    dropped: list[dict] = []
    for spec, (frame_index, half_stride) in plan.samples.items():
        rows = np.searchsorted(frame_numbers, frame_index)
        found = rows < len(frame_numbers)
        found[found] = frame_numbers[rows[found]] == frame_index[found]
        if not found.all():
            result.skipped.append(Skip(record.index, record.video, "truncated",
                                       f"{info.path}: frame {int(frame_index[~found][0])} could not be decoded "
                                       f"({num_frames} frames decoded)"))
            return
        try:
            boxes, box_mask = region_tracks(record.regions, frame_index, half_stride,
                                            crop.normalised if crop is not None else None)
        except TrackError as err:
            result.skipped.append(Skip(record.index, record.video, "invalid-box", f"{info.path}: {err}"))
            return
        choice = choose_regions(record.regions, [bool(box_mask[r].any()) for r in range(len(record.regions))], policy)
        if choice.skip_reason is not None:
            result.skipped.append(Skip(record.index, record.video, "no-boxes", f"{info.path}: {choice.skip_reason}"))
            return
        keep = choice.keep
        for r, reason in sorted(choice.dropped.items()):
            dropped.append({
                "record_index": record.index, "video": record.video, "region": r, "sampling": str(spec),
                "caption": record.regions[r].caption, "keyframes": [kf.frame for kf in record.regions[r].keyframes],
                "reason": reason + (" inside the centre crop" if crop is not None and reason.startswith("no sampled") else ""),
            })
        regions = [record.regions[r] for r in keep]
        built_rows[spec] = rows
        built[spec] = ShardRecord(
            frames_uint8=np.empty((len(rows), 0, 0, 3), dtype=np.uint8),  # filled from the decoded frames later
            frame_index=frame_index.astype(np.int64),
            boxes=boxes[keep],
            box_mask=box_mask[keep],
            global_caption=record.global_caption,
            region_captions=[region.caption for region in regions],
            hard_negatives=[list(region.hard_negatives) for region in regions],
            video=record.video,
            label=record.label,
            is_anomaly=record.is_anomaly,
            window_s=(plan.start / info.fps, plan.stop / info.fps),
            fps=info.fps,
            num_source_frames=num_frames,
            record_index=record.index,
        )
    for spec, shard_record in built.items():
        result.built[(record.index, spec)] = shard_record
        rows_of[(record.index, spec)] = built_rows[spec]
    result.dropped_regions.extend(dropped)


# --- worker processes -------------------------------------------------------------------------


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker if the parent dies (a SIGKILLed run leaves no orphans)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _start_method() -> str:
    """fork where it exists: workers start at once and a user's script needs no __main__ guard.

    The workers are forked before the parent starts any thread of its own or opens a shard,
    and they only run ffmpeg and numpy; elsewhere (macOS, Windows) spawn.
    """
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


PROBE_BATCH = 16  # videos probed by one ffmpeg run (its start-up outweighs reading a short video)


def probe_jobs(jobs: Sequence[VideoJob]) -> list[VideoJob]:
    """Fill in `probe` of each job with one ffmpeg run for all of them."""
    for job, probe in zip(jobs, probe_videos([job.path for job in jobs])):
        job.probe = probe
    return list(jobs)


def _run_jobs(jobs: Sequence[VideoJob], workers: int, on_result: Callable[[VideoResult], None],
              on_start: Callable[[], None] = lambda: None) -> None:
    """Probe (in batches) and process every job in up to `workers` processes, results as they come.

    Inline for one worker. The pool runs two kinds of task: probing a batch of videos, and
    processing one video. Probes run just ahead of need, and videos are submitted in order a
    little ahead of the results, so finished shards leave memory early. `on_start` runs once
    the workers exist (the caller starts its progress thread there).
    """
    # A small first batch, so the other workers do not wait long for their first video.
    first = min(len(jobs), max(1, workers))
    batches = deque([list(jobs[:first])] +
                    [list(jobs[i:i + PROBE_BATCH]) for i in range(first, len(jobs), PROBE_BATCH)])
    if workers <= 1 or len(jobs) <= 1:
        on_start()
        for batch in batches:
            for job in probe_jobs(batch):
                on_result(process_video(job))
        return
    context = multiprocessing.get_context(_start_method())
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    ready: deque[VideoJob] = deque()
    probing: set[Future] = set()
    processing: set[Future] = set()

    def top_up() -> None:
        if batches and not probing and len(ready) + len(processing) < 3 * workers:
            probing.add(pool.submit(probe_jobs, batches.popleft()))
        while ready and len(processing) < 2 * workers:
            processing.add(pool.submit(process_video, ready.popleft()))

    try:
        top_up()
        on_start()
        while probing or processing:
            done, _ = wait(probing | processing, return_when=FIRST_COMPLETED)
            for future in done:
                if future in probing:
                    probing.discard(future)
                    ready.extend(future.result())
                else:
                    processing.discard(future)
                    on_result(future.result())
            top_up()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- one output directory ---------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass
class _ShardDir:
    """One output directory (one sampling): its manifest, finished groups and groups being filled."""

    path: Path
    spec: SamplingSpec
    attrs: ShardAttrs
    records_per_shard: int
    source_json: str
    manifest: dict
    complete: dict[int, dict] = field(default_factory=dict)  # group -> manifest shard entry (kept)
    old_skips: dict[int, list[dict]] = field(default_factory=dict)  # group -> skipped entries (kept)
    open_groups: dict[int, dict[int, ShardRecord | None]] = field(default_factory=dict)  # group -> record -> result
    skipped: dict[int, list[dict]] = field(default_factory=dict)  # group -> skipped entries of this run
    dropped_regions: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)  # records kept with a problem (see the module docstring)
    prior_skips: list[dict] = field(default_factory=list)  # records dropped before stage 1 (validation)
    shards_written: int = 0
    policy: RecordPolicy = RecordPolicy()

    def settings(self) -> dict:
        # A non-default record policy is part of the settings; the default is left out, so
        # directories written before the policy existed still match.
        policy = {} if self.policy.is_default else {"record_policy": self.policy.manifest_entry()}
        return {**policy,
            "schema_version": SCHEMA_VERSION,
            "sampling": self.spec.mode,
            "num_frames": self.spec.num_frames,
            "stride": self.spec.stride,
            "size": self.attrs.height,
            "resize_mode": self.attrs.resize_mode,
            "records_per_shard": self.records_per_shard,
            "source_sha256": self.attrs.source_sha256,
        }

    @classmethod
    def open(cls, path: Path, spec: SamplingSpec, attrs: ShardAttrs, records_per_shard: int, source_json: str,
             groups: list[list[AnnotationRecord]], policy: RecordPolicy = RecordPolicy()) -> "_ShardDir":
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*" + TMP_SUFFIX):  # left by a killed run; never read
            stale.unlink(missing_ok=True)
        shard_dir = cls(path, spec, attrs, records_per_shard, source_json, manifest={}, policy=policy)
        settings = shard_dir.settings()
        old = None
        if manifest_path(path).is_file():
            try:
                old = read_manifest(path)
            except (ShardFormatError, ValueError) as err:
                raise FramesError(f"{path}: existing manifest cannot be used ({err}); "
                                  f"delete the directory or choose another --out") from err
            differing = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            if "record_policy" in old and "record_policy" not in settings:
                differing["record_policy"] = (old["record_policy"], RecordPolicy().manifest_entry())
            if differing:
                details = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differing.items())
                raise FramesError(
                    f"{path} holds shards built with other settings ({details}); "
                    f"choose another --out or delete that directory to rebuild it"
                )
        shard_dir.manifest = {**settings, "created": old.get("created", _now()) if old else _now(), "source": source_json}
        if old:
            shard_dir._keep_finished(old, groups)
        return shard_dir

    def _keep_finished(self, old: dict, groups: list[list[AnnotationRecord]]) -> None:
        """Keep shard k if its file exists and the old manifest lists it with the records this run
        would write there (group k, in order, minus records the old run skipped, with reasons)."""
        entries = {entry["file"]: entry for entry in old.get("shards", [])}
        old_skips = {s["record_index"]: s for s in old.get("skipped", [])}
        for k, group in enumerate(groups):
            entry = entries.get(shard_name(k))
            if entry is None or not (self.path / entry["file"]).is_file():
                continue
            listed = set(entry["records"])
            skipped_here = [r.index for r in group if r.index not in listed]
            if [r.index for r in group if r.index in listed] != list(entry["records"]) or \
                    any(i not in old_skips for i in skipped_here):
                continue  # the records changed since: rebuild this shard
            self.complete[k] = entry
            self.old_skips[k] = [old_skips[i] for i in skipped_here]
        group_of = {r.index: k for k, group in enumerate(groups) for r in group}
        self.dropped_regions = [d for d in old.get("dropped_regions", [])
                                if group_of.get(d["record_index"]) in self.complete]
        self.warnings = [w for w in old.get("warnings", []) if group_of.get(w["record_index"]) in self.complete]

    def open_group(self, k: int, group: list[AnnotationRecord]) -> None:
        self.open_groups[k] = {r.index: None for r in group}

    def resolve(self, k: int, record_index: int, shard_record: ShardRecord | None, skip: Skip | None) -> None:
        self.open_groups[k][record_index] = shard_record if shard_record is not None else False  # False = skipped
        if skip is not None:
            self.skipped.setdefault(k, []).append({**skip.to_dict(), "shard": shard_name(k)})

    def flush(self, k: int, order: list[int]) -> bool:
        """Write group k's shard if all its records are resolved; True if the group is closed."""
        results = self.open_groups[k]
        if any(value is None for value in results.values()):
            return False
        shard_records = [results[i] for i in order if results[i] is not False]
        if shard_records:
            try:
                write_shard(self.path / shard_name(k), shard_records, self.attrs)
            except OSError as err:
                raise write_failure(self.path / shard_name(k), err) from None
            self.shards_written += 1
            self.complete[k] = {
                "file": shard_name(k),
                "records": [r.record_index for r in shard_records],
                "num_frames": int(sum(r.num_frames for r in shard_records)),
            }
        else:  # every record of the group was skipped: no file; retried on the next run
            stale = self.path / shard_name(k)
            stale.unlink(missing_ok=True)
        del self.open_groups[k]
        self.write_manifest(finished=False)
        return True

    def all_skips(self) -> list[dict]:
        skips = [s for group in self.old_skips.values() for s in group]
        skips += [s for group in self.skipped.values() for s in group]
        return sorted(skips, key=lambda s: s["record_index"])

    def write_manifest(self, *, finished: bool) -> dict:
        shards = [self.complete[k] for k in sorted(self.complete)]
        skips = sorted([*self.prior_skips, *self.all_skips()], key=lambda s: s["record_index"])
        summary = {
            "records": sum(len(entry["records"]) for entry in shards),
            "shards": len(shards),
            "frames": sum(int(entry["num_frames"]) for entry in shards),
            "skipped": len(skips),
            "skipped_by_kind": dict(sorted(Counter(s["kind"] for s in skips).items())),
            "dropped_regions": len(self.dropped_regions),
            "warnings": len(self.warnings),
            "warnings_by_kind": dict(sorted(Counter(w["kind"] for w in self.warnings).items())),
            "unresolved_videos": len({s["video"] for s in skips if s.get("tried")}),
            "complete": finished,
        }
        manifest = {
            **self.manifest,
            "updated": _now(),
            "shards": shards,
            "skipped": skips,
            "dropped_regions": sorted(self.dropped_regions, key=lambda d: (d["record_index"], d["region"])),
            "warnings": sorted(self.warnings, key=lambda w: (w["record_index"], w["kind"])),
            "summary": summary,
        }
        try:
            write_manifest(self.path, manifest)
        except OSError as err:
            raise write_failure(manifest_path(self.path), err) from None
        return manifest


# --- the stage --------------------------------------------------------------------------------


def _check_settings(size: int, resize_mode: str, records_per_shard: int) -> None:
    if resize_mode not in RESIZE_MODES:
        raise FramesError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {resize_mode!r}")
    if size <= 0:
        raise FramesError(f"frame size must be positive, got {size}")
    if records_per_shard <= 0:
        raise FramesError(f"records per shard must be positive, got {records_per_shard}")


class _Build:
    """One set of records and its output directories (one per sampling), run alongside others.

    Opening it checks the settings, claims the directories (a `RunLock` each, released when
    `run_builds` ends, and the manifest), keeps finished shards
    and works out which videos must be decoded for which samplings; `on_result` files each
    video's records into their shard groups and writes every group that is complete.
    """

    def __init__(self, records: Sequence[AnnotationRecord], *, video_root: Path, outputs: dict[SamplingSpec, Path],
                 size: int, resize_mode: str, records_per_shard: int, strict: bool, source_json: str,
                 source_sha256: str, skipped: Sequence[dict] = (), path_map: PathMap = PathMap(),
                 policy: RecordPolicy = RecordPolicy()) -> None:
        _check_settings(size, resize_mode, records_per_shard)
        self.policy = policy
        if not outputs:
            raise FramesError("no output directory given")
        resolved = [Path(path).resolve() for path in outputs.values()]
        if len(set(resolved)) != len(resolved):
            raise FramesError(f"each sampling needs its own output directory, got {[str(p) for p in outputs.values()]}")
        indices = [r.index for r in records]
        if len(set(indices)) != len(indices):
            raise FramesError("record indices are not unique; pass the records of one annotation file")
        if strict and skipped:
            first = skipped[0]
            raise FramesError(f"--strict: record {first['record_index']} ({first['video']}) is unusable: {first['reason']}")
        self.records, self.size, self.resize_mode, self.strict = list(records), size, resize_mode, strict
        self.prior_skips = list(skipped)
        # Each output directory is this run's alone until it ends (a second run is refused).
        self.locks: list[RunLock] = []
        try:
            for path in outputs.values():
                self.locks.append(lock_output_dir(Path(path)))
            self._open(records, video_root, outputs, size, resize_mode, records_per_shard, source_json, source_sha256,
                       skipped, path_map)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give up the output directories (the run ended, or failed)."""
        for lock in self.locks:
            lock.release()
        self.locks = []

    def _open(self, records, video_root, outputs, size, resize_mode, records_per_shard, source_json, source_sha256,
              skipped, path_map) -> None:
        groups = [list(records[i:i + records_per_shard]) for i in range(0, len(records), records_per_shard)]
        self.group_of = {r.index: k for k, group in enumerate(groups) for r in group}
        self.order_of = {k: [r.index for r in group] for k, group in enumerate(groups)}

        self.dirs: dict[SamplingSpec, _ShardDir] = {}
        self.spec_of = {str(spec): spec for spec in outputs}
        for spec, path in outputs.items():
            attrs = ShardAttrs(sampling=spec.mode, num_frames=spec.num_frames, stride=spec.stride, height=size,
                               width=size, resize_mode=resize_mode, source_json=source_json, source_sha256=source_sha256)
            shard_dir = _ShardDir.open(Path(path), spec, attrs, records_per_shard, source_json, groups, self.policy)
            shard_dir.prior_skips = list(skipped)
            shard_dir.write_manifest(finished=False)  # from now on the directory has one
            self.dirs[spec] = shard_dir
        self.spool_root = next(iter(self.dirs.values())).path / SPOOL_DIR
        shutil.rmtree(self.spool_root, ignore_errors=True)  # left by a killed run

        # Which record needs which samplings, grouped by video in order of first appearance.
        self.needs: dict[int, list[SamplingSpec]] = {}
        for spec, shard_dir in self.dirs.items():
            for k, group in enumerate(groups):
                if k in shard_dir.complete:
                    continue
                shard_dir.open_group(k, group)
                for record in group:
                    self.needs.setdefault(record.index, []).append(spec)
        self.by_video: OrderedDict[Path, list[AnnotationRecord]] = OrderedDict()
        self.tried: dict[Path, list[Path]] = {}  # video -> paths tried, for videos not found
        for record in records:
            if record.index in self.needs:
                found = resolve_video(record.video, Path(video_root), path_map)
                path = found.path if found.path is not None else found.tried[0]
                if found.path is None:
                    self.tried[path] = found.tried
                self.by_video.setdefault(path, []).append(record)
        self.stats: Counter = Counter()
        self.run_skips: list[dict] = []

    def jobs(self, tag: int, decoder_threads: int, spool: bool) -> list[VideoJob]:
        # Named by run: a dying earlier run's worker cannot write into this run's spool files.
        spool_dir = self.spool_root / f"run-{os.getpid()}"
        return [VideoJob(path, recs, {r.index: self.needs[r.index] for r in recs}, self.size, self.resize_mode,
                         decoder_threads=decoder_threads, build=tag,
                         spool=spool_dir / f"video-{i:06d}.u8" if spool else None, tried=self.tried.get(path, []),
                         policy=self.policy)
                for i, (path, recs) in enumerate(self.by_video.items())]

    def on_result(self, result: VideoResult) -> None:
        _read_spool(result, self.size)
        self.stats["videos"] += 1
        self.stats["decoded_frames"] += result.decoded_frames
        self.stats["kept_frames"] += result.kept_frames
        self.stats["decode_passes"] += result.decode_passes
        skipped_now = {s.record_index: s for s in result.skipped}
        if self.strict and result.warnings:
            w = result.warnings[0]
            raise FramesError(f"--strict: record {w['record_index']} ({w['video']}): {w['message']}")
        if self.strict and (skipped_now or result.dropped_regions):
            if skipped_now:
                first = next(iter(skipped_now.values()))
                raise FramesError(f"--strict: record {first.record_index} ({first.video}) skipped: {first.reason}")
            d = result.dropped_regions[0]
            raise FramesError(f"--strict: record {d['record_index']} ({d['video']}) region {d['region']} "
                              f"dropped: {d['reason']}")
        self.run_skips.extend(s.to_dict() for s in skipped_now.values())
        touched: set[tuple[SamplingSpec, int]] = set()
        for spec, shard_dir in self.dirs.items():
            for record_index, skip in skipped_now.items():
                k = self.group_of[record_index]
                if k in shard_dir.open_groups:
                    shard_dir.resolve(k, record_index, None, skip)
                    touched.add((spec, k))
        for (record_index, spec), shard_record in result.built.items():
            k = self.group_of[record_index]
            self.dirs[spec].resolve(k, record_index, shard_record, None)
            touched.add((spec, k))
        for dropped in result.dropped_regions:
            self.dirs[self.spec_of[dropped["sampling"]]].dropped_regions.append(dropped)
        kept_warnings = [w for w in result.warnings if w["record_index"] not in skipped_now]
        for shard_dir in self.dirs.values():
            shard_dir.warnings.extend(w for w in kept_warnings if self.group_of[w["record_index"]] in shard_dir.open_groups)
        for spec, k in sorted(touched, key=lambda t: (t[1], str(t[0]))):
            self.dirs[spec].flush(k, self.order_of[k])

    def finish(self, elapsed_s: float) -> dict:
        """Final manifests and the summary; FramesError if no usable record remains."""
        shutil.rmtree(self.spool_root, ignore_errors=True)
        manifests = {spec: shard_dir.write_manifest(finished=True) for spec, shard_dir in self.dirs.items()}
        written = sum(d.shards_written for d in self.dirs.values())
        summary = {
            "outputs": {str(spec): str(shard_dir.path) for spec, shard_dir in self.dirs.items()},
            "records": len(self.records),
            "videos_decoded": self.stats["videos"],
            "decoded_frames": self.stats["decoded_frames"],
            "kept_frames": self.stats["kept_frames"],
            "decode_passes": self.stats["decode_passes"],
            "shards_written": written,
            "shards_kept": sum(len(d.complete) for d in self.dirs.values()) - written,
            "per_output": {str(spec): m["summary"] for spec, m in manifests.items()},
            "skipped": sorted([*self.prior_skips, *self.run_skips], key=lambda s: s["record_index"]),
            "elapsed_s": round(elapsed_s, 3),
        }
        if min(m["summary"]["records"] for m in manifests.values()) == 0:
            kinds = Counter(s["kind"] for s in summary["skipped"])
            raise FramesError(
                f"no usable records: all {len(self.records) + len(self.prior_skips)} were skipped "
                f"({', '.join(f'{n} {k}' for k, n in kinds.most_common()) or 'none given'}); "
                f"see 'skipped' in {manifest_path(next(iter(self.dirs.values())).path)}"
            )
        return summary


def lock_output_dir(path: Path) -> RunLock:
    """Hold `path` for this run; FramesError naming the other run if one is writing there."""
    try:
        return RunLock(path, what="fgclip-vad frames", hint="choose another --out").acquire()
    except RunLockError as err:
        raise FramesError(str(err)) from None


def run_builds(builds: Sequence[_Build], *, workers: int | None = None, progress: bool = True) -> list[dict]:
    """Decode the videos of all `builds` in one pool of workers; one summary per build.

    Running builds together (the embedded default's training and test shards) keeps every
    worker busy across the end of one and the start of the next.
    """
    started = time.perf_counter()
    workers = workers if workers is not None else default_workers()
    num_videos = sum(len(b.by_video) for b in builds)
    # Each worker's ffmpeg gets its share of the cores: threads that wait on each other only add cost.
    parallel = min(workers, num_videos)
    decoder_threads = max(1, default_workers() // parallel) if parallel > 1 else 0
    jobs = [job for tag, b in enumerate(builds) for job in b.jobs(tag, decoder_threads, spool=parallel > 1)]
    bar: tqdm | None = None

    def start_progress() -> None:
        nonlocal bar
        bar = tqdm(total=len(jobs), unit="video", desc="frames", disable=not progress or not jobs, dynamic_ncols=True)

    def on_result(result: VideoResult) -> None:
        builds[result.build].on_result(result)
        bar.update(1)
        bar.set_postfix(skipped=sum(len(b.run_skips) for b in builds), refresh=False)

    try:
        _run_jobs(jobs, workers, on_result, start_progress)
        elapsed = time.perf_counter() - started
        return [b.finish(elapsed) for b in builds]
    finally:
        if bar is not None:
            bar.close()
        for b in builds:
            shutil.rmtree(b.spool_root, ignore_errors=True)
            b.release()


def build(
    records: Sequence[AnnotationRecord], *, video_root: Path, outputs: dict[SamplingSpec, Path], size: int,
    resize_mode: str, records_per_shard: int, workers: int | None, strict: bool, source_json: str,
    source_sha256: str, skipped: Sequence[dict] = (), progress: bool = True, path_map: PathMap = PathMap(),
    policy: RecordPolicy = RecordPolicy(),
) -> dict:
    """The stage for any mix of samplings (one decode per video); see build_shards / build_test_shards.
    `policy` (`pipeline.record_policy`): window strategy, boxless regions, region cap."""
    one = _Build(records, video_root=video_root, outputs=outputs, size=size, resize_mode=resize_mode,
                 records_per_shard=records_per_shard, strict=strict, source_json=source_json,
                 source_sha256=source_sha256, skipped=skipped, path_map=path_map, policy=policy)
    return run_builds([one], workers=workers, progress=progress)[0]


def build_shards(records: list[AnnotationRecord], *, video_root: Path, out_dirs: dict[int, Path], size: int = 224,
                 resize_mode: str = "squash", records_per_shard: int = TRAIN_RECORDS_PER_SHARD,
                 workers: int | None = None,
                 strict: bool = False, source_json: str = "", source_sha256: str = "",
                 skipped: Sequence[dict] = (), progress: bool = True, policy: RecordPolicy = RecordPolicy()) -> dict:
    """Training shards: T uniform samples per record for every T in `out_dirs` (T -> directory).

    Each video is decoded once for all T. `skipped` lists records dropped before stage 1 (e.g.
    by validation: dicts with record_index, video, kind, reason); they go into every manifest.
    Returns the run's summary; raises FramesError if nothing usable remains or, with `strict`,
    at the first skipped record.
    """
    outputs = {SamplingSpec.uniform(t): Path(path) for t, path in out_dirs.items()}
    return build(records, video_root=video_root, outputs=outputs, size=size, resize_mode=resize_mode,
                 records_per_shard=records_per_shard, workers=workers, strict=strict, source_json=source_json,
                 source_sha256=source_sha256, skipped=skipped, progress=progress, policy=policy)


def split_list_records(test_list: Path, dataset: Dataset | None = None) -> list[AnnotationRecord]:
    """Records of the videos of an official split list: label by the dataset's rule (`dataset`, or
    each line's own from its path), no captions, no regions."""
    if dataset is None:
        with Path(test_list).open(encoding="utf-8") as handle:
            first = next((line.split()[0] for line in handle if line.split()), "")
        dataset = dataset_of_path(first)
    return [
        AnnotationRecord(index=i, video=entry.path, global_caption="", regions=(), window_s=None,
                         label=entry.label, is_anomaly=entry.is_anomaly, dataset=dataset.name)
        for i, entry in enumerate(read_split_list(Path(test_list), dataset))
    ]


def _test_build(test_list: Path, *, video_root: Path, out_dir: Path, stride: int, size: int, resize_mode: str,
                records_per_shard: int, strict: bool, dataset: Dataset | None = None,
                path_map: PathMap = PathMap()) -> _Build:
    test_list = Path(test_list)
    try:
        records = split_list_records(test_list, dataset)
        sha256 = hashlib.sha256(test_list.read_bytes()).hexdigest()
    except (OSError, ValueError) as err:
        raise FramesError(f"test list {test_list} cannot be read: {err}") from err
    return _Build(records, video_root=video_root, outputs={SamplingSpec.strided(stride): Path(out_dir)}, size=size,
                  resize_mode=resize_mode, records_per_shard=records_per_shard, strict=strict,
                  source_json=str(test_list), source_sha256=sha256, path_map=path_map)


def build_test_shards(test_list: Path, *, video_root: Path, out_dir: Path, stride: int = 16, size: int = 224,
                      resize_mode: str = "squash", records_per_shard: int = TEST_RECORDS_PER_SHARD,
                      workers: int | None = None, strict: bool = False, progress: bool = True,
                      dataset: Dataset | None = None, path_map: PathMap = PathMap()) -> dict:
    """Evaluation shards: every video of `test_list` sampled once per `stride` source frames.

    Labels follow `dataset`'s naming (default: the dataset the list's first video path names,
    `pipeline.datasets.dataset_of_path`). XD-Violence's `annotations.txt` works as a list of its
    violent test videos; a name without extension is looked for as .mp4, .avi, ... under the root.
    """
    test = _test_build(test_list, video_root=video_root, out_dir=out_dir, stride=stride, size=size,
                       resize_mode=resize_mode, records_per_shard=records_per_shard, strict=strict,
                       dataset=dataset, path_map=path_map)
    return run_builds([test], workers=workers, progress=progress)[0]


def validation_skips(report) -> list[dict]:
    """Manifest entries for the records validation dropped (one per record, its first problem)."""
    skips: dict[int, dict] = {}
    dropped = set(report.dropped)
    for problem in report.problems:
        index = problem.record_index
        if index is None or index not in dropped or index in skips:
            continue
        skips[index] = {"record_index": index, "video": problem.video, "kind": f"validation-{problem.kind}",
                        "reason": f"{problem.field}: {problem.message}" if problem.field else problem.message}
    return [skips[i] for i in sorted(skips)]


def build_from_annotations(annotations: Path, *, video_root: Path | None = None, out_root: Path | None = None,
                           num_frames: Sequence[int] = (), size: int = 224, resize_mode: str = "squash",
                           records_per_shard: int | None = None, workers: int | None = None, strict: bool = False,
                           test_split=None, allow_test_overlap: bool = False, drop_test_overlap: bool = False,
                           translations: dict[str, str] | None = None, path_map: PathMap = PathMap(),
                           report_problems: Callable[[str], None] = print, progress: bool = True,
                           model_family: str = "clip", policy: RecordPolicy = RecordPolicy()) -> dict:
    """Stage 1 from an annotation JSON: validate it, then build training shards for every T.

    Writes OUT_ROOT/train_t{T}/ per T in `num_frames` (default 256) into `out_root` (default
    data/shards/<annotation file name>), videos relative to `video_root` (default the file's
    folder). Validation errors (test-split overlap unless allowed, records unusable as written
    unless not `strict`) stop it before anything is built: `report_problems` gets the full
    report, the FramesError says how many. Warnings go to `report_problems` as one line.
    `test_split` is what `validate_annotations` takes (None, a path, or {dataset: path});
    `path_map` rewrites the records' video paths as `build` does; `model_family` is the family to
    be trained (which non-Latin captions are native, see `validate_annotations`).
    Records validation dropped are listed as skipped in every manifest. Returns the summary.
    """
    from pipeline.annotations import FATAL_FILE_KINDS, format_report

    annotations = Path(annotations)
    report = validate_annotations(annotations, test_split=test_split,
                                  allow_test_overlap=allow_test_overlap, drop_test_overlap=drop_test_overlap,
                                  translations=translations, drop_invalid=not strict, model_family=model_family)
    fatal = [p for p in report.problems if p.kind in FATAL_FILE_KINDS]
    if fatal:
        raise FramesError(fatal[0].message)
    if report.errors():
        report_problems(format_report(report))
        raise FramesError(f"{annotations}: {len(report.errors())} validation errors (listed above); nothing was built")
    if report.warnings():
        counts = ", ".join(f"{n} {kind}" for (kind, _), n in report.counts_by_severity().items())
        report_problems(f"validation: {len(report.records)} usable records; warnings: {counts} "
                        f"(`fgclip-vad validate {annotations}` lists them)")
    root = Path(out_root) if out_root else embedded.SHARD_ROOT / annotations.stem
    counts = sorted(set(num_frames)) or [256]
    return build(report.records, video_root=Path(video_root) if video_root else annotations.parent,
                 outputs={SamplingSpec.uniform(t): root / embedded.train_shard_dir(t).name for t in counts},
                 size=size, resize_mode=resize_mode, records_per_shard=records_per_shard or TRAIN_RECORDS_PER_SHARD,
                 workers=workers, strict=strict, source_json=str(annotations), source_sha256=report.source_sha256,
                 skipped=validation_skips(report), progress=progress, path_map=path_map, policy=policy)


def embedded_output_dirs(shard_root: Path | None = None) -> tuple[dict[int, Path], Path]:
    """(T -> train shard dir, test shard dir) of the embedded default, under `shard_root` if given."""
    train = {t: embedded.train_shard_dir(t) for t in embedded.TRAIN_FRAME_COUNTS}
    test = embedded.test_shard_dir(embedded.TEST_STRIDE)
    if shard_root is None:
        return train, test
    return {t: Path(shard_root) / d.name for t, d in train.items()}, Path(shard_root) / test.name


def ensure_embedded_dataset() -> None:
    """Generate the synthetic dataset if missing, or again if the generator changed since.

    An existing dataset keeps its seed and size (tests use the tiny one); one without the
    generator's completion stamp was put there by hand and is used as it is.
    """
    from pipeline import synth

    if not embedded.TRAIN_JSON.is_file():
        synth.generate_dataset()
        return
    try:
        stamp = synth.summary(embedded.SYNTH_DIR)
    except (OSError, ValueError):
        return
    synth.generate_dataset(embedded.SYNTH_DIR, stamp.get("seed", embedded.SYNTH_SEED), size=stamp.get("size", "default"))


def _remove_if_other_source(shard_dir: Path, source_sha256: str) -> None:
    if not shard_dir.is_dir():
        return
    with lock_output_dir(shard_dir):  # another run may be writing there: never delete under it
        try:
            manifest = read_manifest(shard_dir)
        except ShardFormatError:
            return  # no manifest, or one `frames` refuses with its own message
        if manifest.get("source_sha256") != source_sha256:
            for entry in shard_dir.iterdir():
                if entry.name == LOCK_FILE_NAME:
                    continue  # held: deleting it would let a second run lock a new file
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def build_embedded_default(*, shard_root: Path | None = None, workers: int | None = None, strict: bool = False,
                           progress: bool = True) -> dict:
    """The embedded default: generate the synthetic dataset if missing, then its train and test shards.

    Train shards for every T in `embedded.TRAIN_FRAME_COUNTS` (one decode per video), test
    shards at `embedded.TEST_STRIDE`, frames at `embedded.FRAME_SIZE`, into the directories
    `pipeline.embedded` names (or the same names under `shard_root`). What is already complete
    is kept; shards of an older generated dataset are deleted and rebuilt.
    """
    ensure_embedded_dataset()
    report = validate_annotations(embedded.TRAIN_JSON, test_split=embedded.TEST_LIST)
    if report.errors():
        first = report.errors()[0]
        raise FramesError(
            f"the embedded default {embedded.TRAIN_JSON} fails validation ({len(report.errors())} errors, first: "
            f"{first.message}); regenerate it with `make clean-data` then `make frames`"
        )
    train_dirs, test_dir = embedded_output_dirs(shard_root)
    # Shards of an earlier generated dataset are stale, not precious: rebuilt, not refused.
    for path in train_dirs.values():
        _remove_if_other_source(path, report.source_sha256)
    _remove_if_other_source(test_dir, hashlib.sha256(embedded.TEST_LIST.read_bytes()).hexdigest())
    train = _Build(report.records, video_root=embedded.VIDEO_ROOT,
                   outputs={SamplingSpec.uniform(t): path for t, path in train_dirs.items()}, size=embedded.FRAME_SIZE,
                   resize_mode="squash", records_per_shard=TRAIN_RECORDS_PER_SHARD, strict=strict,
                   source_json=str(embedded.TRAIN_JSON),
                   source_sha256=report.source_sha256)
    try:
        test = _test_build(embedded.TEST_LIST, video_root=embedded.TEST_VIDEO_ROOT, out_dir=test_dir,
                           stride=embedded.TEST_STRIDE, size=embedded.FRAME_SIZE, resize_mode="squash",
                           records_per_shard=TEST_RECORDS_PER_SHARD, strict=strict)
    except BaseException:
        train.release()
        raise
    # The test videos are the long ones: started first, they do not hold up the end of the run.
    test_summary, train_summary = run_builds([test, train], workers=workers, progress=progress)
    return {"train": train_summary, "test": test_summary}


def shard_files(shard_dir: Path) -> list[Path]:
    """Complete shard files present in a directory (temp files excluded), sorted."""
    return sorted(p for p in Path(shard_dir).glob("shard-*" + SHARD_SUFFIX))
