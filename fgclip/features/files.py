"""Snippet-feature files: the on-disk contract between `fgclip-vad features` and every head that
reads them (ours and the field's), writers and readers in one place.

A features directory holds ONE model's features of one dataset:

    ROOT/
        manifest.json                     model, digests, family, preprocessing, snippet and crop rules,
                                          per video T / source frames / fps / split / label, skips
        <Folder>/<video>__<crop>.npy      float32 [T, D]: one row per snippet (16 source frames), the
                                          frame embedding before normalisation; <Folder> is the video's
                                          folder in the split list (UCF-Crime: its class, or
                                          Training_/Testing_Normal_Videos_Anomaly), as VadCLIP's lists
        lists/vadclip_train.csv, vadclip_test.csv   header `path,label`, one row per crop file (VadCLIP)
        lists/rtfm_train.list, rtfm_test.list       one absolute path per line (RTFM / UR-DMU style)
        lists/pel4vad_train.list, pel4vad_test.list paths relative to ROOT, one per line (PEL4VAD style)
        gt/gt_<dataset>.npy               VadCLIP's frame ground truth: per test video in list order,
                                          T x 16 zeros with each annotated [start, end) set to 1
        gt/gt_segment_<dataset>.npy, gt/gt_label_<dataset>.npy
                                          per test video its anomalous segments [start, end) in frames
                                          and their labels (normal videos: [0, T x 16), the normal
                                          label), pickled lists as VadCLIP keeps them (detection mAP)
        gt/gt_frames_<dataset>.npz        our exact ground truth: per test video its true number of
                                          frames, labelled with the annotation file's stated convention

Test lists hold one crop per video (the manifest's `test_crop`, crop 0 unless one crop only is
written) in the order of the test split list, so `gt_<dataset>.npy` lines up with a head that
concatenates its test scores expanded 16x per snippet.

Readers: `read_feature_list` reads ours and the lists other projects distribute (VadCLIP's CSV,
RTFM/UR-DMU's and PEL4VAD's one-path-per-line lists) with `--path-map OLD=NEW` for their absolute
paths; `read_features_dir` reads a directory written here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Sequence

import numpy as np

from fgclip.eval.ground_truth import NORMAL_LABEL, load_ground_truth
from pipeline.datasets import XD_VIOLENCE, dataset_of_path, get_dataset, label_from_path

SNIPPET_FRAMES = 16  # the field's snippet: one feature per 16 source frames
MANIFEST_NAME = "manifest.json"
LISTS_DIR = "lists"
GT_DIR = "gt"
LIST_FORMATS = ("vadclip", "rtfm", "pel4vad")
_CROP_SUFFIX = re.compile(r"^(?P<video>.+?)__(?P<crop>\d+)$")
_XD_CODE = re.compile(r"label_(?P<code>[A-Z]\d?(?:-[A-Z0-9]\d?)*)")  # "..._label_B2-0-0": up to three classes


class FeatureFileError(ValueError):
    """A feature file or list that cannot be used; the message names the file, the row and what to do."""


@dataclass(frozen=True)
class FeatureEntry:
    """One row of a list: one crop file of one video."""

    path: Path  # the .npy file (after --path-map)
    label: str  # as the list writes it: UCF class or "Normal"; XD code like "B2-0-0" or "A"
    video: str  # video key, e.g. "Abuse001_x264" (no folder, no extension, no __crop)
    crop: int | None  # 0..9 from "__N"; None when the file name has no crop suffix


def split_crop(stem: str) -> tuple[str, int | None]:
    """("Abuse001_x264", 3) from "Abuse001_x264__3"; (stem, None) without a crop suffix."""
    match = _CROP_SUFFIX.match(stem)
    return (match.group("video"), int(match.group("crop"))) if match else (stem, None)


def list_label(video: str, class_label: str, dataset: str) -> str:
    """A list row's label as the field's lists write it: XD-Violence's code from the video's name
    ("B2-0-0", "B1-B2-0"; "A" for normal), as VadCLIP's XD lists; every other dataset its class
    (UCF-Crime: the class or "Normal"). `pipeline.datasets.label_from_path` gives an XD code's class."""
    if get_dataset(dataset).name == XD_VIOLENCE:
        match = _XD_CODE.search(video)
        if match:
            return match.group("code")
    return class_label


def feature_file_name(video: str, crop: int) -> str:
    return f"{video}__{crop}.npy"


def feature_path(root: os.PathLike | str, folder: str, video: str, crop: int) -> Path:
    return Path(root) / folder / feature_file_name(video, crop)


# --- writing ---------------------------------------------------------------------------------------


def save_atomic(path: Path, write) -> None:
    """Write `path` through a temp name in the same folder, renamed when complete: a killed run never
    leaves a file that looks whole. `write(handle)` writes the content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def save_feature(path: Path, features: np.ndarray) -> None:
    """One [T, D] float32 feature file, atomically."""
    array = np.ascontiguousarray(features, dtype=np.float32)
    if array.ndim != 2 or not len(array):
        raise FeatureFileError(f"{path}: features must be [T >= 1, D], got shape {array.shape}")
    save_atomic(path, lambda handle: np.save(handle, array))


def save_json(path: Path, value) -> None:
    save_atomic(path, lambda handle: handle.write((json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()))


def write_lists(root: Path, split: str, entries: Sequence[FeatureEntry]) -> dict[str, Path]:
    """The three list formats of one split ("train" / "test"); returns {format: path}."""
    lists = root / LISTS_DIR
    paths = {fmt: lists / (f"{fmt}_{split}.csv" if fmt == "vadclip" else f"{fmt}_{split}.list") for fmt in LIST_FORMATS}

    def vadclip(handle) -> None:
        rows = ["path,label"] + [f"{entry.path.resolve()},{entry.label}" for entry in entries]
        handle.write(("\n".join(rows) + "\n").encode())

    save_atomic(paths["vadclip"], vadclip)
    save_atomic(paths["rtfm"], lambda h: h.write("".join(f"{e.path.resolve()}\n" for e in entries).encode()))
    save_atomic(paths["pel4vad"], lambda h: h.write(
        "".join(f"{e.path.resolve().relative_to(root.resolve()).as_posix()}\n" for e in entries).encode()))
    return paths


# --- ground truth as the anchors build it --------------------------------------------------------------


@dataclass
class SnippetGroundTruth:
    """The test ground truth of a list, both constructions, in list order."""

    videos: list[str]
    snippets: list[int]  # T per video
    vadclip_frames: np.ndarray  # concatenated T x 16 per video, [start, end) = 1 (VadCLIP's gt_<dataset>.npy)
    segments: list[list[list[int]]]  # per video [[start, end), ...]
    segment_labels: list[list[str]]
    exact: dict[str, np.ndarray] = field(default_factory=dict)  # per video, its true frame count, our convention


def snippet_ground_truth(videos: Sequence[str], snippets: Sequence[int], annotations: Mapping,
                         normal_label: str, frames_per_snippet: int = SNIPPET_FRAMES) -> SnippetGroundTruth:
    """VadCLIP's construction with its segments: per video (list order) T x 16 zeros, each annotated
    interval's frames [start, end) set to 1 (cut at T x 16); `annotations` maps video key ->
    VideoAnnotation (`fgclip.eval.ground_truth`), a video it lacks is normal."""
    parts, segments, labels = [], [], []
    for video, count in zip(videos, snippets):
        length = int(count) * frames_per_snippet
        gt = np.zeros(length, dtype=np.float32)
        annotation = annotations.get(video)
        intervals = [(int(s), int(e)) for s, e in annotation.intervals] if annotation is not None and annotation.is_anomaly else []
        for start, end in intervals:
            gt[max(start, 0):max(min(end, length), 0)] = 1.0
        parts.append(gt)
        if intervals:
            segments.append([[start, end] for start, end in intervals])
            labels.append([annotation.label] * len(intervals))
        else:
            segments.append([[0, length]])
            labels.append([normal_label])
    frames = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return SnippetGroundTruth(list(videos), [int(t) for t in snippets], frames, segments, labels)


def vadclip_ground_truth(test_entries: Sequence[FeatureEntry], annotations: Mapping | os.PathLike | str,
                         frames_per_snippet: int = SNIPPET_FRAMES, *, dataset: str | None = None) -> np.ndarray:
    """VadCLIP's `gt_<dataset>.npy` for a test list: per video in list order (a video's first row;
    further crops of it add nothing), T x 16 zeros with each annotated [start, end) set to 1, T read
    from the row's feature file. `annotations`: {video key: VideoAnnotation} or the ground-truth
    file itself (read in `dataset`'s format, detected when None)."""
    if not isinstance(annotations, Mapping):
        _, annotations = load_ground_truth(annotations, dataset)
    first_of_video: dict[str, FeatureEntry] = {}
    for entry in test_entries:
        first_of_video.setdefault(entry.video, entry)
    first_rows = list(first_of_video.values())
    snippets = [len(load_feature(entry.path)) for entry in first_rows]
    return snippet_ground_truth([entry.video for entry in first_rows], snippets, annotations, NORMAL_LABEL,
                                frames_per_snippet).vadclip_frames


def check_ground_truth_lengths(gt: SnippetGroundTruth, feature_lengths: Mapping[str, int],
                               frames_per_snippet: int = SNIPPET_FRAMES) -> None:
    """Named error when a video's ground truth is not T x 16 of its feature file (the field's most
    asked question: "the gt has N frames but the scores 10 N")."""
    bad = [f"{video}: ground truth for T={t} snippets, its feature file has T={feature_lengths.get(video)}"
           for video, t in zip(gt.videos, gt.snippets) if feature_lengths.get(video) != t]
    if bad or len(gt.vadclip_frames) != sum(gt.snippets) * frames_per_snippet:
        raise FeatureFileError("ground truth and features disagree in length (T x 16 per video): " + "; ".join(bad[:5]))


def write_ground_truth(root: Path, dataset: str, gt: SnippetGroundTruth) -> dict[str, Path]:
    folder = root / GT_DIR
    paths = {"vadclip": folder / f"gt_{dataset}.npy", "segment": folder / f"gt_segment_{dataset}.npy",
             "label": folder / f"gt_label_{dataset}.npy", "exact": folder / f"gt_frames_{dataset}.npz"}
    save_atomic(paths["vadclip"], lambda h: np.save(h, gt.vadclip_frames))
    segments = np.empty(len(gt.segments), dtype=object)
    segments[:] = [np.asarray(s, dtype=np.int64) for s in gt.segments]
    labels = np.empty(len(gt.segment_labels), dtype=object)
    labels[:] = [list(s) for s in gt.segment_labels]
    save_atomic(paths["segment"], lambda h: np.save(h, segments, allow_pickle=True))
    save_atomic(paths["label"], lambda h: np.save(h, labels, allow_pickle=True))
    save_atomic(paths["exact"], lambda h: np.savez_compressed(h, **gt.exact))
    return paths


# --- reading ---------------------------------------------------------------------------------------


def parse_path_maps(values: Iterable[str]) -> list[tuple[str, str]]:
    """`OLD=NEW` strings -> [(OLD, NEW)]; a value without '=' is a named error."""
    maps = []
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old:
            raise FeatureFileError(f"--path-map {value!r}: give OLD=NEW (a path prefix in the list and its place here)")
        maps.append((old, new))
    return maps


def _mapped(path: str, path_map: Sequence[tuple[str, str]]) -> str:
    for old, new in path_map:
        if path.startswith(old):
            return new + path[len(old):]
    return path


def detect_list_format(path: Path, first_line: str) -> str:
    if first_line.strip().lower().replace(" ", "") == "path,label":
        return "vadclip"
    return "pel4vad" if not PurePosixPath(first_line.strip()).is_absolute() else "rtfm"


def read_feature_list(path: os.PathLike | str, *, path_map: Sequence[tuple[str, str]] = (), fmt: str = "auto",
                      dataset: str | None = None, root: os.PathLike | str | None = None) -> list[FeatureEntry]:
    """Every row of a feature list. Formats: "vadclip" (CSV, header `path,label`), "rtfm" (one
    absolute path per line; UR-DMU's lists too), "pel4vad" (paths relative to the features folder,
    `root`, by default the list's folder); "auto" tells them apart by the first line. Labels of
    one-path lists come from the path, by the dataset's rules (`pipeline.datasets`; `dataset` or
    read from the path) and are given as a VadCLIP list would write them (`list_label`: XD-Violence's
    code). A row whose name has no `__N` crop is crop None (PEL4VAD writes crop 0 so). Files are
    not opened here: `load_feature` does that and names what is wrong."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise FeatureFileError(f"{path}: cannot read the feature list ({err.strerror})") from None
    rows = [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]
    if not rows:
        raise FeatureFileError(f"{path}: the feature list is empty")
    fmt = detect_list_format(path, rows[0][1]) if fmt == "auto" else fmt
    if fmt not in LIST_FORMATS:
        raise FeatureFileError(f"{path}: unknown list format {fmt!r} (one of {', '.join(LIST_FORMATS)} or auto)")
    base = Path(root) if root is not None else path.parent
    entries = []
    for number, line in rows[1:] if fmt == "vadclip" else rows:
        if fmt == "vadclip":
            file, sep, label = line.rpartition(",")
            if not sep or not file or not label:
                raise FeatureFileError(f"{path}:{number}: {line!r} is not `path,label`")
        else:
            file, label = line, None
        file = _mapped(file, path_map)
        file_path = Path(file) if PurePosixPath(file).is_absolute() or fmt != "pel4vad" else base / file
        video, crop = split_crop(PurePosixPath(file).stem)
        if label is None:  # one-path lists carry no label: the path says it, by the dataset's rules
            as_video = str(PurePosixPath(file.replace("\\", "/")).with_name(video + ".mp4"))
            rules = get_dataset(dataset) if dataset else dataset_of_path(file)
            label = list_label(video, label_from_path(as_video, rules)[0], rules.name)
        entries.append(FeatureEntry(path=file_path, label=label, video=video, crop=crop))
    return entries


def load_feature(path: os.PathLike | str, *, width: int | None = None) -> np.ndarray:
    """float32 [T, D] from an .npy feature file; a named error for a missing file, another shape,
    another width than `width`, or a non-finite value."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FeatureFileError(f"{path}: no such feature file (check the list's paths, or --path-map OLD=NEW)") from None
    except (OSError, ValueError) as err:
        raise FeatureFileError(f"{path}: not a readable .npy feature file ({err})") from None
    if array.ndim == 3 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 2 or not len(array):
        raise FeatureFileError(f"{path}: features must be [T, D], got shape {array.shape}")
    if width is not None and array.shape[1] != width:
        raise FeatureFileError(f"{path}: features of width {array.shape[1]}, the model needs {width}")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise FeatureFileError(f"{path}: non-finite value at snippet {bad[0]}, dimension {bad[1]}; re-extract this video")
    return array


@dataclass
class FeaturesDir:
    """A directory written by `fgclip-vad features` for one model."""

    root: Path
    manifest: dict
    train: list[FeatureEntry]
    test: list[FeatureEntry]

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def model_dir(self) -> Path:
        return Path(self.manifest["model"]["path"])

    @property
    def ground_truth_files(self) -> dict[str, Path]:
        return {name: self.root / relative for name, relative in self.manifest.get("ground_truth", {}).get("files", {}).items()}


def read_features_dir(root: os.PathLike | str) -> FeaturesDir:
    root = Path(root)
    manifest_file = root / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FeatureFileError(f"{root}: no {MANIFEST_NAME}: not a features directory of `fgclip-vad features` "
                               f"(or its run has not finished: rerun the same command)") from None
    except ValueError as err:
        raise FeatureFileError(f"{manifest_file}: not valid JSON ({err})") from None
    lists = {split: root / LISTS_DIR / f"vadclip_{split}.csv" for split in ("train", "test")}
    entries = {split: read_feature_list(path) if path.is_file() else [] for split, path in lists.items()}
    return FeaturesDir(root=root, manifest=manifest, train=entries["train"], test=entries["test"])
