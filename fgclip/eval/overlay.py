"""Drawing patch maps over frames: one overlaid frame, and grids of them (contact sheets, heat strips).

The colour scale is fixed, 0 to 1 (a map value is a probability, `fgclip.eval.patch_map`), so a
calm frame looks calm instead of being stretched to full contrast. Figures use matplotlib's Agg
canvas (no display needed); single frames for videos are blended with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from fgclip.eval.patch_map import upsample_maps

COLOUR_MAP = "turbo"
OVERLAY_ALPHA = 0.45


def heat_overlay(frame_uint8: np.ndarray, patch_map: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8 frame and its (g, g) patch map -> (H, W, 3) uint8 with the map blended in."""
    height, width = frame_uint8.shape[:2]
    upsampled = upsample_maps(patch_map[None], height, width)[0]
    colours = colormaps[COLOUR_MAP](np.clip(upsampled, 0.0, 1.0))[..., :3]
    blended = (1.0 - alpha) * frame_uint8.astype(np.float32) / 255.0 + alpha * colours
    return (np.clip(blended, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass
class Tile:
    """One frame of a grid: the frame, its patch map, a caption, optional boxes (0..1) to outline."""

    frame_uint8: np.ndarray
    patch_map: np.ndarray
    caption: str
    boxes: np.ndarray | None = None


def draw_tile_grid(rows: Sequence[Sequence[Tile]], path: Path, *, title: str, row_labels: Sequence[str] | None = None,
                   tile_inches: float = 2.0, dpi: int = 90) -> None:
    """A PNG of tiles, one list per row (rows may be shorter than the longest), with a colour bar."""
    columns = max((len(row) for row in rows), default=0)
    if columns == 0:
        raise ValueError(f"{path}: nothing to draw")
    aspect = max(tile.frame_uint8.shape[1] / tile.frame_uint8.shape[0] for row in rows for tile in row)
    fig = Figure(figsize=(tile_inches * aspect * columns + 1.2, tile_inches * len(rows) + 0.7))
    grid = fig.add_gridspec(len(rows), columns + 1, width_ratios=[1] * columns + [0.06], wspace=0.05, hspace=0.25)
    image = None
    for r, row in enumerate(rows):
        for c in range(columns):
            ax = fig.add_subplot(grid[r, c])
            ax.set_axis_off()
            if c >= len(row):
                continue
            tile = row[c]
            height, width = tile.frame_uint8.shape[:2]
            ax.imshow(tile.frame_uint8)
            # The map on a fixed 0..1 colour scale, so that one colour bar reads for every tile.
            image = ax.imshow(upsample_maps(tile.patch_map[None], height, width)[0], cmap=COLOUR_MAP, vmin=0.0,
                              vmax=1.0, alpha=OVERLAY_ALPHA)
            for x1, y1, x2, y2 in ([] if tile.boxes is None else tile.boxes):
                ax.add_patch(Rectangle((x1 * width - 0.5, y1 * height - 0.5), (x2 - x1) * width, (y2 - y1) * height,
                                       fill=False, edgecolor="white", linewidth=1.0, linestyle="--"))
            ax.set_title(tile.caption, fontsize=7)
            if c == 0 and row_labels is not None:
                ax.text(-0.04, 0.5, row_labels[r], transform=ax.transAxes, rotation=90, ha="right", va="center",
                        fontsize=7)
    if image is not None:
        fig.colorbar(image, cax=fig.add_subplot(grid[:, columns]), label="1 - P(normal) per patch")
    fig.suptitle(title, fontsize=9, y=1.0)
    fig.subplots_adjust(top=1.0 - 0.55 / (tile_inches * len(rows) + 0.7))
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
