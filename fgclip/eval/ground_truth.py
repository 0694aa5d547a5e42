"""Test ground truth: a dataset's official annotation file -> per-frame labels.

One reader per format of `pipeline.datasets` (`load_ground_truth` picks it): UCF-Crime's
temporal annotation file (below), XD-Violence's `annotations.txt`, MSAD's
`anomaly_annotation.csv`, and ShanghaiTech's folder of per-video frame masks. Test videos a
file does not list (XD-Violence and MSAD list anomalous videos only, ShanghaiTech masks exist
for anomalous videos only) are normal when their name says so (`complete_with_normals`).

UCF-Crime:

The official file (`Temporal_Anomaly_Annotation.txt`) has one line per test video::

    Arson011_x264.mp4  Arson  150  420  680  1267

video name (with or without `.mp4`), class ("Normal" for normal videos), then up to two
anomalous intervals as start/end source frame numbers, -1 where there is none.

What an interval `start end` covers is not written down anywhere, and the field's public
repositories read it three ways. `convention` picks one (the default is "inclusive"):

    inclusive  0-based frames start..end, both ends anomalous (frames [start, end + 1))
    half-open  0-based frames start..end-1 (frames [start, end)), numpy slicing `gt[start:end]`
    one-based  1-based frames start..end, i.e. 0-based [start - 1, end)  (MATLAB `gt(start:end)`)

On the official file with the per-video frame counts of UR-DMU's list, the whole test set has
1,111,808 frames, of which 84,331 are anomalous under "inclusive" and 84,182 under
"half-open". Seven official intervals end past their video's last frame; they are cut at the
video's end (and reported, see `ranges_past_end`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONVENTIONS = ("inclusive", "half-open", "one-based")
DEFAULT_CONVENTION = "inclusive"
CONVENTION_DOC = {
    "inclusive": "0-based source frames, start and end both anomalous: [start, end + 1)",
    "half-open": "0-based source frames, end excluded: [start, end)",
    "one-based": "1-based source frames, start and end both anomalous: 0-based [start - 1, end)",
}
NORMAL_LABEL = "Normal"
_VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")


class AnnotationFormatError(ValueError):
    """A temporal annotation (or frame-count) file that does not parse; the message names the line."""


@dataclass(frozen=True)
class VideoAnnotation:
    """One line of the official temporal annotation file."""

    video: str  # key: file name without folder and extension, e.g. "Arson011_x264"
    label: str  # class as written, "Normal" for normal videos
    intervals: tuple[tuple[int, int], ...]  # (start, end) as written, -1 pairs dropped
    line_number: int  # 1-based, for messages
    fixed_convention: str | None = None  # intervals read from frame masks: exact, whatever --convention says

    @property
    def is_anomaly(self) -> bool:
        return self.label.lower() != NORMAL_LABEL.lower()


def video_key(name: str) -> str:
    """The name that matches a video across files: no folder, no video extension.

    "Abuse/Abuse028_x264.mp4", "Abuse028_x264.mp4" and "Abuse028_x264" all give "Abuse028_x264".
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    for suffix in _VIDEO_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def camel_case_to_words(name: str) -> str:
    """A class name as a prompt phrase: "RoadAccidents" -> "road accidents", "Arson" -> "arson"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name.replace("_", " "))
    return " ".join(spaced.lower().split())


def _data_lines(path: Path, missing: str):
    """(line number, fields, "file:line", line) of each line that is not empty or a # comment."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {missing}")
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            yield line_number, fields, f"{path}:{line_number}", line


def parse_temporal_annotations(path: os.PathLike | str) -> dict[str, VideoAnnotation]:
    """All videos of an official-format temporal annotation file, keyed by `video_key`, file order."""
    path = Path(path)
    annotations: dict[str, VideoAnnotation] = {}
    for line_number, fields, where, line in _data_lines(path, "temporal annotation file not found (official "
                                                              "UCF-Crime format: `video class start1 end1 start2 end2`)"):
        if len(fields) < 4 or (len(fields) - 2) % 2:
            raise AnnotationFormatError(
                f"{where}: expected `video class start1 end1 [start2 end2 ...]`, got {line.strip()!r}")
        try:
            numbers = [int(v) for v in fields[2:]]
        except ValueError:
            raise AnnotationFormatError(f"{where}: frame numbers must be integers, got {fields[2:]}") from None
        intervals = []
        for start, end in zip(numbers[0::2], numbers[1::2]):
            if start == -1 and end == -1:
                continue
            if start < 0 or end < start:
                raise AnnotationFormatError(f"{where}: interval ({start}, {end}) is invalid (need 0 <= start <= end, "
                                            f"or -1 -1 for none)")
            intervals.append((start, end))
        key = video_key(fields[0])
        if key in annotations:
            raise AnnotationFormatError(
                f"{where}: video {key} is annotated twice (first on line {annotations[key].line_number}); "
                f"keep one line per video")
        annotations[key] = VideoAnnotation(video=key, label=fields[1], intervals=tuple(intervals),
                                           line_number=line_number)
    if not annotations:
        raise AnnotationFormatError(f"{path}: no annotation lines")
    return annotations


def read_frame_counts(path: os.PathLike | str) -> dict[str, int]:
    """Per-video total frame counts from a UR-DMU-style list (`Class/Name.mp4 num_frames class s1 e1 s2 e2`)."""
    path = Path(path)
    counts: dict[str, int] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            counts[video_key(fields[0])] = int(fields[1])
        except (IndexError, ValueError):
            raise AnnotationFormatError(
                f"{path}:{line_number}: expected `video num_frames ...`, got {line.strip()!r}") from None
    return counts


def anomaly_class_names(annotations: dict[str, VideoAnnotation]) -> list[str]:
    """The anomaly classes of the file, sorted (the prompts' class list; "Normal" excluded)."""
    return sorted({a.label for a in annotations.values() if a.is_anomaly})


def frame_ranges(annotation: VideoAnnotation, convention: str = DEFAULT_CONVENTION) -> list[tuple[int, int]]:
    """The annotation's intervals as 0-based half-open [lo, hi) frame ranges (not cut to the video)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown ground-truth convention {convention!r}; choose one of {CONVENTIONS}")
    convention = annotation.fixed_convention or convention
    shift_lo, shift_hi = {"inclusive": (0, 1), "half-open": (0, 0), "one-based": (-1, 0)}[convention]
    return [(max(0, start + shift_lo), end + shift_hi) for start, end in annotation.intervals]


def frame_labels(annotation: VideoAnnotation, num_frames: int, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """(num_frames,) bool: True on anomalous frames; ranges past the video's end are cut there."""
    labels = np.zeros(num_frames, dtype=bool)
    for lo, hi in frame_ranges(annotation, convention):
        labels[lo:min(hi, num_frames)] = True
    return labels


def ranges_past_end(annotation: VideoAnnotation, num_frames: int,
                    convention: str = DEFAULT_CONVENTION) -> list[tuple[int, int]]:
    """The annotation's [lo, hi) ranges that reach past the video's last frame (cut by `frame_labels`)."""
    return [(lo, hi) for lo, hi in frame_ranges(annotation, convention) if hi > num_frames]


# --- XD-Violence, MSAD, ShanghaiTech ----------------------------------------------------------------


def parse_xd_annotations(path: os.PathLike | str) -> dict[str, VideoAnnotation]:
    """XD-Violence's `annotations.txt`: `video s1 e1 [s2 e2 ...]` per violent test video, in frames.

    The class is the first label code of the name (`..._label_B2-G-0` -> Shooting).
    """
    from pipeline.datasets import REGISTRY, XD_VIOLENCE, label_from_path

    path = Path(path)
    annotations: dict[str, VideoAnnotation] = {}
    for line_number, fields, where, line in _data_lines(path, "XD-Violence annotation file not found (format: "
                                                              "`video s1 e1 [s2 e2 ...]`)"):
        if len(fields) < 3 or (len(fields) - 1) % 2:
            raise AnnotationFormatError(f"{where}: expected `video start1 end1 [start2 end2 ...]`, got {line.strip()!r}")
        try:
            numbers = [int(v) for v in fields[1:]]
        except ValueError:
            raise AnnotationFormatError(f"{where}: frame numbers must be integers, got {fields[1:]}") from None
        intervals = list(zip(numbers[0::2], numbers[1::2]))
        bad = [(lo, hi) for lo, hi in intervals if lo < 0 or hi < lo]
        if bad:
            raise AnnotationFormatError(f"{where}: interval {bad[0]} is invalid (need 0 <= start <= end)")
        key = video_key(fields[0])
        if key in annotations:
            raise AnnotationFormatError(f"{where}: video {key} is annotated twice (first on line "
                                        f"{annotations[key].line_number}); keep one line per video")
        label, _ = label_from_path(fields[0], REGISTRY[XD_VIOLENCE])
        annotations[key] = VideoAnnotation(video=key, label=label, intervals=tuple(intervals), line_number=line_number)
    if not annotations:
        raise AnnotationFormatError(f"{path}: no annotation lines")
    return annotations


MSAD_COLUMNS = ("name", "starting frame of anomaly", "ending frame of anomaly")


def parse_msad_annotations(path: os.PathLike | str) -> dict[str, VideoAnnotation]:
    """MSAD's `anomaly_annotation.csv` (columns `name`, `starting frame of anomaly`, `ending frame of
    anomaly`, and others such as `scenario`, `total frames`): one interval per anomalous video;
    a row without frames (empty or -1) is a normal video."""
    import csv

    from pipeline.datasets import MSAD, REGISTRY, label_from_path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MSAD annotation file not found (anomaly_annotation.csv)")
    annotations: dict[str, VideoAnnotation] = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in MSAD_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise AnnotationFormatError(f"{path}: not an MSAD annotation CSV, no column {missing} "
                                        f"(header: {reader.fieldnames})")
        for row in reader:
            line_number = reader.line_num
            key = video_key(row["name"].strip())
            cells = [row[MSAD_COLUMNS[1]].strip(), row[MSAD_COLUMNS[2]].strip()]
            try:
                start, end = (int(float(cell)) if cell else -1 for cell in cells)
            except ValueError:
                raise AnnotationFormatError(f"{path}:{line_number}: frames must be numbers, got {cells}") from None
            if (start < 0) != (end < 0) or end < start:
                raise AnnotationFormatError(f"{path}:{line_number}: interval ({start}, {end}) is invalid")
            if key in annotations:
                raise AnnotationFormatError(f"{path}:{line_number}: video {key} is annotated twice")
            label, _ = label_from_path(key, REGISTRY[MSAD])
            intervals = ((start, end),) if start >= 0 else ()
            annotations[key] = VideoAnnotation(video=key, label=label if intervals else NORMAL_LABEL,
                                               intervals=intervals, line_number=line_number)
    if not annotations:
        raise AnnotationFormatError(f"{path}: no annotation rows")
    return annotations


def read_frame_masks(folder: os.PathLike | str) -> dict[str, VideoAnnotation]:
    """ShanghaiTech's `test_frame_mask/`: `<video>.npy` per test video, one 0/1 entry per frame.

    Each run of 1s becomes an exact [lo, hi) interval (`fixed_convention` "half-open"): masks
    leave no doubt about which frames are meant.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: frame-mask folder not found (ShanghaiTech: test_frame_mask/ of <video>.npy)")
    annotations: dict[str, VideoAnnotation] = {}
    for number, mask_path in enumerate(sorted(folder.glob("*.npy")), start=1):
        try:
            mask = np.load(mask_path, allow_pickle=False).astype(bool).ravel()
        except (OSError, ValueError) as err:
            raise AnnotationFormatError(f"{mask_path}: not a frame mask ({err})") from None
        edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
        intervals = tuple((int(lo), int(hi)) for lo, hi in zip(edges[0::2], edges[1::2]))
        annotations[mask_path.stem] = VideoAnnotation(
            video=mask_path.stem, label="Anomaly" if intervals else NORMAL_LABEL, intervals=intervals,
            line_number=number, fixed_convention="half-open")
    if not annotations:
        raise AnnotationFormatError(f"{folder}: no <video>.npy frame masks")
    return annotations


def detect_dataset(path: os.PathLike | str) -> str:
    """The registry name of the dataset whose ground-truth format `path` has (UCF-Crime by default)."""
    from pipeline.datasets import MSAD, SHANGHAITECH, UCF_CRIME, XD_VIOLENCE

    path = Path(path)
    if path.is_dir():
        return SHANGHAITECH
    if path.suffix.lower() == ".csv":
        return MSAD
    try:
        with path.open(encoding="utf-8") as handle:
            first = next((line.split() for line in handle if line.split() and not line.startswith("#")), [])
    except (OSError, UnicodeDecodeError):
        return UCF_CRIME
    if len(first) >= 2 and re.fullmatch(r"-?\d+", first[1]) and "label_" in first[0]:
        return XD_VIOLENCE
    return UCF_CRIME


def load_ground_truth(path: os.PathLike | str, dataset: str | None = None) -> tuple[str, dict[str, VideoAnnotation]]:
    """(dataset name, annotations by `video_key`) of a ground-truth file in `dataset`'s format
    (default: the format `detect_dataset` recognises)."""
    from pipeline.datasets import GT_FRAME_MASKS, GT_MSAD_CSV, GT_XD_ANNOTATIONS, get_dataset

    spec = get_dataset(dataset or detect_dataset(path))
    reader = {GT_XD_ANNOTATIONS: parse_xd_annotations, GT_MSAD_CSV: parse_msad_annotations,
              GT_FRAME_MASKS: read_frame_masks}.get(spec.ground_truth, parse_temporal_annotations)
    return spec.name, reader(path)


def complete_with_normals(annotations: dict[str, VideoAnnotation], videos: list[tuple[str, str]],
                          dataset: str) -> dict[str, VideoAnnotation]:
    """`annotations` plus the test videos ((key, path) pairs) it leaves out that are normal:
    by name (XD-Violence `label_A`, MSAD `..._normal_...`), or any video at all for ShanghaiTech
    (no mask = no anomalous frame). UCF-Crime's file lists every test video: nothing is added."""
    from pipeline.datasets import GT_FRAME_MASKS, GT_UCF_TEMPORAL, get_dataset, label_from_path

    spec = get_dataset(dataset)
    if spec.ground_truth == GT_UCF_TEMPORAL:
        return annotations
    completed = dict(annotations)
    for key, video in videos:
        if key in completed:
            continue
        if spec.ground_truth == GT_FRAME_MASKS or not label_from_path(video, spec)[1]:
            completed[key] = VideoAnnotation(video=key, label=NORMAL_LABEL, intervals=(), line_number=0)
    return completed
