"""Training checkpoints: written atomically, the last K kept, found again for `--resume`.

A checkpoint is a directory `checkpoint-STEP/` inside the run's output directory:

    config.json, model.safetensors, fgclip_video.*, tokenizer files
                         the model, as `FGCLIPVideo.save_pretrained` writes it (so a checkpoint
                         directory is also a model directory: evaluation and
                         `FGCLIPVideo.from_pretrained` load it directly)
    trainer_state.pt     optimizer, scheduler, RNG states, data position, counters
    training_config.json the resolved training configuration of the run

It is written under a hidden temporary name, every file fsync'ed, then renamed in one step, so
a directory named `checkpoint-STEP` is always complete; a kill during writing leaves only a
`.tmp-checkpoint-*` directory, which resuming ignores and the next save removes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

CHECKPOINT_PREFIX = "checkpoint-"
TMP_PREFIX = ".tmp-"
FINAL_DIR_NAME = "final"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "training_config.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; the message names it and what to do."""


def checkpoint_dir(output_dir: os.PathLike | str, step: int) -> Path:
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def _step_of(path: Path) -> int | None:
    suffix = path.name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() else None


def is_complete(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / "config.json").is_file()


def list_checkpoints(output_dir: os.PathLike | str) -> list[Path]:
    """Complete `checkpoint-STEP` directories of `output_dir`, oldest step first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(step, p) for p in output_dir.iterdir() if p.is_dir() and (step := _step_of(p)) is not None and is_complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: os.PathLike | str) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume(resume: str | None, output_dir: os.PathLike | str) -> Path | None:
    """`--resume` -> the checkpoint directory to load, or None to start fresh.

    "auto": the newest complete checkpoint of `output_dir` if there is one; a path: that
    checkpoint (or, for a run's output directory, its newest one), which must exist.
    """
    if resume is None or resume == "" or resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if path.is_dir() and not is_complete(path):
        newest = latest_checkpoint(path)
        if newest is not None:
            return newest
    if not path.is_dir() or not is_complete(path):
        raise CheckpointError(
            f"{path}: not a complete checkpoint (a `checkpoint-STEP` directory with {STATE_FILE}); "
            f"pass one, a run's output directory, or --resume auto"
        )
    return path


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(output_dir: Path) -> None:
    """Remove temporary directories left by an interrupted save (never complete checkpoints)."""
    for path in output_dir.glob(f"{TMP_PREFIX}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def write_model_dir(target: Path, model, config: dict, state: dict | None = None) -> Path:
    """Write model (+ trainer state) + config into `target` atomically (temp dir, fsync, rename).

    An existing `target` (e.g. a step written again after resuming from an earlier checkpoint)
    is replaced only once the new one is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{TMP_PREFIX}{target.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
        _fsync_tree(tmp)
        if target.exists():
            old = target.parent / f"{TMP_PREFIX}old-{target.name}-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except (OSError, RuntimeError, SafetensorError) as err:
        # A full disk surfaces as OSError from plain writes, RuntimeError from torch.save and
        # SafetensorError from the weights; the checkpoints written before stay complete.
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"{target}: writing the checkpoint failed ({err}); check free disk space in {target.parent} "
            f"(`fgclip-vad doctor` checks it). The earlier checkpoints are intact: free space, then continue "
            f"with --resume auto"
        ) from err
    return target


def save_checkpoint(output_dir: os.PathLike | str, step: int, *, model, state: dict, config: dict, keep_last: int) -> Path:
    """Write `checkpoint-STEP` atomically, then delete all but the newest `keep_last` ones."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)
    path = write_model_dir(checkpoint_dir(output_dir, step), model, config, state)
    if keep_last > 0:
        for old in list_checkpoints(output_dir)[:-keep_last]:
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
    return path


def load_trainer_state(checkpoint: os.PathLike | str) -> dict:
    path = Path(checkpoint) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: unreadable trainer state ({err}); resume from an earlier checkpoint") from err


def non_finite_tensors(named_tensors) -> list[str]:
    """Names of tensors holding NaN or inf (one host sync for all of them)."""
    names, flags = [], []
    for name, tensor in named_tensors:
        if torch.is_tensor(tensor) and tensor.is_floating_point() and tensor.numel():
            names.append(name)
            flags.append(torch.isfinite(tensor).all())
    if not flags:
        return []
    ok = torch.stack([f.to(flags[0].device) for f in flags]).cpu().tolist()
    return [name for name, fine in zip(names, ok) if not fine]


def optimizer_tensors(optimizer: torch.optim.Optimizer):
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            yield f"optimizer.state[{index}].{key}", value


# --- random number generator states -----------------------------------------------------------


def capture_rng_state() -> dict:
    """Python, numpy, torch CPU and CUDA generator states, as tensors and plain values
    (so the state file loads with torch.load(weights_only=True))."""
    np_state = np.random.get_state()
    state = {
        "python": _python_state_to_plain(random.getstate()),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(_python_state_from_plain(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _python_state_to_plain(state: tuple) -> dict:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _python_state_from_plain(plain: dict) -> tuple:
    return (plain["version"], tuple(int(x) for x in plain["internal"].tolist()), plain["gauss"])
