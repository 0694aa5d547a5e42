"""What evaluation's reader processes do: its slot layout, the packing of videos into slots,
and its read function.

Scoring a test set is one pass over every stored frame, so reading must keep up with the GPU.
Frames are packed into "units": whole test videos, one after another, filling a slot of
`slot_rows` frames (so one GPU batch spans several short videos), and videos longer than a slot
split over several units. Reader processes (`fgclip.reader_pool`, which owns them, the shared
block and their failure messages) each take a unit and a free slot and read the frames straight
from the shard chunks into that slot with `ShardReader.read_frames_into`; the main process copies
each unit out for its GPU upload (`fgclip.eval.evaluate`) and hands the slot back. This module imports
only numpy, h5py and the shard schema (the readers import it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from fgclip.reader_pool import ArraySpec, OpenShards, ReaderPool, ReadFailed, RecordSource, read_failure_message
from pipeline.shards import ShardFormatError


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


def plan_units(sources: Sequence[RecordSource], slot_rows: int, *, lead_units: int = 0,
               lead_rows: int | None = None) -> list[ReadUnit]:
    """Pack the sources, in order, into units of at most `slot_rows` frames (long ones split).

    The first `lead_units` units hold at most `lead_rows` frames: with one short unit per reader
    the GPU starts after a short read instead of a whole slot's."""
    if slot_rows <= 0:
        raise ValueError(f"slot_rows must be positive, got {slot_rows}")
    lead_rows = slot_rows if lead_rows is None else lead_rows
    if not 0 < lead_rows <= slot_rows:
        raise ValueError(f"lead_rows must be in 1..slot_rows ({slot_rows}), got {lead_rows}")
    units: list[ReadUnit] = []
    pieces: list[ReadPiece] = []
    filled = 0
    for number, source in enumerate(sources):
        first = 0
        while first < source.stored_frames:
            capacity = lead_rows if len(units) < lead_units else slot_rows
            take = min(source.stored_frames - first, capacity - filled)
            pieces.append(ReadPiece(number, first, take, filled))
            first += take
            filled += take
            if filled == capacity:
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

    def arrays(self) -> list[ArraySpec]:
        return [("frames", (self.num_slots, self.slot_rows, self.height, self.width, 3), np.dtype(np.uint8))]


@dataclass(frozen=True)
class PieceRead:
    """A piece with its record: what a reader needs to read it."""

    source: RecordSource
    piece: ReadPiece


def read_unit_into(shards: OpenShards, reads: Sequence[PieceRead], slot: np.ndarray) -> None:
    """Read every piece of a unit into `slot` (slot_rows, H, W, 3), straight from the chunks."""
    for read in reads:
        source, piece = read.source, read.piece
        out = slot[piece.slot_row:piece.slot_row + piece.num_rows]
        whole = piece.first_row == 0 and piece.num_rows == source.stored_frames
        rows = None if whole else slice(piece.first_row, piece.first_row + piece.num_rows)
        try:
            shards.get(source.shard).read_frames_into(source.local_index, out, rows)
        except Exception as err:  # noqa: BLE001 - reported to the main process with the record at fault
            raise ReadFailed(read_failure_message(source, err), isinstance(err, ShardFormatError)) from err


@dataclass(frozen=True)
class UnitTask:
    """One unit to read into `slot`. `generation` numbers the UnitReader that sent it: a reader
    closes the shard files it kept open for an earlier one (they may have been rewritten since)."""

    generation: int
    slot: int
    reads: tuple[PieceRead, ...]


class UnitReadJob:
    """The read function of evaluation's readers: UnitTask -> None, the unit read into its slot.

    It holds no test set (each task brings its pieces), so one pool of readers serves every
    UnitReader of the same slot layout, one after the other."""

    def __init__(self) -> None:
        self._generation: int | None = None

    def __call__(self, shards: OpenShards, views: dict[str, np.ndarray], task: UnitTask) -> None:
        if task.generation != self._generation:
            shards.close()
            self._generation = task.generation
        read_unit_into(shards, task.reads, views["frames"][task.slot])


# The reader pool of the last UnitReader, kept for the next one of the same layout: scoring
# several models (a checkpoint and its starting model) then starts its readers and maps its
# shared block once, not once per model (about 0.3 s each time, against 4 s of scoring for the
# bench's 38,400 frames). One pool at most; it closes with the interpreter.
_spare_pool: tuple[tuple, ReaderPool] | None = None
_generations = itertools.count()


def _take_pool(layout: SlotLayout, num_readers: int) -> ReaderPool:
    global _spare_pool
    key = (layout, num_readers)
    if _spare_pool is not None:
        spare_key, pool = _spare_pool
        _spare_pool = None
        if spare_key == key and pool.idle():
            return pool
        pool.close()
    return ReaderPool(layout.arrays(), UnitReadJob(), num_readers=num_readers, what="evaluation reader",
                      advice="rerun with --readers 0 to read in the main process and see the error")


def _give_back_pool(layout: SlotLayout, num_readers: int, pool: ReaderPool) -> None:
    """Keep `pool` for the next UnitReader if its readers are alive and owe no reply; else close it."""
    global _spare_pool
    if num_readers == 0 or not pool.idle():
        pool.close()
        return
    if _spare_pool is not None:
        _spare_pool[1].close()
    _spare_pool = ((layout, num_readers), pool)


class UnitReader:
    """Reads `units` into the slots of a shared block, `num_readers` processes ahead of the consumer.

    Each reader owns its own slots (two, or three for a single reader), so every page of the
    block is mapped by one reader only: first touches of fresh shared memory are slow (page
    faults), and slots shared by all readers would be faulted in by each of them.

    Iterate to get (unit_number, slot_index) in completion order; the frames are in
    `self.slots[slot_index, :units[unit_number].num_rows]`. Call `release(slot_index)` once the
    slot's frames are no longer needed (after the GPU copy finished), so it can be refilled.
    With `num_readers=0` the units are read in this process (debugging, tiny sets). Closing
    keeps the reader processes for the next UnitReader of the same layout (`_give_back_pool`).
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
        self._pool = _take_pool(self.layout, self.num_readers)
        self._generation = next(_generations)
        self.slots = self._pool.views["frames"]
        self._free: list[int] = list(range(num_slots))
        self._next_unit = 0
        self._submit()  # reading starts now, while the caller still prepares (e.g. embeds its prompts)

    def release(self, slot: int) -> None:
        self._free.append(slot)
        self._submit()

    def _submit(self) -> None:
        while self._free and self._next_unit < len(self.units):
            slot = self._free.pop(0)  # oldest free first: spreads the units over the readers
            reader = slot // self.slots_per_reader if self.num_readers else None
            reads = tuple(PieceRead(self.sources[piece.source_number], piece) for piece in self.units[self._next_unit].pieces)
            task = UnitTask(self._generation, slot, reads)
            self._pool.submit((self._next_unit, slot), task, reader=reader)
            self._next_unit += 1

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self._submit()
        for _ in range(len(self.units)):
            yield self._next_result()

    def _next_result(self) -> tuple[int, int]:
        """The next finished (unit, slot); a damaged shard raises ShardFormatError naming its record."""
        try:
            (unit_number, slot), _ = self._pool.next_result()
        except ReadFailed as err:
            if err.damaged_shard:  # the message names the shard, record and video, and how to rebuild it
                raise ShardFormatError(str(err)) from None
            raise RuntimeError(f"reading test frames failed: {err}") from None
        return unit_number, slot

    def close(self) -> None:
        """Hand the readers and the shared block on to the next UnitReader, or stop and free them
        (drop every view of `slots` first: the block is rewritten or freed)."""
        del self.slots
        pool, self._pool = self._pool, None
        if pool is not None:
            _give_back_pool(self.layout, self.num_readers, pool)

    def __enter__(self) -> "UnitReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
