"""Independent ffmpeg decodes that stage 1's output is checked against (test helper).

They run ffmpeg directly, not through `pipeline.decode`'s command builder: every frame scaled
with `-vf` and indexed afterwards, or one frame asked for with `select=eq(n\\,K)`. Only the
scaling filters are shared with stage 1 (`scale_filter_chain`), so that pixels can match exactly.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from pipeline.decode import CropRegion, find_ffmpeg, scale_filter_chain


def reference_frames(path: Path, size: int, crop: CropRegion | None = None) -> np.ndarray:
    """Every frame of the video, cropped and scaled like stage 1 does, by a plain ffmpeg call."""
    cmd = [find_ffmpeg(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0",
           "-vf", scale_filter_chain(size, crop), "-fps_mode", "passthrough",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, size, size, 3)


def single_frame(path: Path, frame_number: int, size: int) -> np.ndarray:
    """Frame `frame_number` (0-based decode order) alone, via ffmpeg's select."""
    cmd = [find_ffmpeg(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0",
           "-vf", f"select=eq(n\\,{frame_number}),{scale_filter_chain(size)}", "-fps_mode", "passthrough",
           "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(size, size, 3)
