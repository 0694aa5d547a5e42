"""Load and validate an annotation JSON in the real record format (README.md, "Stage 1").

`validate_annotations` reads the whole file, reports every problem it finds (record index,
video, field, value, what to do) and returns the usable records, cleaned.

Severity policy (what makes `fgclip-vad validate` exit non-zero):

* **error**: the dataset as written is wrong and the run must not go on:
  - the file cannot be read, is not JSON, or is not a list of records;
  - a record cannot be used as written (missing field, wrong type, NaN, negative frame,
    x1 >= x2, a box far outside 0..1, reversed or negative timestamps, empty caption,
    region/box count mismatch, malformed hard negatives). The record is dropped: guessing
    which box belongs to which caption, or what a NaN meant, would train on made-up data.
    `drop_invalid=True` (`--drop-invalid`) accepts losing those records: they are still
    dropped and listed, as warnings;
  - videos of an official test split in the training data, or no test split to check against
    (`allow_test_overlap=True` turns both into warnings and keeps the records;
    `drop_test_overlap=True` drops the overlapping records, as warnings). A file may mix
    datasets (UCF-Crime and MSAD records, say): each record's dataset is its `dataset` field or
    is read from its path (`pipeline.datasets`), and each dataset is checked against its own
    test split, with its own class list.
* **warning**: fixed unambiguously or harmless, record kept: coordinates overshooting 0..1 by
  at most `BOX_OVERSHOOT_TOLERANCE` (clipped; the real files have 21-24 such keyframes, by at
  most 0.001), exact duplicate records (later copies dropped), the same video and window
  captioned twice, unsorted or repeated keyframes (sorted, first kept), unknown fields (kept in
  the file, not used), a record without regions, non-English captions not covered by the
  translation file (kept as written so a run is possible; listed so the user can translate),
  keyframes outside the record's window (only checked with an fps hint, see below).

Keyframes vs `timestamps`: keyframes are source frame numbers, the window is in seconds, and
the frame rate is only known once stage 1 opens the video. Without `fps_hint` this module does
not guess; stage 1 checks against the real rate. With `fps_hint` (UCF-Crime is 30 fps) the
check runs here, as warnings. Windows past the end of the video are also stage 1's to find.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.captions import NATIVE_SCRIPTS, foreign_scripts, translate
from pipeline.datasets import REGISTRY, Dataset, UnknownDatasetError, dataset_of_path, get_dataset, label_from_path
from pipeline.ucf_split import (  # noqa: F401  (find_test_split, label_from_video_path: public API here)
    SplitEntry,
    find_test_split,
    label_from_video_path,
    read_split_list,
    video_key,
    video_stem,
)

BOX_OVERSHOOT_TOLERANCE = 0.02  # coordinates within [-tol, 1 + tol] are clipped, beyond rejected
MAX_FRAME = 10**9  # frame numbers above this are typos (10^9 frames = a year at 30 fps), and break int64 maths
REQUIRED_FIELDS = ("video", "global_caption", "region_captions", "box_infos")
OPTIONAL_FIELDS = ("timestamps", "hard_negatives", "dataset")
KEYFRAME_FIELDS = ("frame", "bbox")

ERROR = "error"
WARNING = "warning"
# File-level problems after which there is nothing to check: the CLI prints them as one line.
FATAL_FILE_KINDS = ("file-missing", "file-unreadable", "not-json", "not-a-list", "no-records")


@dataclass(frozen=True)
class Keyframe:
    frame: int  # 0-based source frame number, native rate
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in 0..1 (already clipped)


@dataclass(frozen=True)
class Region:
    caption: str
    keyframes: tuple[Keyframe, ...]  # sorted by frame; empty = whole frame
    hard_negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class AnnotationRecord:
    index: int  # position in the source JSON list
    video: str  # as written in the JSON
    global_caption: str
    regions: tuple[Region, ...]
    window_s: tuple[float, float] | None  # timestamps [start_s, end_s] or None = whole video
    label: str  # class from the path, by the dataset's rule ("Normal" for normal videos)
    is_anomaly: bool
    dataset: str = REGISTRY["ucf-crime"].name  # `pipeline.datasets` name


@dataclass(frozen=True)
class Problem:
    record_index: int | None  # None = file-level problem
    video: str
    field: str  # e.g. "box_infos[1][0].bbox"
    kind: str  # stable short code, e.g. "test-split-overlap", "non-english-caption"
    severity: str  # "error" (record unusable / run must stop) or "warning"
    message: str  # names the value at fault and what to do

    def to_dict(self) -> dict:
        return {
            "record_index": self.record_index,
            "video": self.video,
            "field": self.field,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass
class ValidationReport:
    source: Path
    source_sha256: str
    records: list[AnnotationRecord]  # the usable records (cleaned: clipped boxes, duplicates dropped, translations applied)
    problems: list[Problem]
    num_source_records: int = 0  # records in the file (0 if it could not be read)
    dropped: list[int] = field(default_factory=list)  # indices of records not in `records`
    test_split: Path | None = None  # the split list checked against (None = not checked); see test_splits
    test_overlap: dict[str, list[int]] = field(default_factory=dict)  # test video stem -> record indices
    translated_captions: int = 0  # captions replaced from the translation file
    test_splits: dict[str, Path | None] = field(default_factory=dict)  # dataset -> split list checked (None = not)
    datasets: dict[str, dict] = field(default_factory=dict)  # dataset -> summary (see dataset_summary)

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def counts_by_severity(self) -> dict[tuple[str, str], int]:
        """(kind, severity) -> count, errors first, then by count."""
        counts = Counter((p.kind, p.severity) for p in self.problems)
        return dict(sorted(counts.items(), key=lambda item: (item[0][1] != ERROR, -item[1], item[0][0])))

    def to_dict(self) -> dict:
        return {
            "source": str(self.source),
            "source_sha256": self.source_sha256,
            "num_source_records": self.num_source_records,
            "num_usable_records": len(self.records),
            "dropped": self.dropped,
            "test_split": str(self.test_split) if self.test_split else None,
            "test_overlap": self.test_overlap,
            "test_splits": {name: str(path) if path else None for name, path in self.test_splits.items()},
            "datasets": self.datasets,
            "translated_captions": self.translated_captions,
            "counts": [
                {"kind": kind, "severity": severity, "count": count}
                for (kind, severity), count in self.counts_by_severity().items()
            ],
            "problems": [p.to_dict() for p in self.problems],
        }


def _show(value: object, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else repr(value)
    if _text_defect(text):  # unpaired surrogates would break printing the message
        text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _printable(text: str) -> str:
    """`text` as written, or JSON-escaped if it holds characters no terminal or UTF-8 file takes."""
    return json.dumps(text)[1:-1] if _text_defect(text) else text


def _escaped(name: str) -> str:
    """A JSON key as a field name on one line (control characters escaped as in JSON)."""
    return json.dumps(name, ensure_ascii=bool(_text_defect(name)))[1:-1]


def _type_name(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_float(value: int | float) -> float:
    """float(value), with integers too large for a float (JSON allows 1e400 as an integer) as inf."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _text_defect(value: str) -> str | None:
    """What makes a string unusable as a caption or path, or None: NUL characters (file systems
    and HDF5 strings end at them) and unpaired surrogates (not encodable as UTF-8)."""
    if "\x00" in value:
        return "a NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"an unpaired surrogate {value[err.start]!r} (invalid Unicode)"
    return None


class _RecordChecker:
    """Checks one raw record, collecting problems; `build()` returns it cleaned or None."""

    def __init__(self, index: int, raw: dict, *, translations: dict[str, str] | None,
                 fps_hint: float | None, invalid_severity: str, native_scripts: tuple[str, ...] = ()) -> None:
        self.index = index
        self.raw = raw
        self.translations = translations
        self.native_scripts = native_scripts
        self.fps_hint = fps_hint
        self.invalid_severity = invalid_severity
        self.video = _printable(raw["video"]) if isinstance(raw.get("video"), str) else ""  # for messages
        self.problems: list[Problem] = []
        self.unusable = False
        self.translated = 0

    def _add(self, field_name: str, kind: str, severity: str, message: str) -> None:
        self.problems.append(Problem(self.index, self.video, field_name, kind, severity, message))

    def _invalid(self, field_name: str, kind: str, message: str) -> None:
        """A problem that makes the record unusable: it is dropped."""
        self.unusable = True
        self._add(field_name, kind, self.invalid_severity, f"{message}; record dropped")

    def _warn(self, field_name: str, kind: str, message: str) -> None:
        self._add(field_name, kind, WARNING, message)

    # --- captions -------------------------------------------------------------------------

    def _caption(self, field_name: str, value: object) -> str | None:
        if not isinstance(value, str):
            self._invalid(field_name, "wrong-type", f"{field_name} must be a string, got {_type_name(value)} {_show(value)}")
            return None
        if not value.strip():
            self._invalid(field_name, "empty-caption", f"{field_name} is empty; write a caption or remove the entry")
            return None
        defect = _text_defect(value)
        if defect:
            self._invalid(field_name, "bad-text", f"{field_name} contains {defect}: {_show(value)}")
            return None
        scripts = [script for script in foreign_scripts(value) if script not in self.native_scripts]
        if not scripts:
            return value
        english = translate(value, self.translations)
        if english is not None:
            self.translated += 1
            if foreign_scripts(english):
                self._warn(field_name, "non-english-caption",
                           f"the translation of {_show(value)} is still not English: {_show(english)}")
            return english
        self._warn(field_name, "non-english-caption",
                   f"{field_name} has {' and '.join(scripts)} text: {_show(value)}; kept as written. "
                   "Translate it: `fgclip-vad export-captions` then `--translations FILE`")
        return value

    # --- boxes ----------------------------------------------------------------------------

    def _frame(self, field_name: str, value: object) -> int | None:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, float) and not math.isfinite(value):
            self._invalid(field_name, "non-finite", f"{field_name} is {value!r}; frames must be whole numbers")
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self._invalid(field_name, "wrong-type", f"{field_name} must be a whole frame number, got {_type_name(value)} {_show(value)}")
            return None
        if value < 0:
            self._invalid(field_name, "negative-frame", f"{field_name} is {value}; frames are 0-based source frame numbers")
            return None
        if value > MAX_FRAME:
            self._invalid(field_name, "frame-too-large",
                          f"{field_name} is {_show(value)}: no video has that many frames (limit {MAX_FRAME:.0e})")
            return None
        return value

    def _box(self, field_name: str, value: object) -> tuple[float, float, float, float] | None:
        if not isinstance(value, list) or len(value) != 4 or not all(_is_number(v) for v in value):
            self._invalid(field_name, "wrong-type", f"{field_name} must be [x1, y1, x2, y2] numbers in 0..1, got {_show(value)}")
            return None
        coords = [_as_float(v) for v in value]
        if not all(math.isfinite(v) for v in coords):
            self._invalid(field_name, "non-finite", f"{field_name} is {_show(value)}: NaN or infinite coordinate")
            return None
        overshoot = max(max(coords) - 1.0, -min(coords), 0.0)
        if overshoot > BOX_OVERSHOOT_TOLERANCE:
            hint = " (pixel coordinates? divide by the frame width/height)" if max(coords) > 2 else ""
            self._invalid(field_name, "box-out-of-range",
                          f"{field_name} is {_show(value)}: outside 0..1 by {overshoot:.3g} "
                          f"(more than the {BOX_OVERSHOOT_TOLERANCE} that is clipped){hint}")
            return None
        x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in coords)
        if x1 >= x2 or y1 >= y2:
            self._invalid(field_name, "box-degenerate",
                          f"{field_name} is {_show(value)}: needs x1 < x2 and y1 < y2 (an empty box)")
            return None
        if overshoot > 0:
            self._warn(field_name, "box-clipped", f"{field_name} {_show(value)} overshoots 0..1 by {overshoot:.2g}; clipped")
        return (x1, y1, x2, y2)

    def _keyframes(self, region: int, value: object) -> tuple[Keyframe, ...] | None:
        field_name = f"box_infos[{region}]"
        if not isinstance(value, list):
            self._invalid(field_name, "wrong-type", f"{field_name} must be a list of keyframes, got {_type_name(value)} {_show(value)}")
            return None
        keyframes: list[Keyframe] = []
        ok = True
        for k, raw_keyframe in enumerate(value):
            where = f"{field_name}[{k}]"
            if not isinstance(raw_keyframe, dict):
                self._invalid(where, "wrong-type", f"{where} must be an object {{\"frame\", \"bbox\"}}, got {_show(raw_keyframe)}")
                ok = False
                continue
            for key in KEYFRAME_FIELDS:
                if key not in raw_keyframe:
                    self._invalid(f"{where}.{key}", "missing-field", f"{where} has no \"{key}\"")
                    ok = False
            for key in raw_keyframe:
                if key not in KEYFRAME_FIELDS:
                    self._warn(f"{where}.{_escaped(key)}", "unknown-field",
                               f"unknown keyframe field {_show(key)} = {_show(raw_keyframe[key])}; ignored")
            if "frame" not in raw_keyframe or "bbox" not in raw_keyframe:
                continue
            frame = self._frame(f"{where}.frame", raw_keyframe["frame"])
            box = self._box(f"{where}.bbox", raw_keyframe["bbox"])
            if frame is None or box is None:
                ok = False
                continue
            keyframes.append(Keyframe(frame, box))
        if not ok:
            return None
        frames = [kf.frame for kf in keyframes]
        if frames != sorted(frames):
            self._warn(field_name, "unsorted-keyframes", f"{field_name} keyframes are not in frame order; sorted")
        by_frame: dict[int, Keyframe] = {}
        for kf in sorted(keyframes, key=lambda kf: kf.frame):
            if kf.frame in by_frame:
                self._warn(field_name, "duplicate-keyframe", f"{field_name} has frame {kf.frame} twice; the first box is kept")
                continue
            by_frame[kf.frame] = kf
        return tuple(by_frame.values())

    # --- the whole record -----------------------------------------------------------------

    def _timestamps(self, value: object) -> tuple[float, float] | None:
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != 2 or not all(_is_number(v) for v in value):
            self._invalid("timestamps", "wrong-type", f"timestamps must be null or [start_s, end_s], got {_show(value)}")
            return None
        start_s, end_s = _as_float(value[0]), _as_float(value[1])
        if not (math.isfinite(start_s) and math.isfinite(end_s)):
            self._invalid("timestamps", "non-finite", f"timestamps {_show(value)} are not finite")
        elif start_s < 0 or end_s < 0:
            self._invalid("timestamps", "timestamps-negative", f"timestamps {_show(value)} are negative; seconds from the video start")
        elif end_s <= start_s:
            self._invalid("timestamps", "timestamps-reversed",
                          f"timestamps {_show(value)}: end_s must be after start_s")
        else:
            return (start_s, end_s)
        return None

    def _hard_negatives(self, value: object, num_regions: int) -> list[tuple[str, ...]] | None:
        if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
            self._invalid("hard_negatives", "wrong-type",
                          f"hard_negatives must be a list of caption lists, one per region, got {_show(value)}")
            return None
        if len(value) != num_regions:
            self._invalid("hard_negatives", "hard-negative-mismatch",
                          f"{len(value)} hard-negative lists for {num_regions} region captions; give one list per region ([] for none)")
            return None
        lists: list[tuple[str, ...]] = []
        for j, negatives in enumerate(value):
            cleaned = [self._caption(f"hard_negatives[{j}][{k}]", text) for k, text in enumerate(negatives)]
            lists.append(tuple(text for text in cleaned if text is not None))
        return lists

    def build(self) -> AnnotationRecord | None:
        raw = self.raw
        for name in REQUIRED_FIELDS:
            if name not in raw:
                self._invalid(name, "missing-field", f"record has no \"{name}\"")
        for name in raw:
            if name not in REQUIRED_FIELDS and name not in OPTIONAL_FIELDS:
                self._warn(_escaped(name), "unknown-field",
                           f"unknown field {_show(name)} = {_show(raw[name])}; kept in the file, not used")

        video = raw.get("video")
        if "video" in raw and (not isinstance(video, str) or not video.strip()):
            self._invalid("video", "wrong-type", f"video must be a non-empty path string, got {_show(video)}")
        elif isinstance(video, str) and _text_defect(video):
            self._invalid("video", "bad-text", f"video path contains {_text_defect(video)}: {_show(video)}")
        dataset = self._dataset(raw.get("dataset"), video if isinstance(video, str) else "")
        label, is_anomaly = label_from_path(self.video, dataset) if self.video else ("", False)
        if self.video and not dataset.is_known_label(label):
            self._warn("video", "unknown-label",
                       f"no {dataset.title} class in the path {_show(self.video)}; label taken as {label!r}, anomalous "
                       f"(classes: {', '.join(dataset.anomaly_classes)}; a `dataset` field sets another dataset)")

        global_caption = self._caption("global_caption", raw["global_caption"]) if "global_caption" in raw else None

        captions: list[str | None] = []
        if "region_captions" in raw:
            if isinstance(raw["region_captions"], list):
                captions = [self._caption(f"region_captions[{j}]", c) for j, c in enumerate(raw["region_captions"])]
            else:
                self._invalid("region_captions", "wrong-type",
                              f"region_captions must be a list of strings, got {_type_name(raw['region_captions'])} {_show(raw['region_captions'])}")

        tracks: list[tuple[Keyframe, ...] | None] = []
        if "box_infos" in raw:
            if isinstance(raw["box_infos"], list):
                tracks = [self._keyframes(j, v) for j, v in enumerate(raw["box_infos"])]
                if isinstance(raw.get("region_captions"), list) and len(tracks) != len(captions):
                    self._invalid("box_infos", "region-box-mismatch",
                                  f"{len(captions)} region captions but {len(tracks)} box lists; "
                                  "box_infos[i] must belong to region_captions[i] (use [] for a region without boxes)")
            else:
                self._invalid("box_infos", "wrong-type",
                              f"box_infos must be a list of keyframe lists, got {_type_name(raw['box_infos'])} {_show(raw['box_infos'])}")

        window_s = self._timestamps(raw.get("timestamps"))
        negatives = self._hard_negatives(raw["hard_negatives"], len(captions)) if "hard_negatives" in raw else None

        if self.unusable:
            return None
        if not captions:
            self._warn("region_captions", "no-regions", "record has no region captions; only its global caption is used")
        if negatives is None:
            negatives = [()] * len(captions)
        regions = tuple(Region(c, kfs, negs) for c, kfs, negs in zip(captions, tracks, negatives))
        if self.fps_hint and window_s is not None:
            self._check_window(regions, window_s)
        return AnnotationRecord(self.index, video, global_caption, regions, window_s, label, is_anomaly, dataset.name)

    def _dataset(self, value: object, video: str) -> Dataset:
        """The record's dataset: its `dataset` field, else read from the path."""
        if value is None:
            return dataset_of_path(video)
        if not isinstance(value, str):
            self._invalid("dataset", "wrong-type", f"dataset must be a dataset name, got {_show(value)}")
            return dataset_of_path(video)
        try:
            return get_dataset(value)
        except UnknownDatasetError as err:
            self._invalid("dataset", "unknown-dataset", str(err))
            return dataset_of_path(video)

    def _check_window(self, regions: tuple[Region, ...], window_s: tuple[float, float]) -> None:
        half_frame_s = 0.5 / self.fps_hint
        for j, region in enumerate(regions):
            for k, kf in enumerate(region.keyframes):
                time_s = kf.frame / self.fps_hint
                if time_s < window_s[0] - half_frame_s or time_s > window_s[1] + half_frame_s:
                    self._warn(f"box_infos[{j}][{k}].frame", "keyframe-outside-window",
                               f"keyframe at frame {kf.frame} ({time_s:.2f} s at {self.fps_hint:g} fps) lies outside "
                               f"timestamps [{window_s[0]:g}, {window_s[1]:g}] s; stage 1 never samples it")


def _file_problem(kind: str, message: str, field_name: str = "") -> Problem:
    return Problem(None, "", field_name, kind, ERROR, message)


def _load(path: Path) -> tuple[list | None, str, Problem | None]:
    """The raw record list, the file's sha256, or a file-level problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "", _file_problem("file-missing", f"annotation file {path} not found")
    except OSError as exc:
        return None, "", _file_problem("file-unreadable", f"annotation file {path} cannot be read: {exc}")
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, sha256, _file_problem("file-unreadable", f"annotation file {path} is not UTF-8 text: {exc}")
    except json.JSONDecodeError as exc:
        return None, sha256, _file_problem(
            "not-json", f"annotation file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        return None, sha256, _file_problem(
            "not-json", f"annotation file {path}: JSON nested too deeply to read; records are objects of plain fields")
    if not isinstance(raw, list):
        return None, sha256, _file_problem(
            "not-a-list", f"annotation file {path}: the top level must be a list of records, got a JSON {_type_name(raw)}")
    return raw, sha256, None


def assign_test_splits(test_split, datasets_present: list[str]) -> dict[str, Path]:
    """dataset name -> split list the user gave. A mapping is taken as it is (keys: registry
    names or aliases); a single path belongs to UCF-Crime, or to the one dataset of a file that
    holds only one."""
    if test_split is None:
        return {}
    if isinstance(test_split, dict):
        return {get_dataset(name).name: Path(path) for name, path in test_split.items()}
    default = "ucf-crime" if "ucf-crime" in datasets_present or len(datasets_present) != 1 else datasets_present[0]
    return {default: Path(test_split)}


def _split_search_text(dataset: Dataset) -> str:
    env = "$FGCLIP_UCF_TEST_SPLIT, " if dataset.name == "ucf-crime" else ""
    folder = "ucf" if dataset.name == "ucf-crime" else dataset.name
    return f"{env}{dataset.test_split} next to it, ../{folder}/ and ../../{folder}/"


def _check_test_overlap(report: ValidationReport, named_videos: list[tuple[int, str, str]], test_split,
                        annotation_path: Path, *, allow_test_overlap: bool, drop_test_overlap: bool) -> None:
    """Compare the videos of all records (dropped ones too: fixing them must not let a test
    video in unnoticed) with their dataset's official test split; drop overlapping records if asked."""
    by_dataset: dict[str, list[tuple[int, str]]] = {}
    for index, video, dataset_name in named_videos:
        by_dataset.setdefault(dataset_name, []).append((index, video))
    given = assign_test_splits(test_split, list(by_dataset))
    overlapping: set[int] = set()
    for dataset_name, videos in by_dataset.items():
        dataset = REGISTRY[dataset_name]
        split_path = given.get(dataset_name) or find_test_split(annotation_path, dataset)
        report.test_splits[dataset_name] = None
        if split_path is None:
            severity = WARNING if allow_test_overlap else ERROR
            option = "--test-split PATH" if dataset_name == "ucf-crime" else f"--test-split {dataset_name}=PATH"
            report.problems.append(Problem(
                None, "", "test_split", "test-split-missing", severity,
                f"no official {dataset.title} test split found for {annotation_path} ({len(videos)} records; looked "
                f"for {_split_search_text(dataset)}); overlap with the test set is NOT checked. "
                f"Pass {option}/{dataset.test_split}, or --allow-test-overlap to go on unchecked"))
            continue
        try:
            entries = read_split_list(split_path, dataset)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = "not found" if isinstance(exc, FileNotFoundError) else f"unreadable: {exc}"
            report.problems.append(_file_problem(
                "test-split-unreadable", f"{dataset.title} test split {split_path} {reason}; pass --test-split with "
                f"the official {dataset.test_split}", "test_split"))
            continue
        report.test_splits[dataset_name] = split_path
        if report.test_split is None or dataset_name == "ucf-crime":
            report.test_split = split_path
        overlapping |= _overlap_with(report, videos, entries, split_path, allow_test_overlap=allow_test_overlap,
                                     drop_test_overlap=drop_test_overlap)
    if drop_test_overlap:
        report.records = [record for record in report.records if record.index not in overlapping]


def _overlap_with(report: ValidationReport, videos: list[tuple[int, str]], entries: list[SplitEntry], split_path: Path,
                  *, allow_test_overlap: bool, drop_test_overlap: bool) -> set[int]:
    """Report the records of `videos` that are test videos of `entries`; their indices."""
    test_by_key: dict[str, SplitEntry] = {entry.key: entry for entry in entries}
    usable = {record.index for record in report.records}
    overlapping: set[int] = set()
    for index, video in videos:
        entry = test_by_key.get(video_key(video))
        if entry is None:
            continue
        overlapping.add(index)
        report.test_overlap.setdefault(entry.stem, []).append(index)
        where = f"{video!r} is test video {entry.path!r} (line {entry.line_number} of {split_path.name})"
        if index not in usable:
            outcome, severity = "; record already dropped for the problems above, keep it out when fixing them", (
                WARNING if allow_test_overlap or drop_test_overlap else ERROR)
        elif drop_test_overlap:
            outcome, severity = "; record dropped (--drop-test-overlap)", WARNING
            report.dropped.append(index)
        elif allow_test_overlap:
            outcome, severity = "; kept (--allow-test-overlap): test AUC is contaminated", WARNING
        else:
            outcome, severity = (": training on it contaminates the test AUC. Remove it, or pass --drop-test-overlap "
                                 "(drop such records) or --allow-test-overlap (keep them knowingly)"), ERROR
        report.problems.append(Problem(index, video, "video", "test-split-overlap", severity, where + outcome))
    return overlapping


def _record_dataset(raw: dict) -> str:
    """A raw record's dataset for the leak check (also for records dropped as invalid)."""
    value = raw.get("dataset")
    if isinstance(value, str):
        try:
            return get_dataset(value).name
        except UnknownDatasetError:
            pass
    return dataset_of_path(raw["video"]).name


def dataset_summary(report: ValidationReport, named_videos: list[tuple[int, str, str]]) -> dict[str, dict]:
    """Per dataset: records named, usable, test split checked, test videos overlapped, usable records per class."""
    usable = {record.index: record for record in report.records}
    summary: dict[str, dict] = {}
    for index, _video, dataset_name in named_videos:
        entry = summary.setdefault(dataset_name, {"records": 0, "usable": 0, "classes": Counter()})
        entry["records"] += 1
        if index in usable:
            entry["usable"] += 1
            entry["classes"][usable[index].label] += 1
    overlap_of = {i: stem for stem, indices in report.test_overlap.items() for i in indices}
    for dataset_name, entry in summary.items():
        split = report.test_splits.get(dataset_name)
        entry["test_split"] = str(split) if split else None
        entry["test_videos_overlapped"] = len({overlap_of[i] for i, _, d in named_videos
                                               if d == dataset_name and i in overlap_of})
        entry["classes"] = dict(sorted(entry["classes"].items()))
        known = REGISTRY[dataset_name]
        entry["unknown_labels"] = sorted(label for label in entry["classes"] if not known.is_known_label(label))
    return dict(sorted(summary.items()))


def _check_duplicate_windows(records: list[AnnotationRecord]) -> list[Problem]:
    """Same video and window captioned by two different records: legal, but they are each
    other's false negatives in a contrastive batch, so the user should know."""
    first_by_window: dict[tuple[str, tuple[float, float] | None], int] = {}
    problems = []
    for record in records:
        key = (video_key(record.video), record.window_s)
        if key in first_by_window:
            window = "the whole video" if record.window_s is None else f"window {list(record.window_s)} s"
            problems.append(Problem(record.index, record.video, "timestamps", "duplicate-window", WARNING,
                                    f"{window} is also annotated by record {first_by_window[key]} with other captions; "
                                    "both kept (they act as false negatives if batched together)"))
        else:
            first_by_window[key] = record.index
    return problems


def validate_annotations(path, *, test_split=None, allow_test_overlap: bool = False,
                         translations: dict[str, str] | None = None, drop_test_overlap: bool = False,
                         drop_invalid: bool = False, fps_hint: float | None = None,
                         model_family: str = "clip") -> ValidationReport:
    """Read `path`, check every record (see the module docstring), return the report.

    Never raises for bad input: file-level failures come back as error problems with no
    records. `translations` maps original caption -> English (see `pipeline.captions`).
    `test_split`: a split list (UCF-Crime's, or the only dataset's) or {dataset: split list};
    datasets not given are looked for next to `path` (`pipeline.ucf_split.find_test_split`).
    `model_family` decides which non-Latin scripts are native (not flagged): none for CLIP,
    Chinese for the bilingual siglip2 family (`pipeline.captions.NATIVE_SCRIPTS`).
    """
    if model_family not in NATIVE_SCRIPTS:
        raise ValueError(f"unknown model family {model_family!r}; one of {', '.join(NATIVE_SCRIPTS)}")
    path = Path(path)
    if allow_test_overlap and drop_test_overlap:
        raise ValueError("allow_test_overlap and drop_test_overlap exclude each other")
    raw_records, sha256, file_problem = _load(path)
    report = ValidationReport(source=path, source_sha256=sha256, records=[], problems=[])
    if file_problem is not None:
        report.problems.append(file_problem)
        return report
    report.num_source_records = len(raw_records)
    if not raw_records:
        report.problems.append(_file_problem("no-records", f"annotation file {path} holds an empty list: no records to train on"))
        return report
    invalid_severity = WARNING if drop_invalid else ERROR

    first_by_content: dict[str, int] = {}
    named_videos: list[tuple[int, str, str]] = []  # (index, video, dataset) of every record that names one
    for index, raw in enumerate(raw_records):
        if not isinstance(raw, dict):
            report.problems.append(Problem(index, "", "", "not-an-object", invalid_severity,
                                           f"record is a JSON {_type_name(raw)} ({_show(raw)}), not an object; record dropped"))
            report.dropped.append(index)
            continue
        content = json.dumps(raw, sort_keys=True, ensure_ascii=False)
        if content in first_by_content:
            video = _printable(raw["video"]) if isinstance(raw.get("video"), str) else ""
            report.problems.append(Problem(index, video, "", "duplicate-record", WARNING,
                                           f"identical to record {first_by_content[content]}; this copy is dropped"))
            report.dropped.append(index)
            continue
        first_by_content[content] = index
        if isinstance(raw.get("video"), str) and raw["video"].strip():
            named_videos.append((index, raw["video"], _record_dataset(raw)))
        checker = _RecordChecker(index, raw, translations=translations, fps_hint=fps_hint,
                                 invalid_severity=invalid_severity, native_scripts=NATIVE_SCRIPTS[model_family])
        record = checker.build()
        report.problems.extend(checker.problems)
        report.translated_captions += checker.translated
        if record is None:
            report.dropped.append(index)
        else:
            report.records.append(record)

    report.problems.extend(_check_duplicate_windows(report.records))
    _check_test_overlap(report, named_videos, test_split, path, allow_test_overlap=allow_test_overlap,
                        drop_test_overlap=drop_test_overlap)
    report.datasets = dataset_summary(report, named_videos)
    report.dropped.sort()
    report.problems.sort(key=lambda p: (-1 if p.record_index is None else p.record_index))
    return report


def format_report(report: ValidationReport, *, max_listed: int = 10) -> str:
    """The human-readable report `fgclip-vad validate` prints.

    A summary table of problem counts by kind and severity, then the problems grouped by kind
    (at most `max_listed` per kind; the JSON report has all), except test-split overlap: every
    overlapping test video is listed, with its record indices, because the user must see them.
    """
    lines = [f"annotations: {report.source}"]
    if report.source_sha256:
        lines.append(f"sha256:      {report.source_sha256}")
    lines.append(f"records:     {report.num_source_records} in the file, {len(report.records)} usable, "
                 f"{len(report.dropped)} dropped")
    if len(report.datasets) <= 1:
        lines.append(f"test split:  {report.test_split if report.test_split else 'not checked'}")
    lines += _format_datasets(report)
    if report.translated_captions:
        lines.append(f"translated:  {report.translated_captions} captions from the translation file")
    counts = report.counts_by_severity()
    if counts:
        lines += ["", f"  {'severity':<9} {'kind':<26} {'count':>6} {'records':>8}"]
        for (kind, severity), count in counts.items():
            records = {p.record_index for p in report.problems
                       if p.kind == kind and p.severity == severity and p.record_index is not None}
            lines.append(f"  {severity:<9} {kind:<26} {count:>6} {len(records):>8}")

    for severity in (ERROR, WARNING):
        kinds = [kind for (kind, sev) in counts if sev == severity]
        if not kinds:
            continue
        lines += ["", f"{severity.upper()}S"]
        for kind in kinds:
            problems = [p for p in report.problems if p.kind == kind and p.severity == severity]
            if kind == "test-split-overlap":
                lines += _format_overlap(report, problems)
                continue
            shown = problems[:max_listed]
            suffix = "" if len(shown) == len(problems) else f", first {len(shown)} shown"
            lines.append(f"  {kind} ({len(problems)}{suffix}):")
            for problem in shown:
                where = "" if problem.record_index is None else f"record {problem.record_index} "
                if problem.video:
                    where += f"({video_stem(problem.video)}) "
                # messages name their field already when they start with it
                message = problem.message
                if problem.record_index is not None and problem.field and not message.startswith(problem.field):
                    message = f"{problem.field}: {message}"
                lines.append(f"    {where}{message}")
            if len(shown) < len(problems):
                lines.append(f"    ... and {len(problems) - len(shown)} more (--max-listed N, or --json-report FILE for all)")

    errors, warnings = len(report.errors()), len(report.warnings())
    lines.append("")
    if errors:
        kinds = ", ".join(f"{kind} {count}" for (kind, sev), count in counts.items() if sev == ERROR)
        lines.append(f"FAILED: {errors} errors ({kinds}), {warnings} warnings. Fix the errors above before training.")
    else:
        lines.append(f"OK: {len(report.records)} usable records, {warnings} warnings.")
    return "\n".join(lines)


def _format_datasets(report: ValidationReport) -> list[str]:
    """One block per dataset of the file: records, test split, overlap, classes."""
    lines = []
    for name, entry in report.datasets.items():
        dataset = REGISTRY[name]
        lines.append(f"dataset {dataset.title}: {entry['records']} records, {entry['usable']} usable; test split "
                     f"{entry['test_split'] or 'NOT CHECKED'}; {entry['test_videos_overlapped']} test videos in the file")
        classes = ", ".join(f"{label} {count}" for label, count in entry["classes"].items())
        lines.append(f"  classes: {classes or 'none'}"
                     + (f" (not {dataset.title} classes: {', '.join(entry['unknown_labels'])})" if entry["unknown_labels"] else ""))
    return lines


def _format_overlap(report: ValidationReport, problems: list[Problem]) -> list[str]:
    indices = {p.record_index for p in problems}
    videos = {stem: idx for stem, idx in report.test_overlap.items() if indices.intersection(idx)}
    splits = ", ".join(str(path) for path in report.test_splits.values() if path) or str(report.test_split)
    lines = [f"  test-split-overlap: {len(videos)} official test videos in {len(indices)} records "
             f"(test split {splits}):"]
    lines.append(f"    e.g. record {problems[0].record_index}: {problems[0].message}")
    width = max(len(stem) for stem in videos)
    for stem in sorted(videos):
        record_list = ", ".join(str(i) for i in videos[stem])
        lines.append(f"    {stem:<{width}}  record{'s' if len(videos[stem]) > 1 else ''} {record_list}")
    return lines
