"""Fault injection: every way a run can be stopped ends in a clear message and a state from which
the next command continues with nothing lost (docs/RELIABILITY.md lists each fault and its test).

* stage 1 (`fgclip-vad frames`, real subprocesses on the real clips): kill -9 at seeded random
  points, a full disk (RLIMIT_FSIZE; a real tmpfs, as root or in a user namespace), a second run on the same
  directory; the final rerun writes exactly the shards of an uninterrupted run;
* stage 2 (`fgclip-vad train`, the real CLI in forked processes, so each start costs no
  interpreter and torch import): kill -9 during a step and during a checkpoint write, a full
  disk at a checkpoint, SIGINT and SIGTERM, a second trainer on the same directory; resuming
  gives the loss trajectory and final weights of an uninterrupted run;
* damaged shards (flipped bytes in any dataset, truncated files): named by shard and record when
  read, by the loader (stop or --skip-damaged) and by evaluation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import h5py
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from fgclip.run_dir import CHECKPOINT_PREFIX, TMP_PREFIX, list_checkpoints, resolve_resume
from fgclip.cli import main as cli
from fgclip.train.loader import LoaderError, ShardLoader
from fgclip.models.clip_video import FGCLIPVideo
from fgclip.train.presets import resolve_config
from fgclip.models.text import load_tokenizer
from fgclip.train.loop import Trainer, TrainingError
from pipeline.run_lock import LOCK_FILE_NAME, LockHolder
from pipeline.shards import ShardFormatError, ShardReader, list_shards, read_manifest
from shard_checks import assert_same_shard_dirs
from train_data import write_square_shards

FGCLIP = str(Path(sys.executable).parent / "fgclip-vad")
CLIPS = {  # the real clips, under UCF-Crime-like names
    "Arrest/Arrest901_x264.avi": "megamind_xvid.avi",  # 270 frames
    "Abuse/Abuse901_x264.mp4": "vtest_campus_cctv.mp4",  # 795 frames
    "Training_Normal_Videos_Anomaly/Normal_Videos901_x264.mp4": "car_traffic.mp4",  # 917 frames
}
FILM, VTEST, CAR = list(CLIPS)


def limit_file_size(max_bytes: int):
    """preexec_fn: no file of the process may grow past `max_bytes` (a full disk, without root).

    SIGXFSZ is ignored, so the write fails with EFBIG the way a full disk fails with ENOSPC."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return apply


def one_line_error(output: str) -> str:
    """The CLI's message for an expected failure: one `Error:` line, no traceback."""
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


def check_readable(shard_dir: Path, *, killed: bool = False) -> dict[str, list[int]]:
    """Every shard file of `shard_dir` reads completely (checksums pass) and the manifest lists
    only such files. A temp file (`*.h5.tmp`) may remain only after a kill -9, unlisted.
    Returns {shard file: record indices} of the listed shards."""
    manifest = read_manifest(shard_dir)
    assert killed or not list(shard_dir.glob("*.tmp"))
    for path in shard_dir.glob("shard-*.h5"):  # listed or not yet listed: a complete file either way
        with ShardReader(path) as reader:
            for i in range(reader.num_records):
                reader.read_record(i)
    listed = {entry["file"]: entry["records"] for entry in manifest["shards"]}
    assert all((shard_dir / name).is_file() for name in listed)
    indices = [i for records in listed.values() for i in records]
    assert len(indices) == len(set(indices))
    return listed


# --- stage 1 --------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip_root(link_real_clips, tmp_path_factory) -> Path:
    return link_real_clips(tmp_path_factory.mktemp("clips"), CLIPS)


@pytest.fixture(scope="module")
def frames_job(clip_root, shared_data, tmp_path_factory):
    """Eight records over the three clips, one record per shard, T = 4 and 8: sixteen shards, all
    written in the time of three short decodes. Returns the command for an output root."""
    folder = tmp_path_factory.mktemp("frames_job")
    annotations = folder / "train.json"
    box = [0.1, 0.2, 0.5, 0.7]
    annotations.write_text(json.dumps([
        {"video": video, "global_caption": f"caption {i}", "region_captions": ["a person"],
         "box_infos": [[{"frame": 20 + 10 * i, "bbox": box}]], "timestamps": window}
        for i, (video, window) in enumerate([(FILM, [0.0, 5.0]), (VTEST, [10.0, 40.0]), (CAR, [1.0, 12.0]),
                                             (FILM, [5.0, 11.0]), (VTEST, None), (CAR, [12.0, 30.0]),
                                             (FILM, [2.0, 4.0]), (CAR, [5.0, 9.0])])
    ]))

    def command(out: Path, workers: int = 2) -> list[str]:
        return [FGCLIP, "frames", str(annotations), "--video-root", str(clip_root), "--out", str(out),
                "-t", "4", "-t", "8", "--size", "32", "--records-per-shard", "1", "--workers", str(workers),
                "--test-split", str(shared_data / "ucf" / "Anomaly_Test.txt")]

    return command


def listed_shards(*shard_dirs: Path) -> int:
    total = 0
    for shard_dir in shard_dirs:
        with contextlib.suppress(OSError, ValueError):
            total += len(json.loads((shard_dir / "manifest.json").read_text())["shards"])
    return total


def test_frames_survives_kills_a_second_run_and_a_full_disk(frames_job, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run(frames_job(reference), check=True, env=env, capture_output=True)
    t4, t8 = out / "train_t4", out / "train_t8"

    # 1. kill -9 at seeded random points of three runs, each cut 1-2 shards further on plus up to
    #    20 ms (mid-decode, mid-write or between a shard and its manifest entry); a second run on
    #    the same directory, while the first works, is refused and names it.
    done = 0
    for seed in (0, 1, 2):
        rng = random.Random(seed)
        target, extra_s = done + rng.randint(1, 2), rng.uniform(0.0, 0.02)
        process = subprocess.Popen(frames_job(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if seed == 0:
            holder = None
            while holder is None and process.poll() is None:
                with contextlib.suppress(OSError):
                    holder = LockHolder.parse((t4 / LOCK_FILE_NAME).read_text())
            assert holder is not None and holder.pid == process.pid
            second = CliRunner().invoke(cli, frames_job(out)[1:])
            assert second.exit_code == 1
            refusal = one_line_error(second.output)
            assert f"pid {process.pid} on host" in refusal and "in use by another run of `fgclip-vad frames`" in refusal
        while listed_shards(t4, t8) < target and process.poll() is None:
            time.sleep(0.001)
        time.sleep(extra_s)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL  # cut off, not finished
        done = sum(len(check_readable(shard_dir, killed=True)) for shard_dir in (t4, t8))
        assert done >= target
    assert done < 16

    # 2. A full disk (a 1-record T=4 shard fits under the limit, a T=8 one does not): one line,
    #    exit 1, the shards written before complete and listed, no temp file.
    small = max(p.stat().st_size for p in (reference / "train_t4").glob("*.h5"))
    large = min(p.stat().st_size for p in (reference / "train_t8").glob("*.h5"))
    assert small < large
    for workers in (1, 2):  # with workers, frames travel through a spool file: it cannot be written either
        full = subprocess.run(frames_job(out, workers=workers), env=env, capture_output=True, text=True,
                              preexec_fn=limit_file_size((small + large) // 2))
        assert full.returncode == 1
        message = one_line_error(full.stdout + full.stderr)
        assert ": cannot write it: the disk is full" in message and "rerun the same command" in message
        assert sum(len(check_readable(shard_dir)) for shard_dir in (t4, t8)) >= done

    # 3. The rerun completes: exactly the shards of the uninterrupted run, whatever was cut.
    final = subprocess.run(frames_job(out), env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    for name in ("train_t4", "train_t8"):
        assert_same_shard_dirs(reference / name, out / name)
        assert not list((out / name).glob("*.tmp")) and not (out / name / ".spool").exists()


def test_frames_on_a_really_full_tmpfs(frames_job, tmp_path):
    """ENOSPC from a real 1 MiB tmpfs. Mounting needs root; without it the test reruns itself in a
    user namespace where this process is root (`unshare -rm`), so it never silently does nothing."""
    if os.geteuid() != 0:
        inner = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-m", "pytest",
                                "-q", "-p", "no:cacheprovider", f"{__file__}::test_frames_on_a_really_full_tmpfs"],
                               capture_output=True, text=True)
        assert inner.returncode == 0, inner.stdout[-3000:] + inner.stderr[-3000:]
        return
    mount = tmp_path / "small_disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr}"
    try:
        filler = mount / "filler"
        filler.write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))  # 64 KiB left: a few small shards
        full = subprocess.run(frames_job(mount / "out"), capture_output=True, text=True)
        assert full.returncode == 1 and "the disk is full" in one_line_error(full.stdout + full.stderr)
        for name in ("train_t4", "train_t8"):
            check_readable(mount / "out" / name)
        filler.unlink()  # space freed: the same command completes
        again = subprocess.run(frames_job(mount / "out"), capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert sum(len(check_readable(mount / "out" / name)) for name in ("train_t4", "train_t8")) == 16
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# --- stage 2 --------------------------------------------------------------------------------------

TOTAL_STEPS = 8  # 8 records, batch 2, accumulation 2: 2 steps per epoch, 4 epochs
METRIC_KEYS = ("loss", "loss_global", "loss_region", "loss_hard", "grad_norm", "lr", "text_lr")


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory):
    return write_square_shards(tmp_path_factory.mktemp("train_shards"), num_records=8, num_frames=8)


def train_args(shards: Path, model: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "demo", "--shards", str(shards), "--model", str(model), "--output-dir", str(output_dir),
            "--num-frames", "4", "--batch-size", "2", "--grad-accum", "2", "--epochs", "4", "--lr", "2e-3",
            "--text-lr", "2e-3", "--workers", "1", "--save-every", "2", "--keep-last", "2", "--cpu-threads", "1",
            "--no-progress", *extra]


def start_cli(args: list[str], log: Path, *, max_file_bytes: int | None = None) -> int:
    """The real `fgclip-vad` CLI in a forked child (torch and transformers already imported);
    its stdout and stderr go to `log`. Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
        logging.root.handlers.clear()  # pytest's capture handlers: the CLI sets up its own
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if max_file_bytes is not None:
            limit_file_size(max_file_bytes)()
        cli.main(args, prog_name="fgclip-vad")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - an escaped exception is a test failure: show it
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def wait_for(pid: int, timeout_s: float = 120.0) -> int:
    """The child's exit code (negative: killed by that signal)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish in {timeout_s} s")


def run_cli(args: list[str], log: Path, **kwargs) -> tuple[int, str]:
    code = wait_for(start_cli(args, log, **kwargs))
    return code, log.read_text()


def logged_steps(output_dir: Path) -> list[int]:
    steps = []
    with contextlib.suppress(OSError):
        for line in (output_dir / "metrics.jsonl").read_text().splitlines():
            with contextlib.suppress(ValueError):
                steps.append(json.loads(line)["step"])
    return steps


def steps_of_this_run(output_dir: Path, resumes_before: int) -> list[int]:
    """Steps trainer_log.txt shows after resume number `resumes_before + 1` (metrics.jsonl still
    holds the steps of the killed runs until the new run truncates it)."""
    with contextlib.suppress(OSError):
        lines = (output_dir / "trainer_log.txt").read_text().splitlines()
        resumes = [i for i, line in enumerate(lines) if "resumed from" in line]
        if len(resumes) > resumes_before:
            return [int(line.split()[1].split("/")[0]) for line in lines[resumes[-1]:] if line.startswith("step ")]
    return []


def resume_count(output_dir: Path) -> int:
    return (output_dir / "trainer_log.txt").read_text().count("resumed from")


def wait_until(condition, pid: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert os.waitpid(pid, os.WNOHANG)[0] == 0, "the run ended before the fault could be injected"
        assert time.monotonic() < deadline, "timed out waiting to inject the fault"
        time.sleep(0.0005)


def assert_resumable(output_dir: Path) -> Path:
    """Every listed checkpoint loads; `--resume auto` picks the newest; no temp dir counts."""
    checkpoints = list_checkpoints(output_dir)
    assert checkpoints and all(not p.name.startswith(TMP_PREFIX) for p in checkpoints)
    for checkpoint in checkpoints:
        FGCLIPVideo.from_pretrained(checkpoint)
        torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    assert resolve_resume("auto", output_dir) == checkpoints[-1]
    return checkpoints[-1]


def test_training_survives_kills_a_full_disk_signals_and_a_second_trainer(train_shards, model_dir, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "out"
    code, log = run_cli(train_args(train_shards, model_dir, reference), tmp_path / "reference.log")
    assert code == 0, log
    args = train_args(train_shards, model_dir, out)
    rng = random.Random(7)

    # 1. kill -9 during a step (step 4, after checkpoint-2); meanwhile a second trainer on the
    #    same directory is refused, naming the first (library and CLI).
    first = start_cli(args, tmp_path / "a.log")
    wait_until(lambda: 1 in logged_steps(out), first)
    with pytest.raises(TrainingError, match=rf"in use by another run of `fgclip-vad train` \(pid {first} on host"):
        Trainer(resolve_config("demo", {"shards": str(train_shards), "model": str(model_dir), "output_dir": str(out)}))
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 1 and f"pid {first} on host" in one_line_error(second.output)
    wait_until(lambda: 3 in logged_steps(out), first)
    time.sleep(rng.uniform(0.0, 0.01))
    os.kill(first, signal.SIGKILL)
    assert wait_for(first) == -signal.SIGKILL
    assert assert_resumable(out).name == f"{CHECKPOINT_PREFIX}2"

    # 2. kill -9 while checkpoint-4 is being written (frozen with SIGSTOP the moment its temporary
    #    directory appears): the half-written checkpoint is ignored, resuming starts at checkpoint-2.
    writer = start_cli([*args, "--resume", "auto"], tmp_path / "b.log")
    partial: list[Path] = []
    wait_until(lambda: partial.extend(out.glob(f"{TMP_PREFIX}{CHECKPOINT_PREFIX}4-*")) or partial, writer)
    os.kill(writer, signal.SIGSTOP)
    assert not (out / f"{CHECKPOINT_PREFIX}4").exists()  # caught before the rename
    os.kill(writer, signal.SIGKILL)
    assert wait_for(writer) == -signal.SIGKILL
    assert partial[0].is_dir() and assert_resumable(out).name == f"{CHECKPOINT_PREFIX}2"
    assert "taking over the lock of a run that is no longer running" in (tmp_path / "b.log").read_text()

    # 3. The disk fills up while checkpoint-4 is written (the trainer state does not fit): one
    #    line, exit 1, checkpoint-2 intact, no temporary directory left.
    sizes = [p.stat().st_size for p in (reference / "final").iterdir()]
    state_size = (reference / f"{CHECKPOINT_PREFIX}8" / "trainer_state.pt").stat().st_size
    code, log = run_cli([*args, "--resume", "auto"], tmp_path / "c.log", max_file_bytes=(max(sizes) + state_size) // 2)
    assert code == 1
    message = one_line_error(log)
    assert f"{CHECKPOINT_PREFIX}4: writing the checkpoint failed" in message and "--resume auto" in message
    assert assert_resumable(out).name == f"{CHECKPOINT_PREFIX}2"
    assert not [p for p in out.iterdir() if p.name.startswith(f"{TMP_PREFIX}{CHECKPOINT_PREFIX}4-") and p != partial[0]]

    # 4. SIGINT, then SIGTERM, during a step: the step finishes, a checkpoint is written, the run
    #    exits with 128 + the signal and says how to continue.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        resumed_at = int(assert_resumable(out).name[len(CHECKPOINT_PREFIX):])
        resumes = resume_count(out)
        stopping = start_cli([*args, "--resume", "auto"], tmp_path / f"{stop_signal.name}.log")
        wait_until(lambda: resumed_at + 1 in steps_of_this_run(out, resumes), stopping)
        os.kill(stopping, stop_signal)
        assert wait_for(stopping) == 128 + stop_signal
        stopped_at = max(logged_steps(out))
        assert resumed_at < stopped_at < TOTAL_STEPS
        assert assert_resumable(out).name == f"{CHECKPOINT_PREFIX}{stopped_at}"
        assert (f"stopped by signal {stop_signal.name}: {stopped_at}/{TOTAL_STEPS} steps"
                in (tmp_path / f"{stop_signal.name}.log").read_text())

    # 5. The last resume completes: the loss trajectory and the final weights are the uninterrupted
    #    run's (a metrics line torn by a kill mid-write is dropped, not fatal).
    with open(out / "metrics.jsonl", "a") as metrics:
        metrics.write('{"step": 99, "loss": 0.5, "lo')
    code, log = run_cli([*args, "--resume", "auto"], tmp_path / "final.log")
    assert code == 0 and f"training complete: {TOTAL_STEPS} steps" in log, log
    expected = {m["step"]: [m[k] for k in METRIC_KEYS] for m in map(json.loads, (reference / "metrics.jsonl").open())}
    got = {m["step"]: [m[k] for k in METRIC_KEYS] for m in map(json.loads, (out / "metrics.jsonl").open())}
    assert list(got) == list(range(1, TOTAL_STEPS + 1)) and got == expected
    for name in ("model.safetensors", "fgclip_video.safetensors"):
        a, b = load_file(str(reference / "final" / name)), load_file(str(out / "final" / name))
        assert all(torch.equal(a[key], b[key]) for key in a), name


# --- damaged shards -------------------------------------------------------------------------------


def flip_bytes(path: Path, offset: int, count: int = 8) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        data = handle.read(count)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in data))


def chunk_offset(path: Path, dataset: str, chunk: int) -> int:
    with h5py.File(path, "r") as f:
        return f[dataset].id.get_chunk_info(chunk).byte_offset


def damage(path: Path, how: str) -> None:
    """Damage record 1 of a shard on disk: its frames, its boxes or its caption; or cut the file."""
    if how in ("frames", "boxes"):
        flip_bytes(path, chunk_offset(path, how, 1) + 40)
    elif how == "caption":  # the string heap, one letter for another: only the per-record digest sees this
        offset = path.read_bytes().index(b"green square moves")
        with open(path, "r+b") as handle:
            handle.seek(offset)
            handle.write(b"f")
    elif how == "caption-bytes":  # the string heap, bytes that are no longer UTF-8
        flip_bytes(path, path.read_bytes().index(b"green square moves") + 2, 1)
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("how", ["frames", "boxes", "caption", "caption-bytes", "truncated"])
def test_damaged_shard_is_named_and_stops_or_is_skipped(how, model_dir, tmp_path, caplog):
    shards = write_square_shards(tmp_path / "shards", num_records=6, num_frames=4, records_per_shard=3)
    damaged = list_shards(shards)[0]
    damage(damaged, how)
    lost = {0, 1, 2} if how == "truncated" else {1}  # record_index 1 is record 1 of shard 0

    # read directly: a ShardFormatError naming the file (and the record, where one is at fault)
    with pytest.raises(ShardFormatError) as info:
        with ShardReader(damaged) as reader:
            for i in range(reader.num_records):
                reader.read_record(i)
    assert str(damaged) in str(info.value) and "fgclip-vad frames" in str(info.value)
    if how != "truncated":
        assert "record 1 " in str(info.value)

    # the loader stops, naming it ...
    model = FGCLIPVideo.from_pretrained(model_dir)
    options = dict(model=model, tokenizer=load_tokenizer(model_dir), batch_size=1, num_frames=4, device="cpu", seed=0)
    with pytest.raises((LoaderError, ShardFormatError)) as info:
        with ShardLoader(shards, num_workers=1, **options) as loader:
            list(loader)
    assert str(damaged) in str(info.value) and "\n" not in str(info.value)
    # ... or with --skip-damaged trains on without it, saying so (worker processes or none)
    for workers in (1, 0):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fgclip.train.loader"):
            with ShardLoader(shards, num_workers=workers, skip_damaged=True, **options) as loader:
                seen = {i for batch in loader for i in batch["record_index"].tolist()}
        assert seen == set(range(6)) - lost, workers
        assert any("--skip-damaged" in r.getMessage() and str(damaged) in r.getMessage() for r in caplog.records)

    # the trainer's command line: one line, exit 1
    result = CliRunner().invoke(cli, ["train", "--preset", "demo", "--shards", str(shards), "--model", str(model_dir),
                                      "--output-dir", str(tmp_path / "run"), "--num-frames", "4", "--batch-size", "1",
                                      "--grad-accum", "1", "--epochs", "1", "--workers", "1", "--no-progress"])
    assert result.exit_code == 1 and str(damaged) in one_line_error(result.output)


def test_damaged_manifest_is_named(model_dir, tmp_path):
    shards = write_square_shards(tmp_path / "shards", num_records=4, num_frames=4)
    manifest = shards / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])  # cut short, e.g. by a disk that filled up before this version fsync'ed it
    result = CliRunner().invoke(cli, ["train", "--preset", "demo", "--shards", str(shards), "--model", str(model_dir),
                                      "--output-dir", str(tmp_path / "run"), "--num-frames", "4", "--no-progress"])
    assert result.exit_code == 1
    assert f"{manifest}: damaged, not a manifest" in one_line_error(result.output)


@pytest.mark.parametrize("readers", [2, 0])
def test_evaluation_names_a_damaged_test_shard(readers, model_dir, tmp_path):
    from test_evaluate import ANNOTATIONS, write_test_shards

    shard_dir = tmp_path / "test_shards"
    shard_dir.mkdir()
    write_test_shards(shard_dir)
    damaged = list_shards(shard_dir)[1]  # RoadAccidents021 is record 1 of shard 0; shard 1: Normal_Videos_872 first
    flip_bytes(damaged, chunk_offset(damaged, "frames", 0) + 100)
    (tmp_path / "gt.txt").write_text(ANNOTATIONS)
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(model_dir), "--no-baseline", "--test-shards",
                                      str(shard_dir), "--annotations", str(tmp_path / "gt.txt"), "--out",
                                      str(tmp_path / "report"), "--readers", str(readers), "--quiet", "--no-video-plots",
                                      "--device", "cpu"])
    assert result.exit_code == 1
    message = one_line_error(result.output)
    assert str(damaged) in message and "Normal_Videos_872" in message and "fgclip-vad frames" in message
