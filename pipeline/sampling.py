"""Which source frames a record keeps: its window in frames, uniform and stride sample indices.

Frame numbers are 0-based at the video's native rate; frame i covers [i / fps, (i + 1) / fps).

* uniform (training): T samples over the window [start, stop), sample k at
  `start + floor((k + 0.5) * L / T)` with L = stop - start; when L < T frames repeat.
* stride (test videos): sample k at `min(k * stride + stride // 2, n - 1)` for
  k = 0 .. ceil(n / stride) - 1, the centre of snippet k = source frames [k*stride, (k+1)*stride).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.shards import SAMPLING_MODES

# A window may end up to this far past the last frame and is clipped to the video's end:
# annotation tools round times, and UCF-Crime times are often written at an assumed 30 fps.
WINDOW_END_TOLERANCE_S = 0.5
_EPS = 1e-6  # float slack when turning seconds into frame numbers


class WindowError(ValueError):
    """A record's window does not fit its video (it starts or ends past the end)."""


@dataclass(frozen=True)
class SamplingSpec:
    """How one shard directory samples its records: ("uniform", T) or ("stride", stride)."""

    mode: str
    num_frames: int = 0  # T, uniform mode
    stride: int = 0  # source frames per sample, stride mode

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {self.mode!r}")
        if self.mode == "uniform" and self.num_frames <= 0:
            raise ValueError(f"uniform sampling needs a positive number of frames, got {self.num_frames}")
        if self.mode == "stride" and self.stride <= 0:
            raise ValueError(f"stride sampling needs a positive stride, got {self.stride}")

    @classmethod
    def uniform(cls, num_frames: int) -> "SamplingSpec":
        return cls("uniform", num_frames=int(num_frames))

    @classmethod
    def strided(cls, stride: int) -> "SamplingSpec":
        return cls("stride", stride=int(stride))

    def __str__(self) -> str:
        return f"T={self.num_frames}" if self.mode == "uniform" else f"stride={self.stride}"

    def sample(self, start: int, stop: int, num_source_frames: int) -> tuple[np.ndarray, float]:
        """(frame numbers, half the sampling stride in source frames) for window [start, stop)."""
        if self.mode == "uniform":
            return uniform_indices(start, stop, self.num_frames), uniform_half_stride(stop - start, self.num_frames)
        return stride_indices(num_source_frames, self.stride), self.stride / 2.0


def window_frames(window_s: tuple[float, float] | None, fps: float, num_frames: int) -> tuple[int, int]:
    """The window [start, stop) in frame numbers: the frames whose time span meets the window.

    None is the whole video. A window ending at most WINDOW_END_TOLERANCE_S past the last frame
    is clipped to the video; one starting at or after the end, or ending later, raises
    WindowError (the record does not belong to this video as it is).
    """
    if num_frames <= 0:
        raise WindowError("the video has no frames")
    if window_s is None:
        return 0, num_frames
    start_s, end_s = window_s
    duration_s = num_frames / fps
    if start_s * fps + _EPS >= num_frames:  # (checked before rounding: 1e308 s times fps is inf)
        raise WindowError(
            f"window [{start_s:g}, {end_s:g}] s starts after the video ends ({duration_s:.2f} s, "
            f"{num_frames} frames at {fps:g} fps); fix the record's timestamps"
        )
    if end_s > duration_s + max(WINDOW_END_TOLERANCE_S, 1.0 / fps):
        raise WindowError(
            f"window [{start_s:g}, {end_s:g}] s ends {end_s - duration_s:.2f} s past the end of the video "
            f"({duration_s:.2f} s, {num_frames} frames at {fps:g} fps); fix the record's timestamps"
        )
    start = max(0, math.floor(start_s * fps + _EPS))
    stop = min(max(math.ceil(end_s * fps - _EPS), start + 1), num_frames)
    return start, stop


def uniform_indices(start: int, stop: int, num_samples: int) -> np.ndarray:
    """T frame numbers spread evenly over [start, stop): `start + floor((k + 0.5) * L / T)`."""
    length = stop - start
    if length <= 0 or num_samples <= 0:
        raise ValueError(f"need a non-empty window and T > 0, got [{start}, {stop}) and T={num_samples}")
    k = np.arange(num_samples, dtype=np.int64)
    # Integer arithmetic: floor((2k + 1) * L / 2T), exact for any length.
    return start + ((2 * k + 1) * length) // (2 * num_samples)


def uniform_half_stride(length: int, num_samples: int) -> float:
    """Half the largest gap between neighbouring uniform samples, in source frames.

    Neighbouring samples are floor(L/T) or ceil(L/T) frames apart, and the first and last sample
    sit at most ceil(L/T)/2 from the window's ends, so every frame of the window lies within
    this distance of a sample. Box tracks use it to hold a track's end boxes.
    """
    return max(1, math.ceil(length / num_samples)) / 2.0


def stride_indices(num_frames: int, stride: int, offset: int | None = None) -> np.ndarray:
    """One frame per snippet of `stride` frames: `min(k * stride + offset, n - 1)`, offset
    `stride // 2` (the snippet's centre, what test shards store) unless given (0 = its first frame)."""
    offset = stride // 2 if offset is None else offset
    if num_frames <= 0 or stride <= 0 or not 0 <= offset < max(stride, 1):
        raise ValueError(f"need frames, a positive stride and 0 <= offset < stride, got n={num_frames}, "
                         f"stride={stride}, offset={offset}")
    k = np.arange(math.ceil(num_frames / stride), dtype=np.int64)
    return np.minimum(k * stride + offset, num_frames - 1)
