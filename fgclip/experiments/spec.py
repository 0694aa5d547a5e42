"""An experiment spec (TOML): a base, axes of variants, seeds; read and checked here.

```toml
name = "demo-ablation"            # the output folder: experiments/<name>/ (default: the file's stem)
seeds = [1, 2]
combine = "cross"                 # cross: every combination of the axes' variants; separate: each axis
                                  # varied alone over the base (one table per axis)
rows = ["prompt"]                 # what each cell reports: "prompt" (prompt scoring) and/or "heads" (a head
                                  # trained on snippet features of the cell's model; [dataset] train_list)
caption = "..."                   # words added to the tables' caption

[dataset]                         # embedded = true (model_preset = an init-model preset, default
embedded = true                   # tiny), or the paths of a real dataset (see DATASET_KEYS)

[base.frames]                     # options of each stage: `fgclip-vad frames/train/eval/...` option
num_frames = [64]                 # names with _ for -; true/false for flags; lists repeat an option
[base.train]
preset = "demo"
[base.eval]
no_baseline = true

[[axes]]
name = "loss terms"
[[axes.variants]]
label = "global only"
train = { region_weight = 0.0 }   # any stage's options, overlaid on the base

[projection]                      # --dry-run's hints where the data is not at hand (PROJECTION_KEYS)
train_records = 1559
```

A stage's options are the command's own, so every option of every stage can be an axis;
the runner only adds the paths that tie the stages together (which it owns: listed in
RUNNER_OPTIONS, refused in a spec).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (a dependency there)
    import tomli as tomllib

# The stages a spec may give options to, in the order a cell runs them. features and heads run
# only when the spec's rows ask for heads.
STAGES = ("frames", "train", "features", "heads", "eval")
ROWS = ("prompt", "heads")
COMBINE_MODES = ("cross", "separate")
# Keys of [dataset] for a real dataset (paths relative to the working directory).
DATASET_KEYS = ("annotations", "video_root", "test_list", "test_video_root", "ground_truth", "model", "test_split",
                "dataset", "size", "train_list")
# Options the runner sets itself, per stage: they tie the stages' outputs together.
RUNNER_OPTIONS = {
    "frames": {"out", "video_root", "test_list", "test_split"},
    "train": {"shards", "model", "output_dir", "seed", "resume"},
    "features": {"checkpoint", "out"},
    "heads": {"features", "out", "seed"},
    "eval": {"checkpoint", "test_shards", "annotations", "out"},
}
# Projection hints for --dry-run when the data is not on this machine (see fgclip.experiments.projection).
PROJECTION_KEYS = ("train_records", "test_frames", "stage1_s", "cell_overhead_s", "bench")


class SpecError(ValueError):
    """A spec that cannot be run: the file, the key and what to write instead."""


@dataclass(frozen=True)
class Variant:
    label: str
    options: dict[str, dict]  # stage -> options overlaid on the base


@dataclass(frozen=True)
class Axis:
    name: str
    variants: tuple[Variant, ...]


@dataclass
class ExperimentSpec:
    path: Path
    name: str
    seeds: tuple[int, ...]
    combine: str
    rows: tuple[str, ...]
    dataset: dict
    base: dict[str, dict]  # stage -> options
    axes: tuple[Axis, ...]
    projection: dict = field(default_factory=dict)
    caption: str = ""  # extra words for the tables' caption


def slug(text: str) -> str:
    """A file-name-safe form of a label: "global only" -> "global-only"."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "x"


def _stage_options(path: Path, where: str, table: object) -> dict[str, dict]:
    if not isinstance(table, dict):
        raise SpecError(f"{path}: {where} must be a table of stages ({', '.join(STAGES)})")
    options: dict[str, dict] = {}
    for stage, values in table.items():
        if stage == "label":
            continue
        if stage not in STAGES:
            raise SpecError(f"{path}: {where}.{stage}: unknown stage; the stages are {', '.join(STAGES)}")
        if not isinstance(values, dict):
            raise SpecError(f"{path}: {where}.{stage} must be a table of options, e.g. {{ epochs = 2 }}")
        taken = sorted(set(values) & RUNNER_OPTIONS[stage])
        if taken:
            raise SpecError(f"{path}: {where}.{stage}: {', '.join(taken)} is set by the runner (it links the stages' "
                            f"outputs); remove it (seeds come from `seeds`, the data from [dataset])")
        for key, value in values.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
                raise SpecError(f"{path}: {where}.{stage}.{key}: option names are the command's, with _ for -")
            if isinstance(value, dict):
                raise SpecError(f"{path}: {where}.{stage}.{key} = {value!r}: a value must be a number, string, "
                                f"boolean or list")
        options[stage] = dict(values)
    return options


def _axes(path: Path, raw: object) -> tuple[Axis, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(f"{path}: axes must be an array of tables ([[axes]])")
    axes = []
    for i, axis in enumerate(raw):
        name = axis.get("name") if isinstance(axis, dict) else None
        if not isinstance(name, str) or not name:
            raise SpecError(f"{path}: axes[{i}] needs a name (name = \"loss terms\")")
        variants_raw = axis.get("variants")
        if not isinstance(variants_raw, list) or not variants_raw:
            raise SpecError(f"{path}: axis {name!r} needs variants ([[axes.variants]] with a label and stage options)")
        variants = []
        for j, variant in enumerate(variants_raw):
            label = variant.get("label") if isinstance(variant, dict) else None
            if not isinstance(label, str) or not label:
                raise SpecError(f"{path}: axis {name!r} variant {j} needs a label")
            variants.append(Variant(label, _stage_options(path, f"axis {name!r} variant {label!r}", variant)))
        labels = [slug(v.label) for v in variants]
        if len(set(labels)) != len(labels):
            raise SpecError(f"{path}: axis {name!r} has two variants with the same label {labels}")
        axes.append(Axis(name, tuple(variants)))
    return tuple(axes)


def load_spec(path: Path | str) -> ExperimentSpec:
    """Read and check a spec file; SpecError names the file, the key and the fix."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SpecError(f"{path}: cannot read it: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    known = {"name", "seeds", "combine", "rows", "dataset", "base", "axes", "projection", "caption"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError(f"{path}: unknown top-level keys {unknown}; known: {sorted(known)}")
    seeds = raw.get("seeds", [42])
    distinct_integers = isinstance(seeds, list) and all(isinstance(s, int) for s in seeds) and len(set(seeds)) == len(seeds)
    if not seeds or not distinct_integers:
        raise SpecError(f"{path}: seeds = {seeds!r}: needs a list of distinct integers, e.g. seeds = [1, 2, 3]")
    combine = raw.get("combine", "cross")
    if combine not in COMBINE_MODES:
        raise SpecError(f"{path}: combine = {combine!r}: one of {', '.join(COMBINE_MODES)}")
    rows = raw.get("rows", ["prompt"])
    if not isinstance(rows, list) or not rows or any(r not in ROWS for r in rows):
        raise SpecError(f"{path}: rows = {rows!r}: a list of {', '.join(ROWS)}")
    dataset = raw.get("dataset", {"embedded": True})
    if not isinstance(dataset, dict):
        raise SpecError(f"{path}: [dataset] must be a table")
    if not dataset.get("embedded"):
        missing = [key for key in ("annotations", "test_list", "ground_truth", "model") if key not in dataset]
        if missing:
            raise SpecError(f"{path}: [dataset] needs {', '.join(missing)} (or embedded = true for the embedded default)")
        unknown = sorted(set(dataset) - set(DATASET_KEYS) - {"embedded"})
        if unknown:
            raise SpecError(f"{path}: [dataset] unknown keys {unknown}; known: {', '.join(DATASET_KEYS)}")
    projection = raw.get("projection", {})
    unknown = sorted(set(projection) - set(PROJECTION_KEYS))
    if unknown:
        raise SpecError(f"{path}: [projection] unknown keys {unknown}; known: {', '.join(PROJECTION_KEYS)}")
    return ExperimentSpec(
        path=path, name=str(raw.get("name") or path.stem), seeds=tuple(seeds), combine=combine, rows=tuple(rows),
        dataset=dataset, base=_stage_options(path, "base", raw.get("base", {})), axes=_axes(path, raw.get("axes")),
        projection=projection, caption=str(raw.get("caption", "")),
    )
