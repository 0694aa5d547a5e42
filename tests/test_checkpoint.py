"""Checkpoints: atomic under a kill, last K kept, found again by --resume, RNG states round-trip."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fgclip.train.checkpoint import capture_rng_state, load_trainer_state, restore_rng_state, save_checkpoint
from fgclip.run_dir import STATE_FILE, CheckpointError, latest_checkpoint, list_checkpoints, resolve_resume
from fgclip.models.clip_video import FGCLIPVideo

REPO_ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def model(model_dir):
    return FGCLIPVideo.from_pretrained(model_dir)


def _state(step: int) -> dict:
    return {"step": step, "moments": torch.arange(4.0) * step, "rng": capture_rng_state()}


def test_kill_during_checkpoint_writing_keeps_the_previous_one(tmp_path, model_dir):
    """A process killed (SIGKILL) half-way through writing checkpoint-2 leaves checkpoint-1 whole
    and loadable, and only a temporary directory that resuming ignores."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import io, os, signal, torch
        from fgclip.train.checkpoint import save_checkpoint
        from fgclip.models.clip_video import FGCLIPVideo

        model = FGCLIPVideo.from_pretrained({str(model_dir)!r})
        save_checkpoint({str(out)!r}, 1, model=model, state={{"step": 1, "w": torch.ones(3)}}, config={{"step": 1}}, keep_last=3)

        def die_half_way(obj, path, *args, **kwargs):
            buffer = io.BytesIO()
            torch.serialization.save(obj, buffer)
            data = buffer.getvalue()
            with open(path, "wb") as handle:
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.fsync(handle.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = die_half_way
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)
        save_checkpoint({str(out)!r}, 2, model=model, state={{"step": 2, "w": torch.zeros(3)}}, config={{"step": 2}}, keep_last=3)
        raise SystemExit("not reached")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr[-2000:]

    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers and (out / leftovers[0] / STATE_FILE).is_file()  # the half-written file is there...
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]  # ...but ignored
    assert resolve_resume("auto", out) == out / "checkpoint-1"
    state = load_trainer_state(out / "checkpoint-1")
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    restored = FGCLIPVideo.from_pretrained(out / "checkpoint-1")
    original = FGCLIPVideo.from_pretrained(model_dir)
    clip_weights = [name for name in original.state_dict() if name.startswith("clip.")]
    assert clip_weights
    for name in clip_weights:  # (the extras of a plain CLIP directory are initialised afresh on each load)
        assert torch.equal(restored.state_dict()[name], original.state_dict()[name]), name

    # the next save cleans the leftovers up
    save_checkpoint(out, 3, model=restored, state=_state(3), config={}, keep_last=3)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1", "checkpoint-3"]


def test_keep_last_and_resume_lookup(tmp_path, model):
    out = tmp_path / "run"
    assert resolve_resume("auto", out) is None and latest_checkpoint(out) is None
    for step in (5, 10, 15, 20):
        save_checkpoint(out, step, model=model, state=_state(step), config={"step": step}, keep_last=3)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-10", "checkpoint-15", "checkpoint-20"]
    assert resolve_resume("auto", out) == out / "checkpoint-20"
    assert resolve_resume(str(out / "checkpoint-15"), out) == out / "checkpoint-15"
    assert resolve_resume(str(out), tmp_path / "elsewhere") == out / "checkpoint-20"  # a run dir: its newest
    assert resolve_resume(None, out) is None
    with pytest.raises(CheckpointError, match="checkpoint-99"):
        resolve_resume(str(out / "checkpoint-99"), out)
    # writing a step again (after resuming from an earlier checkpoint) replaces it whole
    save_checkpoint(out, 15, model=model, state=_state(150), config={}, keep_last=3)
    assert load_trainer_state(out / "checkpoint-15")["step"] == 150
    assert (out / "checkpoint-15" / "model.safetensors").is_file()
    # a checkpoint directory is a model directory
    FGCLIPVideo.from_pretrained(out / "checkpoint-20")


def test_rng_states_round_trip():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(state)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(2), expected[2])
