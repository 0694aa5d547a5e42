"""Stage 1's speed bar, measured: the embedded default vs a bare ffmpeg decode of the same videos.

`fgclip-vad frames --benchmark` (or `make bench-frames`) times, in one run on one machine:

* bare decode, the bar: `ffmpeg -i VIDEO -f null -` for every video the embedded default
  uses (training and test), one after another (ffmpeg's own threads use all cores);
* bare decode, parallel: the same commands, `workers` at a time, as stage 1 runs its workers
  (a stricter reference, reported alongside);
* stage 1: the command `fgclip-vad frames` (what `make frames` runs) into a fresh temporary
  data root: interpreter start-up, validation, probing, one decode per video for all T, test
  shards, HDF5 writes, manifests.

The three alternate over `repeats` rounds so load changes on a shared machine hit all of
them; medians are compared. The bar (DESIGN / docs/PERFORMANCE.md): stage 1 <= 1.5 x bare.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline import embedded
from pipeline.annotations import read_split_list
from pipeline.decode import bare_decode_command, find_ffmpeg
from pipeline.frames import default_workers, ensure_embedded_dataset

SPEED_BAR = 1.5  # stage 1 may take at most this many times the bare decode


def embedded_videos() -> list[Path]:
    """Every distinct video file the embedded default's stage 1 decodes."""
    import json

    records = json.loads(embedded.TRAIN_JSON.read_text(encoding="utf-8"))
    paths = [embedded.VIDEO_ROOT / r["video"] for r in records]
    paths += [embedded.TEST_VIDEO_ROOT / entry.path for entry in read_split_list(embedded.TEST_LIST)]
    return list(dict.fromkeys(paths))


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (ffmpeg runs, stage 1's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of run()."""
    wall, cpu = time.perf_counter(), _cpu_s()
    run()
    return time.perf_counter() - wall, _cpu_s() - cpu


def _bare_decode(videos: list[Path], parallel: int) -> None:
    def decode(video: Path) -> None:
        subprocess.run(bare_decode_command(video), check=True, stdout=subprocess.DEVNULL)

    if parallel <= 1:
        for video in videos:
            decode(video)
    else:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(decode, videos))


def _stage1(workers: int, scratch: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of the user's command, `fgclip-vad frames`, in a fresh data root.

    The data root holds a link to the generated dataset, so the run decodes everything and
    writes fresh shards (deleted afterwards, untimed). Interpreter start-up and imports count.
    """
    data_root = Path(tempfile.mkdtemp(prefix="stage1-", dir=scratch))
    try:
        (data_root / embedded.SYNTH_DIR.name).symlink_to(embedded.SYNTH_DIR.resolve(), target_is_directory=True)
        env = {**os.environ, "FGCLIP_DATA_ROOT": str(data_root)}
        command = [sys.executable, "-m", "fgclip.cli", "frames", "--workers", str(workers)]
        return _timed(lambda: subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL))
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def benchmark_stage1(*, repeats: int = 3, workers: int | None = None, scratch: Path | None = None) -> dict:
    """Time stage 1 on the embedded default against bare decodes; returns all figures."""
    ensure_embedded_dataset()  # generated (or regenerated) before any timing
    workers = workers or default_workers()
    videos = embedded_videos()
    scratch = Path(scratch) if scratch else Path(tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rounds = []
    _bare_decode(videos[:1], 1)  # warm the page cache and the binary, untimed
    for _ in range(repeats):
        round_ = {}
        round_["bare_sequential_s"], round_["bare_sequential_cpu_s"] = _timed(lambda: _bare_decode(videos, 1))
        round_["stage1_s"], round_["stage1_cpu_s"] = _stage1(workers, scratch)
        round_["bare_parallel_s"], round_["bare_parallel_cpu_s"] = _timed(lambda: _bare_decode(videos, workers))
        rounds.append(round_)
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.node()}: {_cpu_model()}, {os.cpu_count()} CPUs ({default_workers()} usable), "
                   f"{platform.system()} {platform.release()}",
        "ffmpeg": find_ffmpeg(),
        "videos": len(videos),
        "video_bytes": sum(v.stat().st_size for v in videos),
        "workers": workers,
        "repeats": repeats,
        "rounds": rounds,
        "median": median,
        "ratio_vs_bare_sequential": median["stage1_s"] / median["bare_sequential_s"],
        "ratio_vs_bare_parallel": median["stage1_s"] / median["bare_parallel_s"],
        "bar": SPEED_BAR,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def format_benchmark(result: dict) -> str:
    lines = [
        f"stage 1 benchmark, {result['date']}",
        f"machine: {result['machine']}",
        f"videos:  {result['videos']} ({result['video_bytes'] / 1e6:.1f} MB), workers {result['workers']}, "
        f"{result['repeats']} rounds",
        f"load average before {tuple(round(x, 2) for x in result['load_average_before'])}, "
        f"after {tuple(round(x, 2) for x in result['load_average_after'])}",
        "",
        "  wall seconds (CPU seconds)",
        f"  {'round':>6} {'bare sequential':>16} {'stage 1':>16} {'bare parallel':>16}",
    ]

    def cells(r: dict) -> str:
        return " ".join(f"{r[k + '_s']:>7.2f} ({r[k + '_cpu_s']:>6.2f})"
                        for k in ("bare_sequential", "stage1", "bare_parallel"))

    for i, r in enumerate(result["rounds"]):
        lines.append(f"  {i:>6} {cells(r)}")
    lines.append(f"  {'median':>6} {cells(result['median'])}")
    ratio = result["ratio_vs_bare_sequential"]
    verdict = "PASS" if ratio <= result["bar"] else "FAIL"
    lines += [
        "",
        f"stage 1 / bare decode (sequential): {ratio:.2f}x  (bar {result['bar']}x: {verdict})",
        f"stage 1 / bare decode ({result['workers']} in parallel): {result['ratio_vs_bare_parallel']:.2f}x",
    ]
    return "\n".join(lines)
