"""Each contract has one owner: evaluation stands apart from training, docstrings point to real files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Training's side: the loop, the checkpoint writer, the loader and what only they use.
TRAINING_MODULES = ("fgclip.train.loop", "fgclip.train.checkpoint", "fgclip.train.loader", "fgclip.train.grad_cache", "fgclip.train.log",
                    "fgclip.train.losses", "fgclip.train.augment")


def test_evaluation_imports_nothing_of_training():
    """Everything evaluation runs (the scoring, the report, the model, the run directory's layout)
    is imported in a fresh interpreter; none of training's modules may come with it."""
    code = (
        "import json, sys\n"
        "import fgclip.eval.evaluate, fgclip.eval.report, fgclip.models.clip_video, fgclip.run_dir\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('fgclip', 'pipeline')))))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "fgclip.eval.evaluate" in loaded and "fgclip.run_dir" in loaded
    assert loaded.isdisjoint(TRAINING_MODULES), sorted(loaded & set(TRAINING_MODULES))


def test_docstrings_point_only_to_files_in_the_repository():
    """Every document named in the code (`NAME.md`, `docs/NAME.md`) exists in the repository;
    `report.md` is a file evaluation writes, not a document."""
    named = re.compile(r"\b([\w/-]+\.md)\b")
    missing = []
    for folder in ("fgclip", "pipeline"):
        for path in sorted((REPO_ROOT / folder).glob("*.py")):
            for name in set(named.findall(path.read_text(encoding="utf-8"))) - {"report.md"}:
                if not any((base / name).is_file() for base in (REPO_ROOT, REPO_ROOT / "docs")):
                    missing.append(f"{path.relative_to(REPO_ROOT)}: {name}")
    assert not missing, missing


def test_one_step_record_feeds_the_text_log_metrics_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fgclip.train.log import STEP_FIELDS, TrainLog

    record = {"step": 3, "total_steps": 10, "epoch": 0.5, "loss": 2.5, "loss_global": 2.0, "loss_region": 1.0,
              "loss_hard": 0.5, "lr": 1e-5, "text_lr": 5e-6, "grad_norm": 0.75, "frames_per_s": 120.0,
              "data_wait_share": 0.02, "skipped_steps": 1, "nonfinite": False, "eta_s": 3725.0,
              "temperatures": {"global": 14.0}}
    log = TrainLog(tmp_path)
    line = log.step(record)
    log.close()
    assert line == ("step 3/10 | epoch 0.50 | loss 2.5000 | global 2.0000 | region 1.0000 | hard 0.5000 | lr 1.000e-05 "
                    "| text_lr 5.000e-06 | grad_norm 0.7500 | frames/s 120.0 | data_wait 2.0% | skipped 1 | eta 1:02:05")
    assert (tmp_path / "trainer_log.txt").read_text() == line + "\n"
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == record
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    scalars = {f"train/{f.key}" for f in STEP_FIELDS if f.scalar and f.key in record} | {"temperature/global"}
    assert set(events.Tags()["scalars"]) == scalars
    assert events.Scalars("train/grad_norm")[0].value == 0.75 and events.Scalars("train/grad_norm")[0].step == 3

    with pytest.raises(ValueError, match="unknown keys \\['speed'\\]"):
        TrainLog(tmp_path / "again", tensorboard=False).step({**record, "speed": 1.0})
