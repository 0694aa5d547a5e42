"""The video anomaly detection datasets this tool knows: one entry each, as data.

An entry says what a dataset's videos are called and how its test set is scored: the class
names and the normal label, how a video's class is read from its name, the official split
files, the ground-truth format, the headline metric, and which facts are verified (README,
"Datasets"). Code that needs a dataset's fact reads it here; nothing else names datasets.

A record's dataset is its `dataset` field when it has one (a registry name or alias), else the
first entry whose `path_markers` appears in its video path (folder or file name, any case),
else UCF-Crime (the files this tool started with have bare `Abuse/Abuse001_x264.mp4` paths).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from pipeline.video_paths import logical_path, video_stem

UCF_CRIME = "ucf-crime"
XD_VIOLENCE = "xd-violence"
MSAD = "msad"
SHANGHAITECH = "shanghaitech"

# Ground-truth formats (fgclip.eval.ground_truth reads each):
GT_UCF_TEMPORAL = "ucf-temporal"  # `video class s1 e1 s2 e2` per test video, -1 = none
GT_XD_ANNOTATIONS = "xd-annotations"  # `video s1 e1 [s2 e2 ...]`, violent test videos only
GT_MSAD_CSV = "msad-csv"  # CSV: name, scenario, total frames, starting/ending frame of anomaly
GT_FRAME_MASKS = "frame-masks"  # a folder of <video>.npy, one 0/1 entry per frame (anomalous videos)


@dataclass(frozen=True)
class Dataset:
    """One dataset's facts (see the module docstring)."""

    name: str  # registry key, also the value of a record's `dataset` field
    title: str
    aliases: tuple[str, ...]  # other spellings accepted in a `dataset` field
    anomaly_classes: tuple[str, ...]  # as spelled in names; () = anomalous or not, no classes
    normal_label: str
    label_rule: str  # how a video's class is read from its name: "ucf", "xd", "msad", "normal-folder"
    path_markers: tuple[str, ...]  # lower-case substrings of a path that identify the dataset
    test_split: str  # file name of the official test list (found next to the annotations)
    train_split: str | None
    ground_truth: str  # one of the GT_* formats
    ground_truth_file: str  # its usual file (or folder) name
    headline: str  # "auc" (frame ROC AUC) or "ap" (frame average precision)
    num_test_videos: int | None  # in the official test split
    num_train_videos: int | None
    source: str  # where the facts come from
    unverified: str = ""  # what could not be checked against the official files

    @property
    def classes(self) -> tuple[str, ...]:
        """Every label a video of this dataset can have, normal first."""
        return (self.normal_label, *self.anomaly_classes)

    def is_known_label(self, label: str) -> bool:
        return label == self.normal_label or label in self.anomaly_classes or (
            not self.anomaly_classes and label == ANOMALY_LABEL)


ANOMALY_LABEL = "Anomaly"  # the label of an anomalous video of a dataset without classes

REGISTRY: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        name=UCF_CRIME, title="UCF-Crime", aliases=("ucf", "ucf_crime", "ucfcrime", "ucf-crimes"),
        anomaly_classes=("Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting",
                         "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism"),
        normal_label="Normal", label_rule="ucf",
        path_markers=("ucf_crime", "ucf-crime", "ucfcrime", "ucf_crimes"),
        test_split="Anomaly_Test.txt", train_split="Anomaly_Train.txt",
        ground_truth=GT_UCF_TEMPORAL, ground_truth_file="Temporal_Anomaly_Annotation.txt",
        headline="auc", num_test_videos=290, num_train_videos=1610,
        source="the official split lists and Temporal_Anomaly_Annotation.txt (Sultani et al. 2018)",
    ),
    Dataset(
        name=XD_VIOLENCE, title="XD-Violence", aliases=("xd", "xd_violence", "xdviolence"),
        # Label codes in the names: A normal, B1 Fighting, B2 Shooting, B4 Riot, B5 Abuse,
        # B6 Car accident, G Explosion; a video may carry up to three (`label_B2-G-0`).
        anomaly_classes=("Fighting", "Shooting", "Riot", "Abuse", "Car accident", "Explosion"),
        normal_label="Normal", label_rule="xd",
        path_markers=("xd-violence", "xd_violence", "xdviolence", "_label_"),
        test_split="XD_Test.txt", train_split=None,
        ground_truth=GT_XD_ANNOTATIONS, ground_truth_file="annotations.txt",
        headline="ap", num_test_videos=800, num_train_videos=3954,
        source="the dataset site's annotations.txt format and label codes (Wu et al. 2020), as read by public VAD code",
        unverified="no official test list file: give the names of the 800 test videos (one per line, any folder and "
                   "extension) as XD_Test.txt; whether an interval's end frame is inclusive (--convention)",
    ),
    Dataset(
        name=MSAD, title="MSAD (Multi-Scenario Anomaly Detection)", aliases=("msad-dataset",),
        anomaly_classes=("Assault", "Explosion", "Fighting", "Fire", "Object_falling", "People_falling", "Robbery",
                         "Shooting", "Traffic_accident", "Vandalism", "Water_incident"),
        normal_label="Normal", label_rule="msad",
        path_markers=("msad",),
        test_split="MSAD_Test.txt", train_split="MSAD_Train.txt",
        ground_truth=GT_MSAD_CSV, ground_truth_file="anomaly_annotation.csv",
        headline="auc", num_test_videos=240, num_train_videos=480,
        source="the MSAD benchmark repository's test lists (protocol ii: 360 normal + 120 anomalous training, "
               "120 + 120 test videos; Zhu et al. 2024) and public readers of anomaly_annotation.csv",
        unverified="the split list file names (the official lists ship with the features); whether the ending "
                   "frame is inclusive (--convention); that each anomalous video has one interval",
    ),
    Dataset(
        name=SHANGHAITECH, title="ShanghaiTech (weakly supervised split)", aliases=("sht", "shanghai", "shanghai-tech"),
        anomaly_classes=(), normal_label="Normal", label_rule="normal-folder",
        path_markers=("shanghaitech", "shanghai_tech", "shanghai-tech"),
        test_split="SH_Test.txt", train_split="SH_Train.txt",
        ground_truth=GT_FRAME_MASKS, ground_truth_file="test_frame_mask",
        headline="auc", num_test_videos=199, num_train_videos=238,
        source="Zhong et al. 2019's weakly supervised split (238 train / 199 test videos) and the dataset's "
               "per-video frame masks (test_frame_mask/<video>.npy)",
        unverified="the split list file names and format (read: a video name first on each line); a video's "
                   "normal/anomalous label cannot be read from its name, only from the masks or a `label` field",
    ),
)}

DEFAULT_DATASET = UCF_CRIME


class UnknownDatasetError(ValueError):
    """A `dataset` value that names no registry entry."""


def get_dataset(name: str) -> Dataset:
    """The entry for a registry name or alias (any case); UnknownDatasetError naming the choices."""
    key = name.strip().lower()
    for dataset in REGISTRY.values():
        if key == dataset.name or key in dataset.aliases:
            return dataset
    raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}")


def dataset_of_path(video: str) -> Dataset:
    """The dataset a video path belongs to, by its markers; UCF-Crime when none matches."""
    lowered = logical_path(video).replace("\\", "/").lower()
    for dataset in REGISTRY.values():
        if dataset.name != DEFAULT_DATASET and any(marker in lowered for marker in dataset.path_markers):
            return dataset
    return REGISTRY[DEFAULT_DATASET]


# --- class labels from video names ---------------------------------------------------------------

_XD_CODES = {"A": "Normal", "B1": "Fighting", "B2": "Shooting", "B4": "Riot", "B5": "Abuse",
             "B6": "Car accident", "G": "Explosion"}
_XD_LABEL = re.compile(r"label_([A-Z]\d?)")
_UCF_NAME_PREFIX = re.compile(r"^([A-Za-z]+(?:_[A-Za-z]+)*?)_?\d+")
_MSAD_NAME_PREFIX = re.compile(r"^(.+?)_\d+$")


def _match_class(token: str, dataset: Dataset) -> str | None:
    lowered = token.lower()
    if "normal" in lowered:
        return dataset.normal_label
    for name in dataset.anomaly_classes:
        if lowered == name.lower():
            return name
    return None


def label_from_path(video: str, dataset: Dataset) -> tuple[str, bool]:
    """(class, is_anomaly) of a video from its path, by the dataset's `label_rule`.

    A path that names no class of the dataset gets its name prefix (or folder) as the label
    and counts as an anomaly; `Dataset.is_known_label` tells the caller so it can report it.
    """
    video = logical_path(video)
    parts = PurePosixPath(video.replace("\\", "/")).parts
    stem = video_stem(video)
    if dataset.label_rule == "xd":
        match = _XD_LABEL.search(stem)
        label = _XD_CODES.get(match.group(1), match.group(1)) if match else stem
        return label, label != dataset.normal_label
    folder = parts[-2] if len(parts) >= 2 else ""
    from_folder = _match_class(folder, dataset) if folder else None
    if from_folder is not None:
        return from_folder, from_folder != dataset.normal_label
    if dataset.label_rule == "normal-folder":
        normal = "normal" in stem.lower()
        return (dataset.normal_label, False) if normal else (ANOMALY_LABEL, True)
    pattern = _MSAD_NAME_PREFIX if dataset.label_rule == "msad" else _UCF_NAME_PREFIX
    match = pattern.match(stem)
    prefix = match.group(1) if match else stem
    from_name = _match_class(prefix, dataset)
    if from_name is not None:
        return from_name, from_name != dataset.normal_label
    return (folder or prefix), True
