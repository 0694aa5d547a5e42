"""Per-video snippet features for the heads, read through `fgclip.features.files` (the one list and
file reader): training samples (one per crop file, as VadCLIP trains), a held-out split by video,
and the test videos (one named crop, or the mean of all crops of a video).

Training lengths: VadCLIP's clips are `clip_snippets` (256) long: a longer video is reduced by
uniform averaging (the snippets of each of 256 equal spans averaged), a shorter one zero-padded
with its true length kept. Sultani's bags are 32 segments by the same averaging.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from fgclip.features.files import FeatureEntry, load_feature
from pipeline.datasets import Dataset, label_from_path


class HeadDataError(ValueError):
    """Features or lists a head cannot train on; the message names the file, row and what to do."""


def class_of_label(label: str, dataset: Dataset) -> str:
    """The dataset's class of a list label: UCF-Crime's class names and "Normal", XD-Violence's codes
    (`B2-0-0`, `G-B2-B6`, `A`: the first code is the class), or a named error."""
    if label in dataset.classes:
        return label
    if dataset.label_rule == "xd":  # the codes as XD-Violence's names carry them
        name, _ = label_from_path(f"list_label_{label}.mp4", dataset)
        if name in dataset.classes:
            return name
    lowered = {name.lower(): name for name in dataset.classes}
    if label.lower() in lowered:
        return lowered[label.lower()]
    raise HeadDataError(f"label {label!r} is not a class of {dataset.title} ({', '.join(dataset.classes)}); "
                        f"pass --dataset for the list's dataset")


def uniform_average(features: np.ndarray, spans: int) -> np.ndarray:
    """(spans, D): the mean of each of `spans` equal spans of the (T, D) snippets; a span that holds no
    snippet (T < spans) takes the snippet at its start."""
    bounds = np.linspace(0, len(features), spans + 1).astype(int)
    rows = [features[start:end].mean(axis=0) if end > start else features[min(start, len(features) - 1)]
            for start, end in zip(bounds[:-1], bounds[1:])]
    return np.stack(rows).astype(np.float32)


def training_clip(features: np.ndarray, clip_snippets: int) -> tuple[np.ndarray, int]:
    """VadCLIP's training clip: (clip_snippets, D) and the number of real snippets."""
    if len(features) > clip_snippets:
        return uniform_average(features, clip_snippets), clip_snippets
    padded = np.zeros((clip_snippets, features.shape[1]), dtype=np.float32)
    padded[:len(features)] = features
    return padded, len(features)


@dataclass
class TrainingSet:
    """Training samples in memory: one row per crop file."""

    features: torch.Tensor  # (N, L, D) float32
    lengths: torch.Tensor  # (N,) real snippets per row
    is_anomaly: torch.Tensor  # (N,) float 0/1
    class_index: torch.Tensor  # (N,) index into the class list (normal first)
    videos: list[str]  # per row


def read_entries(entries: Sequence[FeatureEntry], dataset: Dataset, *, width: int | None,
                 clip_snippets: int, segments: int | None = None) -> TrainingSet:
    """Every entry's file, reduced to a training clip (`clip_snippets`, or `segments` by averaging for
    MIL bags). A missing, misshapen or non-finite file, another width, or an unknown label is a named
    error with the list row; nothing is dropped silently."""
    if not entries:
        raise HeadDataError("the training list has no rows")
    classes = list(dataset.classes)
    rows, lengths, anomaly, class_index, videos = [], [], [], [], []
    for entry in entries:
        name = class_of_label(entry.label, dataset)
        array = load_feature(entry.path, width=width)
        if segments is not None:
            clip, length = uniform_average(array, segments), segments
        else:
            clip, length = training_clip(array, clip_snippets)
        rows.append(clip)
        lengths.append(length)
        anomaly.append(float(name != dataset.normal_label))
        class_index.append(classes.index(name))
        videos.append(entry.video)
    return TrainingSet(torch.from_numpy(np.stack(rows)), torch.tensor(lengths), torch.tensor(anomaly),
                       torch.tensor(class_index), videos)


def split_held_out(entries: Sequence[FeatureEntry], fraction: float, seed: int,
                   dataset: Dataset) -> tuple[list[FeatureEntry], list[FeatureEntry]]:
    """(train, held out) by video (all crops of a video on one side), the same fraction of normal and
    anomalous videos held out, at least one of each when there are two or more; never a test video:
    the rows come from the training list."""
    by_video: dict[str, list[FeatureEntry]] = defaultdict(list)
    for entry in entries:
        by_video[entry.video].append(entry)
    rng = random.Random(seed)
    held: set[str] = set()
    for anomalous in (False, True):
        group = sorted(v for v, rows in by_video.items()
                       if (class_of_label(rows[0].label, dataset) != dataset.normal_label) == anomalous)
        rng.shuffle(group)
        count = max(1, round(fraction * len(group))) if len(group) >= 2 and fraction > 0 else 0
        held.update(group[:count])
    return ([e for e in entries if e.video not in held], [e for e in entries if e.video in held])


@dataclass
class VideoTestFeatures:
    video: str
    label: str  # the dataset's class
    features: np.ndarray  # (T, D): the named crop, or the mean over crops
    crops: list[int | None]


def group_test_videos(entries: Sequence[FeatureEntry], dataset: Dataset, *, crop: str = "listed",
                      width: int | None = None) -> list[VideoTestFeatures]:
    """Test videos in list order. crop "listed": the files the list names (one per video; several
    crops of a video in the list are averaged); "mean": every `__0..__9` file beside the listed one
    averaged; a number: that crop's file beside the listed one."""
    order: list[str] = []
    files: dict[str, list[FeatureEntry]] = defaultdict(list)
    for entry in entries:
        if entry.video not in files:
            order.append(entry.video)
        files[entry.video].append(entry)
    videos = []
    for key in order:
        listed = files[key]
        paths = [e.path for e in listed]
        crops = [e.crop for e in listed]
        if crop != "listed":
            first = listed[0]
            if first.crop is None:
                raise HeadDataError(f"{first.path}: the test list names no crop (__N), so --test-crop {crop} cannot be found")
            wanted = range(10) if crop == "mean" else [int(crop)]
            paths = [first.path.with_name(f"{key}__{n}.npy") for n in wanted]
            if crop == "mean":
                paths = [p for p in paths if p.is_file()] or [first.path]
            crops = [int(p.stem.rpartition("__")[2]) for p in paths]
        arrays = [load_feature(p, width=width) for p in paths]
        if len({a.shape for a in arrays}) != 1:
            raise HeadDataError(f"{key}: its crop files differ in shape ({[a.shape for a in arrays]})")
        videos.append(VideoTestFeatures(key, class_of_label(listed[0].label, dataset), np.mean(arrays, axis=0), crops))
    return videos


def feature_width(entries: Sequence[FeatureEntry]) -> int:
    """D of the first list row's file (all others are checked against it when read)."""
    return int(load_feature(entries[0].path).shape[1])


