"""Head rows of an evaluation report: `fgclip-vad eval --head RUN_DIR` scores each head run (every
seed's chosen head, `fgclip.heads`) on its features directory's test list, under both ground-truth
constructions, and puts the rows beside prompt scoring in report.json / report.md / report.html
(`report["heads"]`, drawn by `fgclip.eval.report_content`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from fgclip.features.files import read_features_dir
from fgclip.heads.evaluate import evaluate_head_run, test_features_of
from fgclip.heads.data import HeadDataError
from fgclip.run_dir import RUN_CONFIG_NAME


def parse_head(value: str) -> tuple[str | None, Path]:
    """"NAME=RUN_DIR" or "RUN_DIR"."""
    name, sep, path = value.partition("=")
    return (name, Path(path)) if sep and name and not Path(value).exists() else (None, Path(value))


def head_features_dir(run_dir: Path, override: Path | None) -> Path:
    if override is not None:
        return override
    config_file = run_dir / RUN_CONFIG_NAME
    try:
        features = json.loads(config_file.read_text(encoding="utf-8")).get("features_dir")
    except FileNotFoundError:
        raise HeadDataError(f"{run_dir}: no {RUN_CONFIG_NAME}: not a head run of `fgclip-vad train-head`") from None
    if not features:
        raise HeadDataError(f"{run_dir}: trained on a list, not a features directory: give --head-features DIR "
                            f"(its test list and ground truth)")
    return Path(features)


def head_rows(heads: Sequence[str], *, features: Path | None = None, test_crop: str = "listed",
              device: str = "cpu") -> list[dict]:
    """Each head run's evaluation (`fgclip.heads.evaluate.evaluate_head_run`), named
    "<method> on <features' model>" unless NAME= is given."""
    rows = []
    for value in heads:
        name, run_dir = parse_head(value)
        features_dir = head_features_dir(run_dir, features)
        model_name = read_features_dir(features_dir).manifest.get("model", {}).get("name", features_dir.name)
        result = evaluate_head_run(run_dir, test_features_of(features_dir), test_crop=test_crop, device=device)
        result["name"] = name or f"{result['method']} head on {model_name} features"
        result["features_dir"] = str(features_dir)
        result["features_model"] = model_name
        rows.append(result)
    return rows


def head_headline(row: dict) -> str:
    """Both headlines of a head row (frame AUC under each ground truth, mean ± std over seeds)."""
    parts = []
    for gt, summary in row["summary"].items():
        auc = summary["auc"]
        if auc["mean"] is not None:
            parts.append(f"frame AUC {auc['mean']:.4f} ± {auc['std']:.4f} ({row['ground_truths'][gt]})")
    return f"{row['name']}: " + "; ".join(parts) + f" over {row['summary'][next(iter(row['summary']))]['auc']['n']} seeds"
