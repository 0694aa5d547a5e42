"""Where the embedded default dataset lives: the one place that names its paths.

`fgclip-vad synth` writes the generated videos and annotations, `fgclip-vad frames` (no
arguments) turns them into shards, `fgclip-vad init-model --preset tiny` writes the default
model, and the training and evaluation commands read all of these when given no paths.
Everything under `data/` except its README is generated and git-ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

# The repository root when running from a checkout; FGCLIP_DATA_ROOT moves the data elsewhere.
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("FGCLIP_DATA_ROOT", REPO_ROOT / "data"))

SYNTH_DIR = DATA_ROOT / "synth"  # generated videos + annotation files
SYNTH_SEED = 0
TRAIN_JSON = SYNTH_DIR / "train.json"  # records in the real annotation format
VIDEO_ROOT = SYNTH_DIR  # "video" fields of TRAIN_JSON ("videos/<Class>/<Name>.mp4") are relative to this
TEST_LIST = SYNTH_DIR / "Anomaly_Test.txt"  # official split-list format
# Lines of TEST_LIST are official `<Class>/<Name>.mp4`, relative to this (as UCF-Crime's list is
# relative to its Videos folder while the training JSON carries a longer prefix).
TEST_VIDEO_ROOT = SYNTH_DIR / "videos"
TEMPORAL_ANNOTATIONS = SYNTH_DIR / "Temporal_Anomaly_Annotation.txt"  # official format
ACTORS_JSON = SYNTH_DIR / "actors.json"  # per record and region: the actor's RGB colour (tests)
# Per test video and anomalous frame: the boxes of the actors of the event (the spatial metric).
TEST_EVENT_BOXES = SYNTH_DIR / "test_event_boxes.json"

SHARD_ROOT = DATA_ROOT / "shards"
TRAIN_FRAME_COUNTS = (64, 256)  # T of the debug and full presets
TEST_STRIDE = 16  # the field's snippet length

# The embedded default stores frames at the tiny model's input size, so the CPU demo does not
# decode 224 px frames only to shrink them again on every step.
FRAME_SIZE = 112


def train_shard_dir(num_frames: int) -> Path:
    return SHARD_ROOT / f"train_t{num_frames}"


def test_shard_dir(stride: int = TEST_STRIDE) -> Path:
    return SHARD_ROOT / f"test_stride{stride}"


MODEL_DIR = DATA_ROOT / "models" / "tiny"  # the default model (`init-model --preset tiny`)


def model_dir(preset: str) -> Path:
    """Where `init-model --preset NAME` writes by default: MODEL_DIR for tiny, a sibling otherwise."""
    return MODEL_DIR if preset == "tiny" else MODEL_DIR.parent / preset
