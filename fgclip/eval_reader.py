"""The reading side of evaluation: reader processes fill slots of one shared-memory block.

Scoring a test set is one pass over every stored frame, so reading must keep up with the GPU.
Frames are packed into "units": whole test videos, one after another, filling a slot of
`slot_rows` frames (so one GPU batch spans several short videos), and videos longer than a slot
split over several units. Reader processes (h5py serialises every call of a process behind one
lock, so parallel reads need processes) each take a unit and a free slot, read the frames
straight from the shard chunks into that slot with `ShardReader.read_frames_into`, and report
back; the main process pins the block once for asynchronous GPU copies (`fgclip.evaluate`).

Readers are forked where the platform allows (Linux): a spawned process re-imports the caller's
main script, which takes seconds when that script imports torch, while a fork starts in
milliseconds. A forked reader runs only this module's code (numpy, h5py and the shard schema;
never torch or CUDA, which the parent may have initialised), opens its shard files itself (no
HDF5 handle crosses the fork; the parent has closed its own), and its slots are shared memory
attached by name, the same as under spawn.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import warnings
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Iterator, Sequence

import numpy as np

from pipeline.shards import ShardFormatError, ShardReader

_PARENT_POLL_S = 2.0  # how often an idle reader checks that the evaluation is still running
_RESULT_POLL_S = 5.0  # how often the main process checks that its readers are alive


@dataclass(frozen=True)
class RecordSource:
    """A test video in the shards: which file, which record, how many stored frames."""

    shard: str
    local_index: int
    stored_frames: int


@dataclass(frozen=True)
class ReadPiece:
    """Rows first_row:first_row+num_rows of record `source_number`, placed at `slot_row` of a slot."""

    source_number: int  # index into the sources list
    first_row: int
    num_rows: int
    slot_row: int


@dataclass(frozen=True)
class ReadUnit:
    """What one slot holds: pieces packed back to back from slot row 0."""

    pieces: tuple[ReadPiece, ...]

    @property
    def num_rows(self) -> int:
        return sum(p.num_rows for p in self.pieces)


def plan_units(sources: Sequence[RecordSource], slot_rows: int) -> list[ReadUnit]:
    """Pack the sources, in order, into units of at most `slot_rows` frames (long ones split)."""
    if slot_rows <= 0:
        raise ValueError(f"slot_rows must be positive, got {slot_rows}")
    units: list[ReadUnit] = []
    pieces: list[ReadPiece] = []
    filled = 0
    for number, source in enumerate(sources):
        first = 0
        while first < source.stored_frames:
            take = min(source.stored_frames - first, slot_rows - filled)
            pieces.append(ReadPiece(number, first, take, filled))
            first += take
            filled += take
            if filled == slot_rows:
                units.append(ReadUnit(tuple(pieces)))
                pieces, filled = [], 0
    if pieces:
        units.append(ReadUnit(tuple(pieces)))
    return units


@dataclass(frozen=True)
class SlotLayout:
    """`num_slots` slots of `slot_rows` frames of (height, width, 3) uint8 in one block."""

    num_slots: int
    slot_rows: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (self.num_slots, self.slot_rows, self.height, self.width, 3)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def view(self, buffer) -> np.ndarray:
        return np.ndarray(self.shape, dtype=np.uint8, buffer=buffer)


class _OpenShards:
    """Shard readers opened by this process, kept open while it reads."""

    def __init__(self) -> None:
        self._readers: dict[str, ShardReader] = {}

    def get(self, path: str) -> ShardReader:
        if path not in self._readers:
            self._readers[path] = ShardReader(path)
        return self._readers[path]

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def read_unit_into(shards: _OpenShards, sources: Sequence[RecordSource], unit: ReadUnit, slot: np.ndarray) -> None:
    """Read every piece of `unit` into `slot` (slot_rows, H, W, 3), straight from the chunks."""
    for piece in unit.pieces:
        source = sources[piece.source_number]
        out = slot[piece.slot_row:piece.slot_row + piece.num_rows]
        whole = piece.first_row == 0 and piece.num_rows == source.stored_frames
        rows = None if whole else slice(piece.first_row, piece.first_row + piece.num_rows)
        shards.get(source.shard).read_frames_into(source.local_index, out, rows)


def reader_main(shm_name: str, layout: SlotLayout, sources: tuple[RecordSource, ...], units: tuple[ReadUnit, ...],
                tasks, results, parent_pid: int) -> None:
    """Serve (unit_number, slot) tasks until None; reply ("ok", unit, slot) or
    ("error", unit, slot, message, whether it is a damaged shard)."""
    shm = shared_memory.SharedMemory(name=shm_name)
    slots = layout.view(shm.buf)
    shards = _OpenShards()
    try:
        while True:
            try:
                task = tasks.get(timeout=_PARENT_POLL_S)
            except queue.Empty:
                if os.getppid() != parent_pid:
                    return  # the evaluation died; do not linger as an orphan
                continue
            if task is None:
                return
            unit_number, slot = task
            try:
                read_unit_into(shards, sources, units[unit_number], slots[slot])
                results.put(("ok", unit_number, slot))
            except Exception as err:  # noqa: BLE001 - reported to the main process with the record at fault
                results.put(("error", unit_number, slot, str(err) or type(err).__name__,
                             isinstance(err, ShardFormatError)))
    finally:
        shards.close()
        del slots
        shm.close()


class UnitReader:
    """Reads `units` into the slots of a shared block, `num_readers` processes ahead of the consumer.

    Each reader owns its own slots (two, or three for a single reader), so every page of the
    block is mapped by one reader only: first touches of fresh shared memory are slow (page
    faults), and slots shared by all readers would be faulted in by each of them.

    Call `start()` (after pinning `shared_buffer`, if wanted), then iterate to get
    (unit_number, slot_index) in completion order; the frames are in
    `self.slots[slot_index, :units[unit_number].num_rows]`. Call `release(slot_index)` once the
    slot's frames are no longer needed (after the GPU copy finished), so it can be refilled.
    With `num_readers=0` the units are read in this process, one at a time (debugging, tiny sets).
    """

    def __init__(self, sources: Sequence[RecordSource], units: Sequence[ReadUnit], *, height: int, width: int,
                 slot_rows: int, num_readers: int) -> None:
        self.sources = tuple(sources)
        self.units = tuple(units)
        self.num_readers = max(0, min(num_readers, len(self.units)))
        # The consumer holds up to two slots (one computing, one awaiting its results); a single
        # reader needs a third to keep reading meanwhile.
        self.slots_per_reader = 2 if self.num_readers > 1 else 3
        num_slots = max(1, self.num_readers) * self.slots_per_reader
        self.layout = SlotLayout(num_slots, slot_rows, height, width)
        self._shm = shared_memory.SharedMemory(create=True, size=max(1, self.layout.nbytes))
        self.slots = self.layout.view(self._shm.buf)
        self._free: list[int] = list(range(num_slots))
        self._next_unit = 0
        self._processes: list = []
        self._tasks: list = []
        self._shards = _OpenShards()
        self._started = False

    @property
    def shared_buffer(self):
        """The whole block (for pinning it once, before `start`)."""
        return self._shm.buf

    def start(self) -> "UnitReader":
        """Start the reader processes (forked where possible, see the module docstring)."""
        if self._started:
            return self
        self._started = True
        if self.num_readers:
            context = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            self._results = context.Queue()
            for _ in range(self.num_readers):
                tasks = context.Queue()
                process = context.Process(
                    target=reader_main,
                    args=(self._shm.name, self.layout, self.sources, self.units, tasks, self._results, os.getpid()),
                    daemon=True,
                )
                with warnings.catch_warnings():
                    # Python >= 3.12 warns about forking a multi-threaded parent; the child only
                    # runs reader_main, which takes no lock another thread of the parent could hold.
                    warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*",
                                            category=DeprecationWarning)
                    process.start()
                self._tasks.append(tasks)
                self._processes.append(process)
        return self

    def release(self, slot: int) -> None:
        self._free.append(slot)
        self._submit()

    def _submit(self) -> None:
        if not self.num_readers:
            return
        while self._free and self._next_unit < len(self.units):
            slot = self._free.pop(0)  # oldest free first: spreads the units over the readers
            self._tasks[slot // self.slots_per_reader].put((self._next_unit, slot))
            self._next_unit += 1

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self.start()
        if not self.num_readers:
            for number, unit in enumerate(self.units):
                if not self._free:
                    raise RuntimeError("UnitReader: every slot is held; release(slot) each slot after use")
                slot = self._free.pop(0)
                read_unit_into(self._shards, self.sources, unit, self.slots[slot])
                yield number, slot
            return
        self._submit()
        for _ in range(len(self.units)):
            yield self._next_result()

    def _next_result(self) -> tuple[int, int]:
        """The next finished (unit, slot); a damaged shard raises ShardFormatError naming its record."""
        while True:
            try:
                reply = self._results.get(timeout=_RESULT_POLL_S)
                break
            except queue.Empty:
                dead = [p for p in self._processes if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"an evaluation reader process died (exit code {dead[0].exitcode}); "
                                       f"rerun with --readers 0 to read in the main process and see the error")
        if reply[0] == "error":
            _, unit_number, _, message, damaged_shard = reply
            if damaged_shard:  # the message names the shard, record and video, and how to rebuild it
                raise ShardFormatError(message)
            raise RuntimeError(f"reading test frames failed: {message}")
        return reply[1], reply[2]

    def close(self) -> None:
        """Stop the readers and free the shared block (drop every view of `slots` first)."""
        for tasks in self._tasks:
            tasks.put(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        self._processes.clear()
        self._shards.close()
        del self.slots
        try:
            self._shm.close()
        except BufferError:
            pass  # a caller still holds a view (e.g. while an exception unwinds); the OS frees it at exit
        self._shm.unlink()

    def __enter__(self) -> "UnitReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
