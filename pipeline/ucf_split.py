"""UCF-Crime naming: official split lists, video identity and class labels from paths.

The official lists are third-party files (`Anomaly_Train.txt`, `Anomaly_Test.txt`: one
`Class/Name_x264.mp4` per line; `Temporal_Anomaly_Annotation.txt`: `Name_x264.mp4 Class ...`).
They are read from where the user keeps them, never copied into this repository.

A video is identified by its file stem (`Abuse028_x264`), compared exactly except for case
and an optional `_x264` suffix, so `Abuse028.mp4` still matches the test list entry. Nothing
fuzzier: training normals are `Normal_Videos001_x264`, test normals `Normal_Videos_003_x264`,
and those must never be taken for each other.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# The 13 anomaly classes of UCF-Crime, as spelled in the official folder and file names.
ANOMALY_CLASSES = (
    "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting",
    "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism",
)
NORMAL_LABEL = "Normal"

TEST_SPLIT_ENV = "FGCLIP_UCF_TEST_SPLIT"
TEST_SPLIT_NAME = "Anomaly_Test.txt"

_CLASS_BY_LOWER = {name.lower(): name for name in ANOMALY_CLASSES}
_NAME_PREFIX = re.compile(r"^([A-Za-z]+(?:_[A-Za-z]+)*?)_?\d+")


def video_stem(video: str) -> str:
    """File name without folders and extension: `Abuse/Abuse028_x264.mp4` -> `Abuse028_x264`."""
    name = PurePosixPath(video.replace("\\", "/")).name
    return name.rsplit(".", 1)[0] if "." in name else name


def video_key(video: str) -> str:
    """The identity used to compare videos across files: lower-cased stem without `_x264`."""
    stem = video_stem(video).lower()
    return stem[: -len("_x264")] if stem.endswith("_x264") else stem


def _label_from_name(token: str) -> str | None:
    token_lower = token.lower()
    if "normal" in token_lower:
        return NORMAL_LABEL
    return _CLASS_BY_LOWER.get(token_lower)


def label_from_video_path(video: str) -> tuple[str, bool]:
    """(class, is_anomaly) of a UCF-Crime video from its path.

    The parent folder decides when it names a class (`Abuse/...`) or holds normal videos
    (`Training_Normal_Videos_Anomaly`, `Testing_Normal_Videos_Anomaly`, any folder with
    "normal" in it); otherwise the name prefix (`Abuse028_x264` -> Abuse, `Normal_Videos...`
    -> Normal). A path that names no known class gets its prefix (or folder) as the label and
    counts as an anomaly; `is_known_label` tells the caller so it can report it.
    """
    parts = PurePosixPath(video.replace("\\", "/")).parts
    if len(parts) >= 2:
        from_folder = _label_from_name(parts[-2])
        if from_folder is not None:
            return from_folder, from_folder != NORMAL_LABEL
    stem = video_stem(video)
    match = _NAME_PREFIX.match(stem)
    prefix = match.group(1) if match else stem
    from_name = _label_from_name(prefix)
    if from_name is not None:
        return from_name, from_name != NORMAL_LABEL
    fallback = parts[-2] if len(parts) >= 2 else prefix
    return fallback, True


def is_known_label(label: str) -> bool:
    return label == NORMAL_LABEL or label in ANOMALY_CLASSES


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


def read_split_list(path: Path) -> list[SplitEntry]:
    """Entries of a split list; the first whitespace-separated token of each line is the video.

    Reads both `Anomaly_Test.txt` (`Class/Name.mp4`) and `Temporal_Anomaly_Annotation.txt`
    (`Name.mp4  Class  start end ...`, where the class column gives the label). Raises
    ValueError naming the file if it holds no entries.
    """
    path = Path(path)
    entries: list[SplitEntry] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            video = tokens[0]
            label, is_anomaly = label_from_video_path(video)
            if "/" not in video and len(tokens) >= 2 and _label_from_name(tokens[1]):
                label = _label_from_name(tokens[1]) or label
                is_anomaly = label != NORMAL_LABEL
            entries.append(SplitEntry(line_number, video, label, is_anomaly))
    if not entries:
        raise ValueError(f"{path}: no videos listed; expected one `Class/Name_x264.mp4` per line")
    return entries


def find_test_split(annotation_path: Path | str) -> Path | None:
    """Where the official `Anomaly_Test.txt` is, when the user did not say.

    In order: the path in $FGCLIP_UCF_TEST_SPLIT (returned even if missing, so the caller
    reports the bad setting instead of falling back silently); `Anomaly_Test.txt` next to the
    annotation file; `../ucf/Anomaly_Test.txt` and `../../ucf/Anomaly_Test.txt` relative to the
    annotation file's folder (the layout `data/annotations/x.json` + `data/ucf/`). None if none
    exists.
    """
    from_env = os.environ.get(TEST_SPLIT_ENV)
    if from_env:
        return Path(from_env)
    folder = Path(annotation_path).resolve().parent
    for candidate in (
        folder / TEST_SPLIT_NAME,
        folder.parent / "ucf" / TEST_SPLIT_NAME,
        folder.parent.parent / "ucf" / TEST_SPLIT_NAME,
    ):
        if candidate.is_file():
            return candidate
    return None
