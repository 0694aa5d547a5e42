"""The cells of a spec: the base overlaid with each combination of variants, times each seed.

A cell's options are hashed stage by stage, each key including the keys before it (stage 1's
options -> its shards; + training's options and the seed -> its run; + evaluation's options ->
its report). Cells whose options agree up to a stage share that stage's output, and an output
that is already complete is not built again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

from fgclip.experiments.spec import STAGES, ExperimentSpec, slug


@dataclass(frozen=True)
class Cell:
    """One cell and seed: its variant per axis, the options of each stage, its table group."""

    labels: tuple[tuple[str, str], ...]  # (axis name, variant label), in the spec's axis order
    seed: int
    options: dict[str, dict]  # stage -> the base's options overlaid with the variants'
    group: str = ""  # combine = "separate": the axis this cell varies (one table each)

    @property
    def variant(self) -> str:
        """The cell without its seed: "global only / whole video" (or "base")."""
        return " / ".join(label for _, label in self.labels) or "base"

    @property
    def name(self) -> str:
        """Its folder name: "global-only_whole-video-seed1"."""
        variant = "_".join(slug(label) for _, label in self.labels) or "base"
        return f"{variant}-seed{self.seed}"


def overlay(base: dict[str, dict], *variants: dict[str, dict]) -> dict[str, dict]:
    """Stage options of `base` with each variant's options set over them, later ones winning."""
    merged = {stage: dict(base.get(stage, {})) for stage in STAGES}
    for variant in variants:
        for stage, options in variant.items():
            merged[stage].update(options)
    return merged


def expand_cells(spec: ExperimentSpec) -> list[Cell]:
    """Every cell of the spec, seeds innermost: cross = every combination of the axes' variants,
    separate = each axis's variants alone over the base (in axis order)."""
    combos: list[tuple[tuple[tuple[str, str], ...], tuple[dict, ...], str]] = []
    if not spec.axes:
        combos.append(((), (), ""))
    elif spec.combine == "cross":
        for choice in itertools.product(*(axis.variants for axis in spec.axes)):
            combos.append((tuple((axis.name, v.label) for axis, v in zip(spec.axes, choice)),
                           tuple(v.options for v in choice), ""))
    else:
        for axis in spec.axes:
            for v in axis.variants:
                combos.append((((axis.name, v.label),), (v.options,), axis.name))
    return [Cell(labels, seed, overlay(spec.base, *variant_options), group)
            for labels, variant_options, group in combos for seed in spec.seeds]


def options_key(*parts: object) -> str:
    """A short, stable hash of JSON-able parts (key order does not matter)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class CellKeys:
    """The output keys of one cell's stages (equal keys = one shared output)."""

    frames: str
    test_frames: str
    train: str
    features: str
    heads: str
    eval: str


def cell_keys(cell: Cell, dataset: dict, test_frames_options: dict) -> CellKeys:
    frames = options_key("frames", dataset, cell.options["frames"])
    test_frames = options_key("test-frames", dataset, test_frames_options)
    train = options_key("train", frames, cell.options["train"], cell.seed)
    features = options_key("features", train, test_frames, cell.options["features"])
    heads = options_key("heads", features, cell.options["heads"], cell.seed)
    evaluation = options_key("eval", train, test_frames, cell.options["eval"])
    return CellKeys(frames, test_frames, train, features, heads, evaluation)
