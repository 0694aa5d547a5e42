"""The HDF5 shard format: the one contract between stage 1 (writes) and stage 2 (reads).

Everything that knows what a shard looks like imports it from here: the writer in
`pipeline.frames`, the loader in `fgclip.train.loader`, evaluation and the tests.

Layout of one shard file (N records, F stored frames in all, R region slots, K negative slots)::

    dataset            dtype    shape         meaning
    frames             uint8    (F, H, W, 3)  RGB frames of all records, record after record
    frame_offset       int64    (N + 1,)      record i owns rows frame_offset[i]:frame_offset[i+1]
    frame_index        int64    (F,)          0-based source frame number of each stored frame
    boxes              float32  (F, R, 4)     per stored frame and region: x1, y1, x2, y2 in 0..1
                                              of the stored (resized) frame
    box_mask           bool     (F, R)        the region is visible / annotated on that frame
    region_count       int32    (N,)          regions of the record (slots >= count are padding)
    global_caption     str      (N,)          UTF-8
    region_captions    str      (N, R)        "" in padding slots
    hard_negatives     str      (N, R, K)     "" where a region has fewer (or no) negatives
    video              str      (N,)          video path as written in the annotation file
    label              str      (N,)          UCF-Crime class ("Normal" for normal videos)
    is_anomaly         bool     (N,)
    window_s           float64  (N, 2)        start_s, end_s of the sampled window
    fps                float64  (N,)          native frame rate of the source video
    num_source_frames  int64    (N,)          frames of the whole source video
    record_index       int64    (N,)          index of the record in the source annotation file

One flat frame axis serves both sampling modes: `uniform` (training, exactly T frames per
record, so record i is rows i*T:(i+1)*T and each record is one HDF5 chunk) and `stride`
(test videos, one frame every `stride` source frames, a different count per video).

`frames` is chunked (one record per chunk in uniform mode) and carries HDF5's Fletcher-32
checksum filter, so a flipped byte on disk fails the read instead of training on garbage.
It is not compressed: decoded surveillance frames shrink little under the fast filters, and
the loader's budget is I/O bandwidth, not disk space (docs/PERFORMANCE.md has the figures).
Every other numeric dataset carries the same filter (boxes and masks chunked like the frames,
so damage there names its record too), and an optional `text_sha256` (N, 32) uint8 dataset
holds a SHA-256 of each record's strings, which live in a heap no HDF5 filter covers. The
file's own structure (superblock, object headers, chunk indices) is checksummed by HDF5
itself (`libver="latest"`). Readers check what a shard has; shards written before the
digests existed read as before. docs/RELIABILITY.md has the cost (under 0.1 % of the bytes).

Files are written under a temporary name (a failed write, e.g. on a full disk, is kept from
HDF5 and raised after), fsync'ed and renamed only when complete, so a file named
`shard-XXXXX.h5` is always whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

SCHEMA_VERSION = 1
SHARD_SUFFIX = ".h5"
TMP_SUFFIX = ".h5.tmp"
MANIFEST_NAME = "manifest.json"
TEXT_DIGEST_DATASET = "text_sha256"  # optional (N, 32) uint8: record_text_digest of each record
SAMPLING_MODES = ("uniform", "stride")
RESIZE_MODES = ("squash", "center-crop")

_STR = h5py.string_dtype(encoding="utf-8")

# name -> (dtype, axis the first dimension runs over: "frame" or "record")
DATASETS: dict[str, tuple[object, str]] = {
    "frames": (np.uint8, "frame"),
    "frame_index": (np.int64, "frame"),
    "boxes": (np.float32, "frame"),
    "box_mask": (np.bool_, "frame"),
    "frame_offset": (np.int64, "offset"),
    "region_count": (np.int32, "record"),
    "global_caption": (_STR, "record"),
    "region_captions": (_STR, "record"),
    "hard_negatives": (_STR, "record"),
    "video": (_STR, "record"),
    "label": (_STR, "record"),
    "is_anomaly": (np.bool_, "record"),
    "window_s": (np.float64, "record"),
    "fps": (np.float64, "record"),
    "num_source_frames": (np.int64, "record"),
    "record_index": (np.int64, "record"),
}


class ShardFormatError(RuntimeError):
    """A shard or manifest that this version cannot read; the message says how to rebuild."""


class ShardVersionError(ShardFormatError):
    """Shards of another schema version: not damaged, but they must be rebuilt."""


# What h5py raises reading a damaged file: OSError (a chunk fails its checksum, a short read),
# KeyError (an object header fails its checksum), RuntimeError (a damaged link table).
_DAMAGE_ERRORS = (OSError, KeyError, RuntimeError)
REBUILD_ADVICE = "delete it and rerun `fgclip-vad frames` (the same command) to rebuild this shard."


@dataclass
class ShardRecord:
    """One record as stage 1 produces it and stage 2 reads it back."""

    frames_uint8: np.ndarray  # (S, H, W, 3) uint8
    frame_index: np.ndarray  # (S,) int64 source frame numbers
    boxes: np.ndarray  # (R, S, 4) float32, x1 y1 x2 y2 in 0..1
    box_mask: np.ndarray  # (R, S) bool
    global_caption: str
    region_captions: list[str]
    video: str
    label: str
    is_anomaly: bool
    window_s: tuple[float, float]
    fps: float
    num_source_frames: int
    record_index: int
    hard_negatives: list[list[str]] = field(default_factory=list)  # per region, may be empty

    @property
    def num_frames(self) -> int:
        return int(self.frames_uint8.shape[0])

    @property
    def num_regions(self) -> int:
        return len(self.region_captions)

    def check(self) -> None:
        """Raise ValueError if the arrays disagree with each other."""
        s = self.num_frames
        r = self.num_regions
        where = f"record {self.record_index} ({self.video})"
        if self.frames_uint8.dtype != np.uint8 or self.frames_uint8.ndim != 4 or self.frames_uint8.shape[-1] != 3:
            raise ValueError(f"{where}: frames must be uint8 (S,H,W,3), got {self.frames_uint8.dtype} {self.frames_uint8.shape}")
        if self.frame_index.shape != (s,):
            raise ValueError(f"{where}: frame_index shape {self.frame_index.shape} != ({s},)")
        if self.boxes.shape != (r, s, 4) or self.box_mask.shape != (r, s):
            raise ValueError(f"{where}: boxes {self.boxes.shape} / box_mask {self.box_mask.shape} do not match R={r}, S={s}")
        if self.hard_negatives and len(self.hard_negatives) != r:
            raise ValueError(f"{where}: {len(self.hard_negatives)} hard-negative lists for {r} regions")


@dataclass(frozen=True)
class ShardAttrs:
    """File-level attributes: what every record in the shard shares."""

    sampling: str  # "uniform" or "stride"
    num_frames: int  # T in uniform mode, 0 in stride mode
    stride: int  # source frames between samples in stride mode, 0 in uniform mode
    height: int
    width: int
    resize_mode: str  # "squash" or "center-crop"
    source_json: str = ""
    source_sha256: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.sampling == "uniform" and self.num_frames <= 0:
            raise ValueError("uniform sampling needs num_frames > 0")
        if self.sampling == "stride" and self.stride <= 0:
            raise ValueError("stride sampling needs stride > 0")

    def to_h5(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_h5(cls, attrs: h5py.AttributeManager, path: os.PathLike | str) -> "ShardAttrs":
        if "schema_version" not in attrs:
            raise ShardFormatError(f"{path}: no schema_version attribute, so the file is damaged (or not a shard): "
                                   f"{REBUILD_ADVICE}")
        version = int(attrs["schema_version"])
        if version != SCHEMA_VERSION:
            raise ShardVersionError(
                f"{path}: shard schema version {version}, this fgclip-vad reads version {SCHEMA_VERSION}. "
                f"Rebuild the shards with `fgclip-vad frames` (or `make frames`) into a new output directory."
            )
        values = {k: attrs[k] for k in cls.__dataclass_fields__ if k in attrs}
        for key in ("num_frames", "stride", "height", "width", "schema_version"):
            values[key] = int(values[key])
        for key in ("sampling", "resize_mode", "source_json", "source_sha256"):
            if key in values:
                values[key] = str(values[key])
        return cls(**values)


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:05d}{SHARD_SUFFIX}"


class _WriteFailureShield:
    """The temp file, for HDF5's file-object driver, with write failures kept from HDF5.

    HDF5 (2.0) crashed the process (segfault) when a write failed mid-file, e.g. on a full
    disk. Here a failing write is remembered and reported to HDF5 as done; `write_shard` then
    discards the file and raises the remembered OSError. Writing straight to the file (not to
    an in-memory image first) keeps stage 1's parent fast: one pass over the bytes."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def _guarded(self, operation, *args, fallback):
        if self.error is None:
            try:
                return operation(*args)
            except OSError as err:
                self.error = err
        return fallback

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        return self._guarded(self._handle.write, data, fallback=size)

    def truncate(self, size: int | None = None) -> int:
        return self._guarded(self._handle.truncate, size, fallback=size if size is not None else self.tell())

    def flush(self) -> None:
        self._guarded(self._handle.flush, fallback=None)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def readinto(self, target) -> int:
        return self._handle.readinto(target)

    def read(self, size: int = -1) -> bytes:
        return self._handle.read(size)


def write_shard(path: os.PathLike | str, records: Sequence[ShardRecord], attrs: ShardAttrs) -> None:
    """Write `records` to `path` atomically: a temp file, fsync, then rename.

    All records must share the stored frame size of `attrs`; in uniform mode each has exactly
    `attrs.num_frames` frames.
    """
    path = Path(path)
    if not records:
        raise ValueError(f"{path}: refusing to write a shard with no records")
    height, width = attrs.height, attrs.width
    for rec in records:
        rec.check()
        if rec.frames_uint8.shape[1:3] != (height, width):
            raise ValueError(
                f"{path}: record {rec.record_index} ({rec.video}) has frames {rec.frames_uint8.shape[1:3]}, "
                f"shard stores {(height, width)}"
            )
        if attrs.sampling == "uniform" and rec.num_frames != attrs.num_frames:
            raise ValueError(
                f"{path}: record {rec.record_index} ({rec.video}) has {rec.num_frames} frames, uniform shard stores {attrs.num_frames}"
            )

    n = len(records)
    counts = np.array([rec.num_frames for rec in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    max_regions = max(1, max(rec.num_regions for rec in records))
    max_negatives = max(1, max((len(neg) for rec in records for neg in rec.hard_negatives), default=0))
    chunk_frames = attrs.num_frames if attrs.sampling == "uniform" else min(32, total)

    tmp = path.with_name(path.name[: -len(SHARD_SUFFIX)] + TMP_SUFFIX)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "w+b") as handle:
            shield = _WriteFailureShield(handle)
            with h5py.File(shield, "w", libver="latest") as f:
                _fill_shard(f, records, attrs, offsets, max_regions, max_negatives, chunk_frames)
            shield.flush()
            if shield.error is not None:
                raise shield.error
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fill_shard(f: h5py.File, records: Sequence[ShardRecord], attrs: ShardAttrs, offsets: np.ndarray,
                max_regions: int, max_negatives: int, chunk_frames: int) -> None:
    """Every dataset and attribute of one shard, into the open file `f`."""
    n, total, height, width = len(records), int(offsets[-1]), attrs.height, attrs.width
    for key, value in attrs.to_h5().items():
        f.attrs[key] = value
    f.attrs["num_records"] = n
    f.attrs["max_regions"] = max_regions

    frames = f.create_dataset(
        "frames", shape=(total, height, width, 3), dtype=np.uint8,
        chunks=(chunk_frames, height, width, 3), fletcher32=True,
    )
    frame_index = np.empty(total, dtype=np.int64)
    boxes = np.zeros((total, max_regions, 4), dtype=np.float32)
    box_mask = np.zeros((total, max_regions), dtype=bool)
    region_captions = np.full((n, max_regions), "", dtype=object)
    hard_negatives = np.full((n, max_regions, max_negatives), "", dtype=object)
    for i, rec in enumerate(records):
        lo, hi = offsets[i], offsets[i + 1]
        frames[lo:hi] = rec.frames_uint8
        frame_index[lo:hi] = rec.frame_index
        r = rec.num_regions
        boxes[lo:hi, :r] = rec.boxes.transpose(1, 0, 2)
        box_mask[lo:hi, :r] = rec.box_mask.T
        region_captions[i, :r] = rec.region_captions
        for j, negatives in enumerate(rec.hard_negatives):
            hard_negatives[i, j, : len(negatives)] = negatives

    # Every numeric dataset is checksummed like the frames (see the module docstring).
    f.create_dataset("frame_offset", data=offsets, fletcher32=True)
    f.create_dataset("frame_index", data=frame_index, chunks=(chunk_frames,), fletcher32=True)
    f.create_dataset("boxes", data=boxes, chunks=(chunk_frames, max_regions, 4), fletcher32=True)
    f.create_dataset("box_mask", data=box_mask, chunks=(chunk_frames, max_regions), fletcher32=True)
    f.create_dataset("region_count", data=np.array([rec.num_regions for rec in records], dtype=np.int32), fletcher32=True)
    texts = {
        "global_caption": [rec.global_caption for rec in records],
        "region_captions": region_captions,
        "hard_negatives": hard_negatives,
        "video": [rec.video for rec in records],
        "label": [rec.label for rec in records],
    }
    for name, values in texts.items():
        f.create_dataset(name, data=values, dtype=_STR)
    digests = [record_text_digest(rec.global_caption, region_captions[i], hard_negatives[i], rec.video, rec.label)
               for i, rec in enumerate(records)]
    f.create_dataset(TEXT_DIGEST_DATASET, data=np.array(digests, dtype=np.uint8).reshape(n, 32), fletcher32=True)
    for name, values in (
        ("is_anomaly", np.array([rec.is_anomaly for rec in records], dtype=bool)),
        ("window_s", np.array([rec.window_s for rec in records], dtype=np.float64)),
        ("fps", np.array([rec.fps for rec in records], dtype=np.float64)),
        ("num_source_frames", np.array([rec.num_source_frames for rec in records], dtype=np.int64)),
        ("record_index", np.array([rec.record_index for rec in records], dtype=np.int64)),
    ):
        f.create_dataset(name, data=values, fletcher32=True)


def _decode(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_text_digest(global_caption: str, region_captions, hard_negatives, video: str, label: str) -> np.ndarray:
    """SHA-256 (32 uint8) of one record's strings as stored: captions, negatives, video, label.

    HDF5 keeps variable-length strings in a heap that no filter checksums, so the writer stores
    these digests (a checksummed dataset) and the reader compares them; shards written before
    the digests existed are read unchecked.
    """
    digest = hashlib.sha256()
    values = [global_caption, *np.asarray(region_captions, dtype=object).ravel(),
              *np.asarray(hard_negatives, dtype=object).ravel(), video, label]
    for value in values:
        encoded = str(value).encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return np.frombuffer(digest.digest(), dtype=np.uint8)


@dataclass(frozen=True)
class RecordMeta:
    """Everything about a record except its pixels and boxes (small; the loader keeps all of them)."""

    shard: str
    local_index: int
    num_frames: int
    global_caption: str
    region_captions: tuple[str, ...]
    hard_negatives: tuple[tuple[str, ...], ...]  # per region, "" entries dropped
    video: str
    label: str
    is_anomaly: bool
    window_s: tuple[float, float]
    fps: float
    num_source_frames: int
    record_index: int


class ShardReader:
    """Read access to one shard file. Open it in the process that reads (never before fork)."""

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        if self.path.name.endswith(TMP_SUFFIX):
            raise ShardFormatError(f"{self.path}: an unfinished shard (temp file); rerun `fgclip-vad frames` to complete it")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise ShardFormatError(
                f"{self.path}: not a readable HDF5 shard ({err}). Delete it and rerun `fgclip-vad frames` to rebuild it."
            ) from err
        try:
            self.attrs = ShardAttrs.from_h5(self._file.attrs, self.path)
            missing = [name for name in DATASETS if name not in self._file]
            if missing:
                raise ShardFormatError(f"{self.path}: missing datasets {missing}; rebuild with `fgclip-vad frames`")
            self.offsets = self._file["frame_offset"][:]
            self.num_records = len(self.offsets) - 1
            self.max_regions = int(self._file["boxes"].shape[1])
        except ShardFormatError:
            self._file.close()
            raise
        except (*_DAMAGE_ERRORS, ValueError, TypeError) as err:  # a damaged header, attribute or offset table
            self._file.close()
            raise ShardFormatError(f"{self.path}: the file is damaged ({err}): {REBUILD_ADVICE}") from err
        self.damaged: dict[int, str] = {}  # local record index -> why, for records metas() left out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frame_range(self, i: int) -> tuple[int, int]:
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def read_frames_into(self, i: int, out: np.ndarray, rows: np.ndarray | slice | None = None) -> None:
        """Read record i's frames (or only `rows` of them, sorted, or a slice) into `out`, e.g. a shared buffer.

        Reading whole records (or a contiguous slice of one) goes straight from the chunk into
        `out` without a temporary copy.
        """
        lo, hi = self.frame_range(i)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(hi - lo)
            if step != 1:
                raise ValueError(f"{self.path}: record {i}: read_frames_into takes contiguous slices, got step {step}")
        try:
            dataset = self._file["frames"]
            if rows is None:
                dataset.read_direct(out, source_sel=np.s_[lo:hi])
            elif isinstance(rows, slice):
                dataset.read_direct(out, source_sel=np.s_[lo + start:lo + stop])
            else:
                out[...] = dataset[lo + np.asarray(rows)]
        except _DAMAGE_ERRORS as err:
            raise self._damaged_record(i, "frames", err) from err

    def read_boxes(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(R, S, 4) boxes and (R, S) mask of record i, R = the shard's region slots."""
        lo, hi = self.frame_range(i)
        try:
            boxes = self._file["boxes"][lo:hi].transpose(1, 0, 2)
            mask = self._file["box_mask"][lo:hi].T
        except _DAMAGE_ERRORS as err:
            raise self._damaged_record(i, "boxes", err) from err
        return np.ascontiguousarray(boxes), np.ascontiguousarray(mask)

    def read_frame_index(self, i: int) -> np.ndarray:
        lo, hi = self.frame_range(i)
        try:
            return self._file["frame_index"][lo:hi]
        except _DAMAGE_ERRORS as err:
            raise self._damaged_record(i, "frame_index", err) from err

    def video(self, i: int) -> str:
        try:
            return self._file["video"].asstr()[i]
        except (*_DAMAGE_ERRORS, UnicodeDecodeError):
            return "unreadable"

    def _damaged_record(self, i: int, what: str, err: Exception) -> ShardFormatError:
        return ShardFormatError(
            f"{self.path}: record {i} (video {self.video(i)}): {what} failed their checksum or could not be read "
            f"({err}). The file is damaged: {REBUILD_ADVICE}"
        )

    def metas(self, *, skip_damaged: bool = False) -> list[RecordMeta]:
        """Every record's metadata. A record whose strings are damaged (not UTF-8, or not matching
        their digest) raises ShardFormatError naming it, or with `skip_damaged` is left out and
        listed in `damaged`."""
        f = self._file
        try:
            counts = f["region_count"][:]
            # raw bytes, decoded per record below: a damaged string then names its record
            texts = {name: f[name][:] for name in ("global_caption", "region_captions", "hard_negatives", "video", "label")}
            is_anomaly = f["is_anomaly"][:]
            window_s = f["window_s"][:]
            fps = f["fps"][:]
            num_source_frames = f["num_source_frames"][:]
            record_index = f["record_index"][:]
            digests = f[TEXT_DIGEST_DATASET][:] if TEXT_DIGEST_DATASET in f else None
        except _DAMAGE_ERRORS as err:
            raise ShardFormatError(
                f"{self.path}: the records' metadata (captions, labels, windows) failed its checksum or could not be "
                f"read ({err}); all {self.num_records} records of this shard are affected. The file is damaged: "
                f"{REBUILD_ADVICE}"
            ) from err
        out = []
        for i in range(self.num_records):
            try:
                global_caption, video, label = (_decode(texts[name][i]) for name in ("global_caption", "video", "label"))
                region_captions = [_decode(c) for c in texts["region_captions"][i]]
                hard_negatives = [[_decode(c) for c in row] for row in texts["hard_negatives"][i]]
                intact = digests is None or np.array_equal(
                    digests[i], record_text_digest(global_caption, region_captions, hard_negatives, video, label))
            except UnicodeDecodeError:
                video, intact = "unreadable", False
            if not intact:
                message = (f"{self.path}: record {i} (record_index {int(record_index[i])}, video {video!r}): its "
                           f"captions, video name or label do not match their checksum. The file is damaged: "
                           f"{REBUILD_ADVICE}")
                if not skip_damaged:
                    raise ShardFormatError(message)
                self.damaged[i] = message
                continue
            r = int(counts[i])
            out.append(
                RecordMeta(
                    shard=str(self.path),
                    local_index=i,
                    num_frames=int(self.offsets[i + 1] - self.offsets[i]),
                    global_caption=global_caption,
                    region_captions=tuple(region_captions[:r]),
                    hard_negatives=tuple(tuple(c for c in hard_negatives[j] if c) for j in range(r)),
                    video=video,
                    label=label,
                    is_anomaly=bool(is_anomaly[i]),
                    window_s=(float(window_s[i, 0]), float(window_s[i, 1])),
                    fps=float(fps[i]),
                    num_source_frames=int(num_source_frames[i]),
                    record_index=int(record_index[i]),
                )
            )
        return out

    def read_record(self, i: int) -> ShardRecord:
        """The whole record i as a ShardRecord (tests and evaluation; the loader reads into buffers)."""
        meta = self.metas()[i]
        lo, hi = self.frame_range(i)
        frames = np.empty((hi - lo, self.attrs.height, self.attrs.width, 3), dtype=np.uint8)
        self.read_frames_into(i, frames)
        boxes, mask = self.read_boxes(i)
        r = len(meta.region_captions)
        return ShardRecord(
            frames_uint8=frames,
            frame_index=self.read_frame_index(i),
            boxes=boxes[:r],
            box_mask=mask[:r],
            global_caption=meta.global_caption,
            region_captions=list(meta.region_captions),
            hard_negatives=[list(n) for n in meta.hard_negatives],
            video=meta.video,
            label=meta.label,
            is_anomaly=meta.is_anomaly,
            window_s=meta.window_s,
            fps=meta.fps,
            num_source_frames=meta.num_source_frames,
            record_index=meta.record_index,
        )


# --- manifest -------------------------------------------------------------------------------


def manifest_path(shard_dir: os.PathLike | str) -> Path:
    return Path(shard_dir) / MANIFEST_NAME


def write_manifest(shard_dir: os.PathLike | str, manifest: dict) -> None:
    """Atomically write the manifest (a JSON dict; see `pipeline.frames` for its fields)."""
    path = manifest_path(shard_dir)
    tmp = path.with_suffix(".json.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())  # a power cut after the rename must not leave an empty manifest
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_manifest(shard_dir: os.PathLike | str) -> dict:
    path = manifest_path(shard_dir)
    if not path.is_file():
        raise ShardFormatError(f"{shard_dir}: no {MANIFEST_NAME}; build the shards with `fgclip-vad frames` (or `make frames`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError(f"a JSON {type(manifest).__name__}, not an object")
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ShardFormatError(
            f"{path}: damaged, not a manifest ({err}). Rebuild the shards with `fgclip-vad frames` into a new output "
            f"directory (or delete this one and rerun the same command)"
        ) from err
    version = int(manifest.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise ShardVersionError(
            f"{path}: schema version {version}, this fgclip-vad reads {SCHEMA_VERSION}. "
            f"Rebuild with `fgclip-vad frames` into a new output directory."
        )
    return manifest


def list_shards(shard_dir: os.PathLike | str) -> list[Path]:
    """The complete shard files of a shard directory, in order, as its manifest lists them."""
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    paths = [shard_dir / entry["file"] for entry in manifest["shards"]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ShardFormatError(f"{shard_dir}: manifest lists shards that are missing: {missing[:5]}; rerun `fgclip-vad frames`")
    return paths


def iter_record_metas(shard_dir: os.PathLike | str) -> Iterator[RecordMeta]:
    for path in list_shards(shard_dir):
        with ShardReader(path) as reader:
            yield from reader.metas()
