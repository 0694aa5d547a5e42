"""The reading side of the training loader: worker processes that fill shared host buffers.

Each worker is a fresh interpreter started as `python -m fgclip.loader_worker FD` (not a
multiprocessing child): it imports only numpy, h5py and the shard schema, never the trainer's
main module and never torch, so it starts in a fraction of a second, needs no
`if __name__ == "__main__"` guard in the user's script, and inherits no CUDA context and no
open HDF5 file. It opens the shard files itself (h5py serialises every call of a process behind
one lock, so parallel reading needs processes) and copies whole records into the slots of one
shared-memory block that the main process has pinned for fast GPU copies. Tasks and replies
travel over a socket pair (FD); when the trainer dies, the socket closes and the worker exits.
"""

from __future__ import annotations

import mmap
import os
import socket
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from pipeline.shards import ShardFormatError, ShardReader

# Shard files a worker keeps open at once (each open file costs a little memory and a handle).
_MAX_OPEN_SHARDS = 64


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


@dataclass(frozen=True)
class SlotLayout:
    """Where each array of each slot lives inside the one shared-memory block.

    A slot holds one micro-batch: `batch_size` records of `num_frames` frames, their box
    tracks in `region_slots` rows and the dataset positions of the records in it.
    """

    num_slots: int
    batch_size: int
    num_frames: int
    height: int
    width: int
    region_slots: int

    def _shapes(self) -> list[tuple[str, tuple[int, ...], np.dtype]]:
        s, b, t, r = self.num_slots, self.batch_size, self.num_frames, self.region_slots
        return [
            ("frames", (s, b, t, self.height, self.width, 3), np.dtype(np.uint8)),
            ("boxes", (s, b, r, t, 4), np.dtype(np.float32)),
            ("box_mask", (s, b, r, t), np.dtype(np.bool_)),
            ("positions", (s, b), np.dtype(np.int64)),
        ]

    def offsets(self) -> dict[str, int]:
        out, offset = {}, 0
        for name, shape, dtype in self._shapes():
            offset = (offset + 4095) // 4096 * 4096  # page-aligned, so each array pins cleanly
            out[name] = offset
            offset += int(np.prod(shape)) * dtype.itemsize
        out["_total"] = offset
        return out

    @property
    def nbytes(self) -> int:
        return self.offsets()["_total"]

    def views(self, buffer) -> dict[str, np.ndarray]:
        """Numpy arrays over `buffer` (a shared-memory buffer), one per field."""
        offsets = self.offsets()
        return {
            name: np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offsets[name])
            for name, shape, dtype in self._shapes()
        }


@dataclass(frozen=True)
class RecordSource:
    """Where a dataset position lives: shard file, record inside it, stored frames, regions."""

    shard: str
    local_index: int
    stored_frames: int
    region_count: int
    video: str


def read_failure_message(source: RecordSource, err: BaseException) -> str:
    """One line naming the shard, record and video of a failed read (a ShardFormatError names them itself)."""
    if isinstance(err, ShardFormatError):
        return str(err)
    return f"{source.shard}: record {source.local_index} (video {source.video}): {err if str(err) else type(err).__name__}"


@dataclass(frozen=True)
class WorkerSetup:
    shm_name: str
    layout: SlotLayout
    sources: tuple[RecordSource, ...]
    skip_damaged: bool


class _OpenShards:
    """A small cache of open ShardReaders (opened in this process, never inherited)."""

    def __init__(self) -> None:
        self._readers: dict[str, ShardReader] = {}

    def get(self, path: str) -> ShardReader:
        reader = self._readers.get(path)
        if reader is None:
            if len(self._readers) >= _MAX_OPEN_SHARDS:
                oldest = next(iter(self._readers))
                self._readers.pop(oldest).close()
            reader = ShardReader(path)
            self._readers[path] = reader
        return reader

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


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


def worker_main(conn: Connection) -> None:
    """Serve the main process over `conn` until it sends None or goes away.

    The first message is the WorkerSetup. A task is (batch_id, slot, row_in_batch, position);
    the reply is ("ok", batch_id, slot, row_in_batch, position_used, skipped) or
    ("error", batch_id, slot, row_in_batch, message); `skipped` lists (position, message) of
    damaged records replaced by the next readable one when `skip_damaged` is set.
    """
    try:
        setup: WorkerSetup = conn.recv()
    except EOFError:
        return
    _serve(setup, attach_shared_block(setup.shm_name, setup.layout.nbytes), conn)


def attach_shared_block(name: str, nbytes: int):
    """Map the main process's shared-memory block (it owns it and unlinks it).

    Attaching through `SharedMemory(name)` would start a resource tracker in this process that
    unlinks the block when the worker exits (Python < 3.13), so the block is mapped directly.
    """
    path = f"/dev/shm/{name.lstrip('/')}"
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)


def _serve(setup: WorkerSetup, block, conn: Connection) -> None:
    views = setup.layout.views(block)
    shards = _OpenShards()
    scratch: dict[int, np.ndarray] = {}
    rows_for: dict[int, np.ndarray] = {}
    known_bad: set[int] = set()
    num_frames = setup.layout.num_frames
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return  # the trainer is gone; do not linger as an orphan
            if task is None:
                return
            batch_id, slot, row, position = task
            skipped: list[tuple[int, str]] = []
            candidate = position
            while True:
                source = setup.sources[candidate]
                try:
                    if candidate in known_bad:
                        raise RuntimeError("found damaged before")
                    rows = rows_for.get(source.stored_frames)
                    if rows is None:
                        rows = rows_for[source.stored_frames] = subsample_rows(source.stored_frames, num_frames)
                    read_record_into(
                        shards.get(source.shard), source, rows,
                        views["frames"][slot, row], views["boxes"][slot, row], views["box_mask"][slot, row], scratch,
                    )
                    views["positions"][slot, row] = candidate
                    reply = ("ok", batch_id, slot, row, candidate, skipped)
                    break
                except Exception as err:  # noqa: BLE001 - every read failure is reported with its record
                    message = read_failure_message(source, err)
                    if not isinstance(err, (OSError, RuntimeError, ValueError, KeyError)):
                        message += "\n" + traceback.format_exc()
                    if not setup.skip_damaged:
                        reply = ("error", batch_id, slot, row, message)
                        break
                    known_bad.add(candidate)
                    skipped.append((candidate, message))
                    candidate = (candidate + 1) % len(setup.sources)
                    if candidate == position:
                        reply = ("error", batch_id, slot, row, "no readable record left: " + message)
                        break
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return
    finally:
        shards.close()


if __name__ == "__main__":
    # argv[1]: the file descriptor of this worker's end of the socket pair
    worker_main(Connection(socket.socket(fileno=int(sys.argv[1])).detach()))
