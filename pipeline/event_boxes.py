"""Boxes of the anomalous actors in test videos, per frame: the side file of the spatial metric.

The embedded generator writes one for its test videos (`pipeline.embedded.TEST_EVENT_BOXES`);
`fgclip-vad eval --boxes FILE` reads the same format for real data. A JSON object:

    {"format": "fgclip-vad event boxes", "version": 1,
     "videos": {"Fighting950_x264.mp4": [{"frame": 412, "bboxes": [[x1, y1, x2, y2], ...]}, ...], ...}}

* video names as in the temporal annotation file (folders and extension are ignored when matching);
* `frame`: 0-based source frame number at the native rate (as in the training JSON's `box_infos`);
* `bboxes`: every anomalous actor on that frame, x1 < x2 and y1 < y2 as fractions (0..1) of the
  displayed frame (as the training JSON's `bbox`). Frames without an entry carry no boxes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

FORMAT_NAME = "fgclip-vad event boxes"
FORMAT_VERSION = 1


class EventBoxesError(ValueError):
    """A boxes file that cannot be used; the message names the file, video and entry."""


def write_event_boxes(path: Path, videos: Mapping[str, Mapping[int, Sequence[Sequence[float]]]]) -> None:
    """Write {video name: {frame: [box, ...]}} in the format above (frames sorted)."""
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "videos": {
            name: [{"frame": int(frame), "bboxes": [[round(float(v), 6) for v in box] for box in boxes]}
                   for frame, boxes in sorted(frames.items()) if len(boxes)]
            for name, frames in videos.items()
        },
    }
    Path(path).write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")


def read_event_boxes(path: Path) -> dict[str, dict[int, np.ndarray]]:
    """{video name as written: {frame: (K, 4) float32 boxes}}; EventBoxesError for anything malformed."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EventBoxesError(f"{path}: boxes file not found") from None
    except (OSError, ValueError) as err:
        raise EventBoxesError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise EventBoxesError(f"{path}: not an event boxes file (needs \"format\": \"{FORMAT_NAME}\"; "
                             f"see pipeline/event_boxes.py for the layout)")
    if document.get("version") != FORMAT_VERSION:
        raise EventBoxesError(f"{path}: version {document.get('version')!r}; this code reads version {FORMAT_VERSION}")
    videos = document.get("videos")
    if not isinstance(videos, dict):
        raise EventBoxesError(f"{path}: \"videos\" must be an object of video name -> list of frame entries")
    result: dict[str, dict[int, np.ndarray]] = {}
    for name, entries in videos.items():
        if not isinstance(entries, list):
            raise EventBoxesError(f"{path}: video {name}: expected a list of {{\"frame\", \"bboxes\"}} entries")
        frames: dict[int, np.ndarray] = {}
        for k, entry in enumerate(entries):
            where = f"{path}: video {name}, entry {k}"
            if not isinstance(entry, dict) or not isinstance(entry.get("frame"), int) or entry["frame"] < 0:
                raise EventBoxesError(f"{where}: needs a non-negative integer \"frame\", got {entry!r:.80}")
            boxes = entry.get("bboxes")
            if not isinstance(boxes, list) or not all(isinstance(b, list) and len(b) == 4 for b in boxes):
                raise EventBoxesError(f"{where} (frame {entry['frame']}): \"bboxes\" must be a list of [x1, y1, x2, y2]")
            try:
                array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            except (TypeError, ValueError):
                raise EventBoxesError(f"{where} (frame {entry['frame']}): box values must be numbers") from None
            bad = ~np.isfinite(array).all(axis=1) | (array[:, 0] >= array[:, 2]) | (array[:, 1] >= array[:, 3]) \
                | (array.min(axis=1) < -0.01) | (array.max(axis=1) > 1.01)
            if bad.any():
                raise EventBoxesError(f"{where} (frame {entry['frame']}): box {array[bad][0].tolist()} is not "
                                     f"x1 < x2, y1 < y2 inside 0..1")
            if entry["frame"] in frames:
                raise EventBoxesError(f"{where}: frame {entry['frame']} listed twice")
            frames[entry["frame"]] = np.clip(array, 0.0, 1.0).astype(np.float32)
        result[name] = frames
    return result


def boxes_near(frames: Mapping[int, np.ndarray], frame: int, max_distance: int) -> np.ndarray | None:
    """The boxes of `frame`, else of the nearest listed frame at most `max_distance` away, else None
    (real annotations are keyframes; a stride-sampled test frame rarely falls on one)."""
    if frame in frames:
        return frames[frame]
    best, best_distance = None, math.inf
    for listed, boxes in frames.items():
        distance = abs(listed - frame)
        if distance <= max_distance and distance < best_distance:
            best, best_distance = boxes, distance
    return best
