"""Writing training checkpoints: atomically, the last K kept; and the RNG states they carry.

Where things live in a run's output directory, and finding them again (`--resume`, evaluation),
is `fgclip.run_dir`'s. A checkpoint `checkpoint-STEP/` is a model directory
(`FGCLIPVideo.save_pretrained`) plus `trainer_state.pt` and `run_config.json`.

It is written under a hidden temporary name, every file fsync'ed, then renamed in one step, so
a directory named `checkpoint-STEP` is always complete; a kill during writing leaves only a
`.tmp-checkpoint-*` directory, which resuming ignores and the next save removes.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from fgclip.run_dir import STATE_FILE, TMP_PREFIX, CheckpointError, checkpoint_dir, list_checkpoints, write_run_config


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
        write_run_config(tmp, config)
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
