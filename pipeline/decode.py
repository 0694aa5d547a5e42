"""ffmpeg for stage 1: find the binary, probe a video, decode selected frames scaled.

There is no ffprobe (the `imageio-ffmpeg` wheel ships only `ffmpeg`), so probing runs ffmpeg
itself: a stream copy of the first video stream into the null muxer reads the container
(no decoding) and prints the stream header and the exact packet count at `-loglevel verbose`.

Decoding sends the wanted frame numbers to ffmpeg's `select` filter *before* `scale`, so only
the sampled frames are scaled and converted to RGB, and reads them one by one from a rawvideo
pipe: memory holds the selected frames, never the whole video. Frame numbers are 0-based in
decoder output order at the native rate (ffmpeg's `n`, what an OpenCV read loop counts);
`-fps_mode passthrough` keeps ffmpeg from duplicating or dropping frames to fake a constant
rate. The decoder's own count of frames comes back from the same run, so a container whose
packet count disagrees with the decodable frames (truncated file, damaged tail) is caught.

Rotation metadata is honoured the way players show the video: ffmpeg rotates by default, and
the probe reports the displayed (rotated) size, which is the frame the boxes refer to.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import ffmpeg  # ffmpeg-python: builds the filter graph and command line
import numpy as np

from pipeline.shards import RESIZE_MODES

# swscale's bicubic, like the PIL bicubic resize of CLIP's and FG-CLIP's preprocessing. swscale
# widens the kernel when shrinking, so large downscales do not alias.
SCALE_FLAGS = "bicubic"
# Above this many characters the select expression would hit Linux's per-argument limit (128 KiB).
_MAX_SELECT_CHARS = 100_000


class VideoError(RuntimeError):
    """A video that cannot be used: missing, unreadable, no video stream, no frames, truncated."""


@lru_cache(maxsize=1)
def find_ffmpeg() -> str:
    """Path of the ffmpeg binary: `ffmpeg` on PATH, else the one in the imageio-ffmpeg wheel."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as err:
        raise VideoError(
            f"no ffmpeg found: none on PATH and imageio-ffmpeg has no binary ({err}). "
            f"Install ffmpeg or `pip install imageio-ffmpeg`."
        ) from err


@dataclass(frozen=True)
class VideoInfo:
    """What stage 1 needs to know about a video before decoding it."""

    path: Path
    width: int  # displayed width in pixels (after rotation metadata is applied)
    height: int  # displayed height in pixels
    fps: float  # average frame rate (frames per second of the native stream)
    num_frames: int  # packets of the first video stream (the decoder confirms it when decoding)
    rotation_deg: float  # rotation metadata applied by ffmpeg (0 when none)
    sample_aspect: float  # pixel aspect ratio (SAR), 1.0 for square pixels
    codec: str

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    @property
    def display_aspect(self) -> float:
        """Width / height as shown on screen (rotation and non-square pixels included)."""
        return self.width * self.sample_aspect / self.height


@dataclass(frozen=True)
class CropRegion:
    """A crop of the displayed frame: pixel rectangle and the same rectangle in 0..1 coordinates."""

    x: int
    y: int
    width: int
    height: int
    frame_width: int
    frame_height: int

    @property
    def normalised(self) -> tuple[float, float, float, float]:
        """x0, y0, w, h of the crop as fractions of the displayed frame."""
        return (
            self.x / self.frame_width,
            self.y / self.frame_height,
            self.width / self.frame_width,
            self.height / self.frame_height,
        )


def center_crop(info: VideoInfo) -> CropRegion:
    """The largest centred crop that is square on screen (non-square pixels accounted for)."""
    w, h = info.width, info.height
    if info.display_aspect >= 1.0:  # wide: keep the full height, cut the sides
        crop_w = max(1, min(w, round(h / info.sample_aspect)))
        crop_h = h
    else:
        crop_w = w
        crop_h = max(1, min(h, round(w * info.sample_aspect)))
    return CropRegion(x=(w - crop_w) // 2, y=(h - crop_h) // 2, width=crop_w, height=crop_h, frame_width=w, frame_height=h)


def crop_for(info: VideoInfo, resize_mode: str) -> CropRegion | None:
    """The crop applied before scaling: None for "squash" (the whole frame, aspect squashed)."""
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    return center_crop(info) if resize_mode == "center-crop" else None


# --- probing ----------------------------------------------------------------------------------

_INPUT_RE = re.compile(r"^Input #(\d+), ", re.MULTILINE)
_STREAM_RE = re.compile(r"^\s*Stream #\d+:\d+.*?: Video: (?P<codec>\w+)(?P<rest>.*)$", re.MULTILINE)
_SIZE_RE = re.compile(r", (\d+)x(\d+)(?=[ ,]|$)")
_SAR_RE = re.compile(r"\[SAR (\d+):(\d+)")
_FPS_RE = re.compile(r"([\d.]+)(k?) fps")
_TBR_RE = re.compile(r"([\d.]+)(k?) tbr")
_ROTATION_RE = re.compile(r"display ?matrix: rotation of (-?[\d.]+) degrees", re.IGNORECASE)
_DECODED_RE = re.compile(r"Input stream #0:\d+ \(video\): \d+ packets read \(\d+ bytes\); (\d+) frames decoded")


def _rate(match: re.Match | None) -> float | None:
    if match is None:
        return None
    value = float(match.group(1)) * (1000.0 if match.group(2) else 1.0)
    return value if value > 0 else None


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "invalid" in line.lower() or "no such file" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def _run_ffmpeg(args: Sequence[str], *, timeout_s: float | None = None) -> subprocess.CompletedProcess:
    cmd = [find_ffmpeg(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "verbose", *args]
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout_s, check=False)


def _input_section(stderr: str, input_number: int) -> str:
    """The header lines ffmpeg prints for input #input_number (its streams and their side data)."""
    header = stderr.split("Stream mapping:", 1)[0]  # the inputs' streams, not the outputs' copies
    starts = [(int(m.group(1)), m.start()) for m in _INPUT_RE.finditer(header)]
    for i, (number, start) in enumerate(starts):
        if number == input_number:
            return header[start: starts[i + 1][1] if i + 1 < len(starts) else len(header)]
    return ""


def parse_probe_output(path: Path, stderr: str, input_number: int = 0) -> VideoInfo:
    """A VideoInfo from the stderr of a probe run, for its input #input_number (testable alone)."""
    section = _input_section(stderr, input_number)
    stream = _STREAM_RE.search(section)
    if stream is None:
        raise VideoError(f"{path}: no video stream ({_last_error_line(stderr)})")
    rest = stream.group("rest")
    size = _SIZE_RE.search(rest)
    if size is None:
        raise VideoError(f"{path}: ffmpeg reports no frame size for the video stream: {stream.group(0).strip()}")
    width, height = int(size.group(1)), int(size.group(2))
    sar = _SAR_RE.search(rest)
    sample_aspect = int(sar.group(1)) / int(sar.group(2)) if sar and int(sar.group(2)) and int(sar.group(1)) else 1.0
    fps = _rate(_FPS_RE.search(rest)) or _rate(_TBR_RE.search(rest))
    if fps is None:
        raise VideoError(f"{path}: ffmpeg reports no frame rate for the video stream: {stream.group(0).strip()}")
    rotation = 0.0
    after_stream = section[stream.end():]
    next_stream = after_stream.find("Stream #")
    rotation_match = _ROTATION_RE.search(after_stream if next_stream < 0 else after_stream[:next_stream])
    if rotation_match:
        rotation = float(rotation_match.group(1))
    if round(abs(rotation)) % 180 == 90:  # ffmpeg autorotates: the frames come out transposed
        width, height = height, width
        sample_aspect = 1.0 / sample_aspect
    packets = re.search(rf"Output stream #{input_number}:0 \(video\): (\d+) packets muxed", stderr)
    num_frames = int(packets.group(1)) if packets else 0
    if num_frames <= 0:
        raise VideoError(f"{path}: the video stream holds no frames")
    return VideoInfo(
        path=path, width=width, height=height, fps=fps, num_frames=num_frames,
        rotation_deg=rotation, sample_aspect=sample_aspect, codec=stream.group("codec"),
    )


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: video file is empty (0 bytes)")


def probe_video(path: os.PathLike | str) -> VideoInfo:
    """Stream info and exact packet count of the first video stream (reads the file, no decoding).

    Raises VideoError naming the file for a missing, empty or unreadable file, no video stream
    or no frames.
    """
    path = Path(path)
    _check_file(path)
    result = _run_ffmpeg(["-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"])
    stderr = result.stderr.decode("utf-8", errors="replace")
    if result.returncode != 0:
        streams = re.findall(r"^\s*Stream #0:\d+.*?: (\w+):", _input_section(stderr, 0), re.MULTILINE)
        if streams and "Video" not in streams:  # e.g. an audio-only file with a video's name
            raise VideoError(f"{path}: no video stream (the file holds only {', '.join(streams).lower()})")
        raise VideoError(f"{path}: ffmpeg cannot read it: {_last_error_line(stderr)}")
    return parse_probe_output(path, stderr)


def probe_videos(paths: Sequence[os.PathLike | str]) -> list[VideoInfo | VideoError]:
    """probe_video for several files in one ffmpeg run: an info or the error, per path.

    ffmpeg's start-up (~30 ms) costs more than reading a short video's packets, so a batch
    shares one run (one input and one null output per file). If any file breaks the run, each
    is probed alone to find which.
    """
    results: list[VideoInfo | VideoError | None] = [None] * len(paths)
    readable: list[int] = []
    for i, path in enumerate(paths):
        try:
            _check_file(Path(path))
            readable.append(i)
        except VideoError as err:
            results[i] = err
    if len(readable) > 1:
        args = [arg for i in readable for arg in ("-i", str(paths[i]))]
        for k in range(len(readable)):
            args += ["-map", f"{k}:v:0", "-c", "copy", "-f", "null", "-"]
        result = _run_ffmpeg(args)
        if result.returncode == 0:
            stderr = result.stderr.decode("utf-8", errors="replace")
            for k, i in enumerate(readable):
                try:
                    results[i] = parse_probe_output(Path(paths[i]), stderr, k)
                except VideoError as err:
                    results[i] = err
            readable = []
    for i in readable:  # alone, or the batch failed
        try:
            results[i] = probe_video(paths[i])
        except VideoError as err:
            results[i] = err
    return results  # type: ignore[return-value]


# --- decoding ---------------------------------------------------------------------------------


def _arithmetic_runs(frames: np.ndarray) -> list[tuple[int, int, int]]:
    """Sorted unique frame numbers as (first, last, step) runs, greedily."""
    runs: list[tuple[int, int, int]] = []
    i, n = 0, len(frames)
    while i < n:
        first = int(frames[i])
        if i + 1 == n:
            runs.append((first, first, 1))
            break
        step = int(frames[i + 1]) - first
        j = i + 1
        while j + 1 < n and int(frames[j + 1]) - int(frames[j]) == step:
            j += 1
        runs.append((first, int(frames[j]), step))
        i = j + 1
    return runs


def select_expression(frame_numbers: Sequence[int]) -> str:
    """An ffmpeg `select` expression true exactly on `frame_numbers` (sorted, unique).

    The numbers become arithmetic runs (stride sampling is one run, uniform sampling a few
    hundred short ones) arranged as a binary search on `n`, so each decoded frame costs a
    handful of comparisons however many frames are wanted.
    """
    frames = np.asarray(frame_numbers, dtype=np.int64)
    if frames.ndim != 1 or len(frames) == 0 or np.any(np.diff(frames) <= 0) or frames[0] < 0:
        raise ValueError("frame numbers must be a non-empty, strictly increasing sequence of non-negative ints")
    runs = _arithmetic_runs(frames)

    def leaf(first: int, last: int, step: int) -> str:
        if first == last:
            return f"eq(n,{first})"
        if step == 1:
            return f"between(n,{first},{last})"
        return f"between(n,{first},{last})*not(mod(n-{first},{step}))"

    def tree(lo: int, hi: int) -> str:
        if hi - lo == 1:
            return leaf(*runs[lo])
        mid = (lo + hi) // 2
        return f"if(lt(n,{runs[mid][0]}),{tree(lo, mid)},{tree(mid, hi)})"

    expression = tree(0, len(runs))
    if len(expression) > _MAX_SELECT_CHARS:
        raise ValueError(f"{len(frames)} scattered frame numbers make a select expression too long "
                         f"for ffmpeg's command line")
    return expression


def scale_filters(size: int, crop: CropRegion | None = None) -> list[tuple[str, dict]]:
    """The filters after `select`: optional crop, then bicubic scaling to size x size.

    Scaling stays in YUV 4:2:0 and the RGB conversion happens at the stored size: as sharp as
    converting while scaling (measured against a 4:4:4 reference) and a third cheaper.
    """
    filters: list[tuple[str, dict]] = []
    if crop is not None:
        filters.append(("crop", {"w": crop.width, "h": crop.height, "x": crop.x, "y": crop.y, "exact": 1}))
    filters.append(("scale", {"w": size, "h": size, "flags": SCALE_FLAGS}))
    filters.append(("format", {"pix_fmts": "yuv420p"}))
    return filters


def scale_filter_chain(size: int, crop: CropRegion | None = None) -> str:
    """scale_filters as an ffmpeg -vf string (for reference decodes in tests and benchmarks)."""
    return ",".join(name + "=" + ":".join(f"{k}={v}" for k, v in options.items())
                    for name, options in scale_filters(size, crop))


def decode_command(path: os.PathLike | str, frame_numbers: Sequence[int], *, size: int, crop: CropRegion | None = None,
                   threads: int = 0) -> list[str]:
    """The ffmpeg command that writes the selected frames, scaled to size x size RGB, to stdout.

    `threads`: decoder and filter threads, 0 = ffmpeg's choice (about one per core); 1 when
    other workers already keep every core busy: threads that wait on each other only add cost
    (measured on the embedded default: a quarter less CPU, most of it system time).
    """
    source = ffmpeg.input(str(path), threads=threads) if threads else ffmpeg.input(str(path))
    stream = source.video.filter("select", select_expression(frame_numbers))
    for name, options in scale_filters(size, crop):
        stream = stream.filter(name, **options)
    output = stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    thread_args = ["-filter_complex_threads", str(threads)] if threads else []
    return [find_ffmpeg(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "verbose", *thread_args, *output.get_args()]


def _widen_pipe(fd: int, frame_bytes: int) -> None:
    """Let the pipe hold a few frames (Linux; default 64 KiB): fewer wake-ups between ffmpeg and us."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), min(1 << 20, max(1 << 16, 4 * frame_bytes)))
    except (ImportError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default works, only slower


@dataclass
class DecodedFrames:
    frames_uint8: np.ndarray  # (M, size, size, 3): frame i is source frame frame_numbers[i]
    frame_numbers: np.ndarray  # (M,) the source frame numbers that came out, sorted
    decoded_count: int  # frames the decoder produced in all (the video's true length)
    decode_errors: int


def _read_frame(stdout, frame_view: memoryview) -> bool:
    """Fill one frame from ffmpeg's stdout; False at the end of the stream (a partial frame means
    ffmpeg died mid-write)."""
    got, size = 0, len(frame_view)
    while got < size:
        chunk = stdout.readinto(frame_view[got:])
        if not chunk:
            return False
        got += chunk
    return True


def _decode_result(path: Path, returncode: int, stderr: str, extra: bytes, wanted: int) -> tuple[int, int]:
    """(frames decoded, decode errors) from a finished run; VideoError when ffmpeg failed."""
    decoded = _DECODED_RE.search(stderr)
    if returncode != 0 or decoded is None:
        raise VideoError(f"{path}: ffmpeg failed to decode it (exit {returncode}): {_last_error_line(stderr)}")
    if extra:
        raise VideoError(f"{path}: ffmpeg returned more frames than the {wanted} selected; please report this")
    errors = re.search(r"frames decoded; (\d+) decode errors", stderr)
    return int(decoded.group(1)), int(errors.group(1)) if errors else 0


class _SelectedFrames:
    """One ffmpeg run writing the selected frames to a pipe; stderr goes to a file (a pipe could
    fill up and stall ffmpeg while we read stdout). Use as a context manager."""

    def __init__(self, path: Path, wanted: np.ndarray, size: int, crop: CropRegion | None, threads: int) -> None:
        self.path, self.wanted, self.frame_bytes = path, wanted, size * size * 3
        self._command = decode_command(path, wanted, size=size, crop=crop, threads=threads)

    def __enter__(self) -> "_SelectedFrames":
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self._command, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        _widen_pipe(self.process.stdout.fileno(), self.frame_bytes)
        return self

    def read_into(self, frame: np.ndarray) -> bool:
        return _read_frame(self.process.stdout, memoryview(frame).cast("B"))

    def finish(self, timeout_s: float | None) -> tuple[int, int]:
        """Wait for ffmpeg: (frames decoded, decode errors), or VideoError."""
        extra = self.process.stdout.read(self.frame_bytes)  # must be empty: select passes nothing else
        returncode = self.process.wait(timeout=timeout_s)
        self._stderr.seek(0)
        stderr = self._stderr.read().decode("utf-8", errors="replace")
        return _decode_result(self.path, returncode, stderr, extra, len(self.wanted))

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


def decode_selected(
    path: os.PathLike | str, frame_numbers: Sequence[int], *, size: int, crop: CropRegion | None = None,
    threads: int = 0, timeout_s: float | None = None,
) -> DecodedFrames:
    """Decode the video once and keep only `frame_numbers` (sorted, unique), scaled to size x size.

    If the video ends before some of the wanted frames, the result holds fewer frames than
    asked (the caller compares `frame_numbers` and `decoded_count` and decides); a video
    ffmpeg cannot decode at all raises VideoError.
    """
    path = Path(path)
    wanted = np.asarray(frame_numbers, dtype=np.int64)
    frames = np.empty((len(wanted), size, size, 3), dtype=np.uint8)
    received = 0
    with _SelectedFrames(path, wanted, size, crop, threads) as run:
        while received < len(wanted) and run.read_into(frames[received]):
            received += 1
        decoded_count, decode_errors = run.finish(timeout_s)
    return DecodedFrames(
        frames_uint8=frames[:received],
        frame_numbers=wanted[:received],
        decoded_count=decoded_count,
        decode_errors=decode_errors,
    )


def stream_selected(
    path: os.PathLike | str, frame_numbers: Sequence[int], *, size: int, batch_frames: int,
    crop: CropRegion | None = None, threads: int = 0, timeout_s: float | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """decode_selected in batches: yields (frame numbers, (n, size, size, 3) uint8 frames) of at most
    `batch_frames` frames as ffmpeg delivers them, so memory holds one batch however long the video.
    Ends early (fewer frames) if the video does; VideoError, after the frames that came, if ffmpeg failed."""
    path = Path(path)
    wanted = np.asarray(frame_numbers, dtype=np.int64)
    with _SelectedFrames(path, wanted, size, crop, threads) as run:
        received = 0
        while received < len(wanted):
            batch = np.empty((min(batch_frames, len(wanted) - received), size, size, 3), dtype=np.uint8)
            filled = 0
            while filled < len(batch) and run.read_into(batch[filled]):
                filled += 1
            if filled:
                yield wanted[received:received + filled], batch[:filled]
            received += filled
            if filled < len(batch):
                break
        run.finish(timeout_s)


def bare_decode_command(path: os.PathLike | str) -> list[str]:
    """`ffmpeg -i VIDEO -f null -`: the reference decode that stage 1's speed is measured against."""
    return [find_ffmpeg(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-i", str(path), "-f", "null", "-"]
