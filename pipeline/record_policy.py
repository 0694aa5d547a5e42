"""Stage 1's choices of what a training record keeps: its window, its regions, its boxless regions.

These are the knobs of the group's ablations (window strategy, regions per record, records
without boxes), each a real option of `fgclip-vad frames` (`--window`, `--max-regions`,
`--boxless`), recorded in every manifest it changes.

* window: `annotated` samples the record's `timestamps` (the whole video when it has none);
  `whole-video` ignores the timestamps and samples the whole video. (A random clip of T
  consecutive frames per epoch is training's `--frame-selection random-clip`, over the frames
  stage 1 stored: `fgclip.train.loader_worker.clip_rows`.)
* boxless (a region without box keyframes):
  `whole-frame` gives it a pseudo box covering the whole frame on every sample (the default);
  `mask` leaves it out of the region loss (its track would be masked on every frame: the region
  is removed from the record and listed in the manifest), the record still trains the
  video-caption loss; `drop` does the same and skips a record left with no boxed region.
* max_regions: at most N regions per record, the first N in the record's order among those
  kept; the rest are listed in the manifest like any dropped region.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.annotations import Region

WINDOW_STRATEGIES = ("annotated", "whole-video")
BOXLESS_POLICIES = ("whole-frame", "mask", "drop")


class RecordPolicyError(ValueError):
    """An unknown window strategy or boxless policy, or a region cap below 1."""


@dataclass(frozen=True)
class RecordPolicy:
    """How stage 1 turns an annotation record into a training record (see the module docstring)."""

    window: str = "annotated"
    boxless: str = "whole-frame"
    max_regions: int | None = None  # None: every region

    def __post_init__(self) -> None:
        if self.window not in WINDOW_STRATEGIES:
            raise RecordPolicyError(f"window strategy must be one of {', '.join(WINDOW_STRATEGIES)}, not {self.window!r}")
        if self.boxless not in BOXLESS_POLICIES:
            raise RecordPolicyError(f"boxless policy must be one of {', '.join(BOXLESS_POLICIES)}, not {self.boxless!r}")
        if self.max_regions is not None and self.max_regions < 1:
            raise RecordPolicyError(f"max regions per record must be at least 1 (or unset), not {self.max_regions}")

    @property
    def is_default(self) -> bool:
        return self == RecordPolicy()

    def manifest_entry(self) -> dict:
        """The settings a manifest records (and a rerun must match)."""
        return {"window": self.window, "boxless": self.boxless, "max_regions": self.max_regions}

    def window_s(self, annotated_s: tuple[float, float] | None) -> tuple[float, float] | None:
        """The window to sample: the annotated one, or None (the whole video)."""
        return annotated_s if self.window == "annotated" else None


@dataclass(frozen=True)
class RegionChoice:
    """Which regions of a record stay (indices, in order), why each other one went, and
    whether the whole record is skipped (`skip_reason`)."""

    keep: list[int]
    dropped: dict[int, str]
    skip_reason: str | None = None


def choose_regions(regions: tuple[Region, ...] | list[Region], visible: list[bool], policy: RecordPolicy) -> RegionChoice:
    """Apply the boxless policy and the region cap to a record's regions.

    `visible[r]`: region r's track meets at least one sampled frame (a region that does not is
    dropped whatever the policy).
    """
    keep: list[int] = []
    dropped: dict[int, str] = {}
    for r, region in enumerate(regions):
        if not visible[r]:
            dropped[r] = "no sampled frame within half a sampling stride of its keyframes"
        elif not region.keyframes and policy.boxless != "whole-frame":
            dropped[r] = f"no box keyframes (--boxless {policy.boxless}: left out of the region loss)"
        else:
            keep.append(r)
    if policy.max_regions is not None:
        for r in keep[policy.max_regions:]:
            dropped[r] = f"over the cap of {policy.max_regions} regions per record (--max-regions)"
        keep = keep[:policy.max_regions]
    skip_reason = None
    if policy.boxless == "drop" and not any(regions[r].keyframes for r in keep):
        skip_reason = "the record has no region with box keyframes (--boxless drop)"
    return RegionChoice(keep, dropped, skip_reason)
