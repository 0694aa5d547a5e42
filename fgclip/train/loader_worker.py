"""What the training loader's reader processes do: its slot layout and its read function.

The processes themselves, the shared block, their start, liveness and failure messages are
`fgclip.reader_pool`'s. A training slot holds one micro-batch of whole records: the frames
(a uniform subset of the stored ones), the box tracks and the dataset position read into each
row. This module imports only numpy, h5py and the shard schema (the readers import it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fgclip.reader_pool import ArraySpec, OpenShards, ReadFailed, RecordSource, read_failure_message
from pipeline.shards import ShardFormatError, ShardReader


def subsample_rows(stored: int, wanted: int) -> np.ndarray:
    """Which of `stored` uniformly sampled frames to keep to get `wanted` uniform frames.

    Stored sample j covers the j-th of `stored` equal bins of the window; keeping the sample
    nearest the centre of each of `wanted` coarser bins keeps the result uniform, e.g.
    256 -> 128 keeps 1, 3, 5, ... and 64 -> 16 keeps 2, 6, 10, ...
    """
    if wanted > stored:
        raise ValueError(f"cannot take {wanted} frames from {stored} stored samples")
    if wanted == stored:
        return np.arange(stored, dtype=np.int64)
    return np.floor((np.arange(wanted) + 0.5) * stored / wanted).astype(np.int64)


def clip_rows(stored: int, wanted: int, *, seed: int, epoch: int, position: int) -> np.ndarray:
    """`wanted` consecutive stored samples starting at a random one: a new clip every epoch.

    The start is drawn from (seed, epoch, dataset position), so a resumed run reads the same
    clips, and every rank and reader agrees without sharing state. Consecutive means at the
    stored sampling's stride: shards of T_s frames over the whole video give clips of
    `wanted / T_s` of it.
    """
    if wanted > stored:
        raise ValueError(f"cannot take {wanted} frames from {stored} stored samples")
    start = int(np.random.default_rng([seed, epoch, position]).integers(stored - wanted + 1))
    return np.arange(start, start + wanted, dtype=np.int64)


@dataclass(frozen=True)
class SlotLayout:
    """The arrays of the shared block: `num_slots` slots, each one micro-batch of `batch_size`
    records of `num_frames` frames, their box tracks in `region_slots` rows and the dataset
    positions of the records in it."""

    num_slots: int
    batch_size: int
    num_frames: int
    height: int
    width: int
    region_slots: int

    def arrays(self) -> list[ArraySpec]:
        s, b, t, r = self.num_slots, self.batch_size, self.num_frames, self.region_slots
        return [
            ("frames", (s, b, t, self.height, self.width, 3), np.dtype(np.uint8)),
            ("boxes", (s, b, r, t, 4), np.dtype(np.float32)),
            ("box_mask", (s, b, r, t), np.dtype(np.bool_)),
            ("positions", (s, b), np.dtype(np.int64)),
        ]


def read_record_into(
    reader: ShardReader,
    source: RecordSource,
    rows: np.ndarray,
    frames_out: np.ndarray,
    boxes_out: np.ndarray,
    mask_out: np.ndarray,
    scratch: dict[int, np.ndarray],
) -> None:
    """Copy one record's frames (the `rows` of its stored samples), boxes and mask into a slot.

    frames_out (T,H,W,3) uint8, boxes_out (R,T,4) float32 and mask_out (R,T) bool are views into
    shared memory; region rows past the record's count are cleared.
    """
    if len(rows) == source.stored_frames:
        reader.read_frames_into(source.local_index, frames_out)  # straight from the chunk
    else:
        # A record is one HDF5 chunk (checksummed as a whole), so reading all of it and keeping
        # the rows costs the same disk I/O as a selective read and avoids h5py's slow fancy indexing.
        full = scratch.get(source.stored_frames)
        if full is None:
            full = np.empty((source.stored_frames,) + frames_out.shape[1:], dtype=np.uint8)
            scratch[source.stored_frames] = full
        reader.read_frames_into(source.local_index, full)
        np.take(full, rows, axis=0, out=frames_out)
    boxes, mask = reader.read_boxes(source.local_index)
    r = source.region_count
    boxes_out[:r] = boxes[:r][:, rows]
    boxes_out[r:] = 0.0
    mask_out[:r] = mask[:r][:, rows]
    mask_out[r:] = False



@dataclass
class TrainingReadJob:
    """The read function of the loader's readers: task (slot, row, position, epoch) -> (position
    read, skipped), the record at dataset `position` copied into row `row` of slot `slot`, its
    frames chosen by `frame_selection` (`epoch` and `seed` draw the random clips).

    With `skip_damaged`, a damaged record is replaced by the next readable one, and `skipped`
    lists (position, message) of those passed over; without, the failure is raised, naming the
    record. Runs in a reader process (or in the loader's process with no readers).
    """

    sources: tuple[RecordSource, ...]
    num_frames: int
    skip_damaged: bool
    frame_selection: str = "uniform"
    seed: int = 0
    _rows_for: dict = field(default_factory=dict, repr=False)  # stored frames -> rows to keep
    _scratch: dict = field(default_factory=dict, repr=False)
    _known_bad: set = field(default_factory=set, repr=False)

    def __call__(self, shards: OpenShards, views: dict[str, np.ndarray], task: tuple[int, int, int, int]):
        slot, row, position, epoch = task
        skipped: list[tuple[int, str]] = []
        candidate = position
        while True:
            source = self.sources[candidate]
            try:
                if candidate in self._known_bad:
                    raise RuntimeError("found damaged before")
                if self.frame_selection == "random-clip":
                    rows = clip_rows(source.stored_frames, self.num_frames, seed=self.seed, epoch=epoch, position=candidate)
                else:
                    rows = self._rows_for.get(source.stored_frames)
                    if rows is None:
                        rows = self._rows_for[source.stored_frames] = subsample_rows(source.stored_frames, self.num_frames)
                read_record_into(shards.get(source.shard), source, rows, views["frames"][slot, row],
                                 views["boxes"][slot, row], views["box_mask"][slot, row], self._scratch)
                views["positions"][slot, row] = candidate
                return candidate, skipped
            except Exception as err:  # noqa: BLE001 - every read failure is reported with its record
                message = read_failure_message(source, err)
                if not self.skip_damaged:
                    raise ReadFailed(message, isinstance(err, ShardFormatError)) from err
                self._known_bad.add(candidate)
                skipped.append((candidate, message))
                candidate = (candidate + 1) % len(self.sources)
                if candidate == position:
                    raise ReadFailed("no readable record left: " + message) from err
