"""Official split lists, video identity and class labels from paths (UCF-Crime and the other
datasets of `pipeline.datasets`).

The official lists are third-party files (UCF-Crime's `Anomaly_Train.txt`, `Anomaly_Test.txt`:
one `Class/Name_x264.mp4` per line; `Temporal_Anomaly_Annotation.txt`: `Name_x264.mp4 Class ...`;
the other datasets' lists: a video name first on each line). They are read from where the user
keeps them, never copied into this repository.

A video is identified by its file stem (`Abuse028_x264`), compared exactly except for case
and an optional `_x264` suffix, so `Abuse028.mp4` still matches the test list entry. Nothing
fuzzier: training normals are `Normal_Videos001_x264`, test normals `Normal_Videos_003_x264`,
and those must never be taken for each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.datasets import REGISTRY, UCF_CRIME, Dataset, label_from_path
from pipeline.video_paths import video_stem  # noqa: F401  (public here)

_UCF = REGISTRY[UCF_CRIME]
# The 13 anomaly classes of UCF-Crime, as spelled in the official folder and file names.
ANOMALY_CLASSES = _UCF.anomaly_classes
NORMAL_LABEL = _UCF.normal_label

TEST_SPLIT_ENV = "FGCLIP_UCF_TEST_SPLIT"  # UCF-Crime's test list; other datasets: --test-split NAME=PATH
TEST_SPLIT_NAME = _UCF.test_split


def video_key(video: str) -> str:
    """The identity used to compare videos across files: lower-cased stem without `_x264`."""
    stem = video_stem(video).lower()
    return stem[: -len("_x264")] if stem.endswith("_x264") else stem


def label_from_video_path(video: str) -> tuple[str, bool]:
    """(class, is_anomaly) of a UCF-Crime video from its path.

    The parent folder decides when it names a class (`Abuse/...`) or holds normal videos
    (`Training_Normal_Videos_Anomaly`, `Testing_Normal_Videos_Anomaly`, any folder with
    "normal" in it); otherwise the name prefix (`Abuse028_x264` -> Abuse, `Normal_Videos...`
    -> Normal). A path that names no known class gets its prefix (or folder) as the label and
    counts as an anomaly; `is_known_label` tells the caller so it can report it.
    """
    return label_from_path(video, _UCF)


def is_known_label(label: str) -> bool:
    return _UCF.is_known_label(label)


@dataclass(frozen=True)
class SplitEntry:
    """One line of an official split list."""

    line_number: int  # 1-based
    path: str  # as written, e.g. `Abuse/Abuse028_x264.mp4`
    label: str
    is_anomaly: bool

    @property
    def stem(self) -> str:
        return video_stem(self.path)

    @property
    def key(self) -> str:
        return video_key(self.path)


def read_split_list(path: Path, dataset: Dataset = _UCF) -> list[SplitEntry]:
    """Entries of a split list; the first whitespace-separated token of each line is the video.

    Reads both `Anomaly_Test.txt` (`Class/Name.mp4`) and `Temporal_Anomaly_Annotation.txt`
    (`Name.mp4  Class  start end ...`, where the class column gives the label), and the other
    datasets' lists (labels by `dataset`'s rule). Lines starting with `#` are comments. Raises
    ValueError naming the file if it holds no entries.
    """
    path = Path(path)
    entries: list[SplitEntry] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            video = tokens[0]
            label, is_anomaly = label_from_path(video, dataset)
            if "/" not in video and len(tokens) >= 2 and tokens[1] in dataset.classes:
                label = tokens[1]
                is_anomaly = label != dataset.normal_label
            entries.append(SplitEntry(line_number, video, label, is_anomaly))
    if not entries:
        raise ValueError(f"{path}: no videos listed; expected one video ({dataset.title}: e.g. "
                         f"`Class/Name.mp4`) per line")
    return entries


def find_test_split(annotation_path: Path | str, dataset: Dataset = _UCF) -> Path | None:
    """Where a dataset's official test list (UCF-Crime: `Anomaly_Test.txt`) is, when the user did not say.

    In order: for UCF-Crime the path in $FGCLIP_UCF_TEST_SPLIT (returned even if missing, so the
    caller reports the bad setting instead of falling back silently); the list next to the
    annotation file; `../<folder>/` and `../../<folder>/` relative to the annotation file's
    folder, <folder> being `ucf` for UCF-Crime or the dataset's name or alias (the layout
    `data/annotations/x.json` + `data/ucf/`). None if none exists.
    """
    from_env = os.environ.get(TEST_SPLIT_ENV) if dataset.name == _UCF.name else None
    if from_env:
        return Path(from_env)
    folder = Path(annotation_path).resolve().parent
    names = (dataset.name, *dataset.aliases)
    for candidate in (
        folder / dataset.test_split,
        *(base / name / dataset.test_split for base in (folder.parent, folder.parent.parent) for name in names),
    ):
        if candidate.is_file():
            return candidate
    return None
