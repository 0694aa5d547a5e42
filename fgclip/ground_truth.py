"""UCF-Crime test ground truth: the official temporal annotation file -> per-frame labels.

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


def parse_temporal_annotations(path: os.PathLike | str) -> dict[str, VideoAnnotation]:
    """All videos of an official-format temporal annotation file, keyed by `video_key`, file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: temporal annotation file not found (official UCF-Crime format: "
                                f"`video class start1 end1 start2 end2`)")
    annotations: dict[str, VideoAnnotation] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path}:{line_number}"
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
