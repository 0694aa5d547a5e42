"""Each contract has one owner: evaluation stands apart from training, docstrings point to real files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Training's side: the loop, the checkpoint writer, the loader and what only they use.
TRAINING_MODULES = ("fgclip.train", "fgclip.checkpoint", "fgclip.loader", "fgclip.grad_cache", "fgclip.train_log",
                    "fgclip.losses", "fgclip.augment")


def test_evaluation_imports_nothing_of_training():
    """Everything evaluation runs (the scoring, the report, the model, the run directory's layout)
    is imported in a fresh interpreter; none of training's modules may come with it."""
    code = (
        "import json, sys\n"
        "import fgclip.evaluate, fgclip.report, fgclip.model, fgclip.run_dir\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('fgclip', 'pipeline')))))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "fgclip.evaluate" in loaded and "fgclip.run_dir" in loaded
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
