"""The training data loader: HDF5 shards -> micro-batches on the training device.

    worker processes ──read whole records──> shared host slots (pinned once, in this process)
    main process ──uint8 copy on a side stream, a few batches ahead──> GPU
                 ──model.preprocess + augmentation on the GPU──> a `fgclip.train.batch.MicroBatch`

Decoding happened once in stage 1, so a step costs a memory copy per frame. Workers are the
reader processes of `fgclip.reader_pool` (fresh interpreters: no CUDA context or open HDF5 file
is ever inherited) running `fgclip.train.loader_worker`'s read function. Captions are tokenised once
for all records and looked up on the device per batch.

Each epoch shuffles the records from (seed, epoch); each rank takes a disjoint, equally long
part, so all ranks run the same number of steps. `set_epoch(epoch, start_batch)` positions the
loader exactly where a checkpoint left it. Reading runs ahead into the next epoch, so an epoch
boundary costs no refill.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from fgclip.train.augment import crop_flip_boxes, crop_flip_frames, sample_crop_flip
from fgclip.train.batch import MicroBatch
from fgclip.train.loader_worker import SlotLayout, TrainingReadJob
from fgclip.train.presets import FRAME_SELECTIONS
from fgclip.reader_pool import ReaderPool, ReadFailed, RecordSource
from fgclip.models.text import CLIP_TEXT_RULES, TextRules, caption_key
from pipeline.shards import RecordMeta, ShardFormatError, ShardReader, ShardVersionError, list_shards
from pipeline.ucf_split import video_key

log = logging.getLogger(__name__)

class LoaderError(RuntimeError):
    """Reading the training data failed; the message names the shard, record and remedy."""


@dataclass(frozen=True)
class CaptionTables:
    """Token ids and keys of every record, indexed by dataset position (kept on the device),
    and on the host the token count of each record's longest caption of each kind."""

    global_ids: torch.Tensor  # (N, 248)
    global_key: torch.Tensor  # (N,)
    region_ids: torch.Tensor  # (N, Rmax, 77)
    region_key: torch.Tensor  # (N, Rmax)
    region_count: torch.Tensor  # (N,)
    negative_ids: torch.Tensor  # (N, Rmax, Kmax, 77)
    negative_valid: torch.Tensor  # (N, Rmax, Kmax)
    record_index: torch.Tensor  # (N,)
    global_tokens: np.ndarray  # (N,) tokens of the global caption, end token included
    short_tokens: np.ndarray  # (N,) tokens of the record's longest region caption or negative

    def to(self, device) -> "CaptionTables":
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return CaptionTables(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in values.items()})


def token_counts(ids: torch.Tensor, tokenizer) -> np.ndarray:
    """Tokens up to and including the end token of each row of (..., L) ids.

    CLIP pads with its end token, so the first end token ends the caption; with another padding
    token, the last non-padding token does.
    """
    if ids.shape[-1] == 0:
        return np.zeros(ids.shape[:-1], dtype=np.int64)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    positions = torch.arange(1, ids.shape[-1] + 1)
    if pad is not None and pad == eos:
        is_end = ids == eos
        first_end = torch.where(is_end.any(-1), is_end.int().argmax(-1) + 1, torch.full(ids.shape[:-1], ids.shape[-1]))
        return first_end.numpy()
    if pad is None:
        return np.full(ids.shape[:-1], ids.shape[-1], dtype=np.int64)
    return ((ids != pad) * positions).amax(-1).numpy()


def build_caption_tables(metas: list[RecordMeta], tokenizer, rules: TextRules = CLIP_TEXT_RULES) -> CaptionTables:
    """Tokenise all captions once with the model family's `rules`: global captions as long texts
    (CLIP 248, FG-CLIP 2 196 tokens), regions and negatives as box texts (77 / 64)."""
    n = len(metas)
    r_max = max(1, max(len(m.region_captions) for m in metas))
    k_max = max((len(neg) for m in metas for neg in m.hard_negatives), default=0)
    box_length = rules.length("box")
    global_ids = rules.ids(tokenizer, [m.global_caption for m in metas], "long")
    region_ids = torch.zeros((n, r_max, box_length), dtype=torch.long)
    region_key = torch.zeros((n, r_max), dtype=torch.long)
    negative_ids = torch.zeros((n, r_max, k_max, box_length), dtype=torch.long)
    negative_valid = torch.zeros((n, r_max, k_max), dtype=torch.bool)
    for i, meta in enumerate(metas):
        r = len(meta.region_captions)
        if r:
            region_ids[i, :r] = rules.ids(tokenizer, list(meta.region_captions), "box")
            region_key[i, :r] = torch.tensor([caption_key(c) for c in meta.region_captions], dtype=torch.long)
        for j, negatives in enumerate(meta.hard_negatives):
            if negatives:
                negative_ids[i, j, : len(negatives)] = rules.ids(tokenizer, list(negatives), "box")
                negative_valid[i, j, : len(negatives)] = True
    return CaptionTables(
        global_ids=global_ids,
        global_key=torch.tensor([caption_key(m.global_caption) for m in metas], dtype=torch.long),
        region_ids=region_ids,
        region_key=region_key,
        region_count=torch.tensor([len(m.region_captions) for m in metas], dtype=torch.long),
        negative_ids=negative_ids,
        negative_valid=negative_valid,
        record_index=torch.tensor([m.record_index for m in metas], dtype=torch.long),
        global_tokens=token_counts(global_ids, tokenizer),
        short_tokens=np.maximum(
            _masked_max(token_counts(region_ids, tokenizer), np.arange(r_max) < np.array([len(m.region_captions) for m in metas])[:, None]),
            _masked_max(token_counts(negative_ids, tokenizer).reshape(n, -1), negative_valid.reshape(n, -1).numpy()),
        ),
    )


def _masked_max(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise max of `values` where `mask` (0 for rows with nothing)."""
    if values.shape[1] == 0:
        return np.zeros(values.shape[0], dtype=np.int64)
    return np.where(mask, values, 0).max(axis=1)


def read_training_metas(shard_dir: os.PathLike | str, max_records: int | None = None, *,
                        skip_damaged: bool = False) -> tuple[list[RecordMeta], tuple[int, int]]:
    """All records of a uniform (training) shard directory in manifest order, and the frame size.

    `max_records` keeps the first records only (the debug preset's "first 10 videos"). A damaged
    shard or record raises ShardFormatError naming it, or with `skip_damaged` is left out with a
    logged warning.
    """
    metas: list[RecordMeta] = []
    size: tuple[int, int] | None = None
    for path in list_shards(shard_dir):
        try:
            reader = ShardReader(path)
        except ShardFormatError as err:
            if not skip_damaged or isinstance(err, ShardVersionError):  # old shards are not damaged: rebuild them
                raise
            log.warning("skipping a damaged shard (--skip-damaged): %s", err)
            continue
        with reader:
            if reader.attrs.sampling != "uniform":
                raise ShardFormatError(
                    f"{path}: {reader.attrs.sampling} sampling (test shards); training needs uniformly "
                    f"sampled shards, e.g. data/shards/train_t256 from `fgclip-vad frames`"
                )
            this_size = (reader.attrs.height, reader.attrs.width)
            if size is not None and this_size != size:
                raise ShardFormatError(f"{path}: frames of {this_size} px, earlier shards of {shard_dir} hold {size}")
            size = this_size
            try:
                metas.extend(reader.metas(skip_damaged=skip_damaged))
            except ShardFormatError as err:
                if not skip_damaged:
                    raise
                log.warning("skipping a damaged shard (--skip-damaged): %s", err)
            for message in reader.damaged.values():
                log.warning("skipping a damaged record (--skip-damaged): %s", message)
        if max_records is not None and len(metas) >= max_records:
            break
    if max_records is not None:
        metas = metas[:max_records]
    if not metas or size is None:
        raise ShardFormatError(f"{shard_dir}: no training records in the shards")
    return metas, size


def epoch_positions(num_records: int, *, seed: int, epoch: int, rank: int, world_size: int, drop_last: bool) -> np.ndarray:
    """This rank's dataset positions for `epoch`, in reading order.

    One permutation from (seed, epoch) is cut into `world_size` disjoint parts of equal length
    (the remainder is dropped for training; without drop_last it is padded by wrapping around so
    that every rank still runs the same number of batches).
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_records)
    if drop_last:
        per_rank = num_records // world_size
    else:
        per_rank = -(-num_records // world_size)
        order = np.resize(order, per_rank * world_size)
    return order[rank * per_rank : (rank + 1) * per_rank]


class ShardLoader:
    """Iterable of training micro-batches (`fgclip.train.batch.MicroBatch`: dicts of device tensors).

    Records are read by `num_workers` processes (0 = read in this process, for debugging) into
    `prefetch` + `num_workers` + 1 shared slots; batches are copied to the device `prefetch`
    batches ahead. `data_wait_s` accumulates the time the consumer waited for data.
    """

    def __init__(
        self,
        shard_dir,
        *,
        model,
        tokenizer,
        batch_size: int,
        num_frames: int,
        num_workers: int,
        device,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = False,
        prefetch: int = 3,
        drop_last: bool = True,
        max_records: int | None = None,
        skip_damaged: bool = False,
        exclude_videos: frozenset[str] | set[str] = frozenset(),
        frame_selection: str = "uniform",
    ):
        if frame_selection not in FRAME_SELECTIONS:
            raise ValueError(f"frame_selection must be one of {', '.join(FRAME_SELECTIONS)}, not {frame_selection!r}")
        if batch_size < 1 or num_frames < 1 or num_workers < 0 or prefetch < 1:
            raise ValueError(
                f"batch_size ({batch_size}), num_frames ({num_frames}) and prefetch ({prefetch}) must be >= 1, "
                f"num_workers ({num_workers}) >= 0"
            )
        self.shard_dir = Path(shard_dir)
        self.metas, (self.frame_height, self.frame_width) = read_training_metas(shard_dir, max_records,
                                                                                skip_damaged=skip_damaged)
        if exclude_videos:  # a validation split: every record of a held-out video goes
            self.metas = [m for m in self.metas if video_key(m.video) not in exclude_videos]
        stored = min(m.num_frames for m in self.metas)
        if num_frames > stored:
            raise ShardFormatError(
                f"{shard_dir}: records store {stored} frames, {num_frames} asked; use shards with at least "
                f"{num_frames} frames (e.g. `fgclip-vad frames --num-frames {num_frames}`) or ask for fewer frames"
            )
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.num_workers = num_workers
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.augment = augment
        self.prefetch = prefetch
        self.drop_last = drop_last
        self.skip_damaged = skip_damaged
        self.frame_selection = frame_selection  # uniform subset, or a random clip per epoch (loader_worker)
        self.data_wait_s = 0.0
        self.epoch = 0
        self.start_batch = 0
        self._preprocess: Callable[[torch.Tensor], torch.Tensor] = model.preprocess

        per_rank = len(epoch_positions(len(self.metas), seed=seed, epoch=0, rank=rank, world_size=world_size, drop_last=drop_last))
        self._num_batches = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
        if self._num_batches == 0:
            raise ValueError(
                f"{shard_dir}: {len(self.metas)} records over {world_size} rank(s) in batches of {batch_size} "
                f"leave no full batch; use a smaller batch size or more records"
            )
        self.sources = tuple(
            RecordSource(m.shard, m.local_index, m.num_frames, len(m.region_captions), m.video) for m in self.metas
        )
        self.full_length_text = model.text_rules.full_length
        self.tables = build_caption_tables(self.metas, tokenizer, model.text_rules).to(self.device)
        self._region_count = np.array([len(m.region_captions) for m in self.metas])
        self._negative_count = np.array([max((len(n) for n in m.hard_negatives), default=0) for m in self.metas])
        self.layout = SlotLayout(
            num_slots=prefetch + max(num_workers, 1) + 1,
            batch_size=batch_size,
            num_frames=num_frames,
            height=self.frame_height,
            width=self.frame_width,
            region_slots=int(self.tables.region_ids.shape[1]),
        )
        self._ring: _SlotRing | None = None
        self._warned_skips: set[int] = set()

    # --- public -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Micro-batches per epoch for this rank (a resumed epoch yields len - start_batch)."""
        return self._num_batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Shuffle for `epoch` and start at its batch `start_batch` (resuming mid-epoch)."""
        if not 0 <= start_batch <= self._num_batches:
            raise ValueError(f"start_batch {start_batch} outside 0..{self._num_batches}")
        self.epoch = epoch
        self.start_batch = start_batch

    def batch_positions(self, epoch: int) -> list[np.ndarray]:
        """The dataset positions of each micro-batch of `epoch` on this rank."""
        positions = epoch_positions(
            len(self.metas), seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size, drop_last=self.drop_last
        )
        return [positions[i * self.batch_size : (i + 1) * self.batch_size] for i in range(self._num_batches)]

    def __iter__(self) -> Iterator[MicroBatch]:
        """The micro-batches of epoch `epoch` from `start_batch` (which applies once)."""
        epoch, first = self.epoch, self.start_batch
        self.start_batch = 0  # the next epoch starts from its beginning
        return self._batches(epoch, first)

    def _batches(self, epoch: int, first: int) -> Iterator[MicroBatch]:
        if self._ring is None:
            self._ring = _SlotRing(self)
        return self._ring.run(self.batch_positions(epoch), first, epoch)

    def windows(self, grad_accum: int) -> Iterator[list[MicroBatch]]:
        """The optimizer steps' windows of `grad_accum` micro-batches, epoch after epoch without
        end, from the current position (`set_epoch`, `load_state_dict`).

        The last window of an epoch holds the micro-batches left (a window never spans two
        epochs), so every epoch has `ceil(len / grad_accum)` windows. The position moves on as
        each window is handed out: `state_dict()` while a window is being used is where the next
        one starts, which is what a checkpoint written after its step must record. Close the
        iterator when done (a `for` loop that breaks leaves that to the garbage collector).
        """
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        while True:
            if self.start_batch == self._num_batches:  # a position at an epoch's very end
                self.set_epoch(self.epoch + 1, 0)
            epoch, batch_in_epoch = self.epoch, self.start_batch
            batches = self._batches(epoch, batch_in_epoch)
            window: list[MicroBatch] = []
            try:
                for batch in batches:
                    window.append(batch)
                    batch_in_epoch += 1
                    epoch_done = batch_in_epoch == self._num_batches
                    if len(window) < grad_accum and not epoch_done:
                        continue
                    self.set_epoch(*((epoch + 1, 0) if epoch_done else (epoch, batch_in_epoch)))
                    yield window
                    window = []
            finally:
                batches.close()

    def state_dict(self) -> dict[str, int]:
        """The data position: the epoch and the micro-batch in it that reading continues from."""
        return {"epoch": self.epoch, "batch_in_epoch": self.start_batch}

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(int(state["epoch"]), int(state["batch_in_epoch"]))

    def epochs_done(self) -> float:
        """Epochs done at the current position, with the fraction of the epoch in progress."""
        return self.epoch + self.start_batch / self._num_batches

    def close(self) -> None:
        """Stop the workers and free the shared buffers (also done at exit)."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def __enter__(self) -> "ShardLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- building a batch on the device ---------------------------------------------------------

    def _finish_batch(
        self,
        frames_uint8: torch.Tensor,
        boxes: torch.Tensor,
        box_mask: torch.Tensor,
        positions_host: list[int],
        positions: torch.Tensor,
        epoch: int,
        batch_number: int,
    ) -> MicroBatch:
        """Device uint8 frames + boxes of one batch -> the micro-batch (preprocessed, augmented)."""
        regions = max(1, int(self._region_count[positions_host].max()))
        negatives = int(self._negative_count[positions_host].max())
        boxes = boxes[:, :regions]
        box_mask = box_mask[:, :regions]
        if self.augment:
            generator = torch.Generator().manual_seed(
                int(np.random.default_rng([self.seed, epoch, batch_number, self.rank]).integers(2**62))
            )
            pixels, new_boxes, new_mask = [], [], []
            for b in range(frames_uint8.shape[0]):
                params = sample_crop_flip(generator, self.frame_height, self.frame_width)
                pixels.append(self._preprocess(crop_flip_frames(frames_uint8[b], params)))
                bx, mk = crop_flip_boxes(boxes[b], box_mask[b], params, self.frame_height, self.frame_width)
                new_boxes.append(bx)
                new_mask.append(mk)
            pixel_batch = torch.stack(pixels)
            boxes, box_mask = torch.stack(new_boxes), torch.stack(new_mask)
        else:
            pixel_batch = self._preprocess(frames_uint8)
        t = self.tables
        # Token ids are cut after the batch's longest caption: the text encoder is causal and pools
        # at the end token, so the padding after it cannot change an embedding, only cost compute
        # (a 248-position global caption is mostly padding).
        # A family that pools at the last position (SigLIP 2) keeps the full length.
        long_width = t.global_ids.shape[1] if self.full_length_text else max(1, int(t.global_tokens[positions_host].max()))
        short_width = t.region_ids.shape[2] if self.full_length_text else max(1, int(t.short_tokens[positions_host].max()))
        region_valid = torch.arange(regions, device=positions.device) < t.region_count[positions].unsqueeze(1)
        return MicroBatch(
            pixels=pixel_batch,
            boxes=boxes.float(),
            box_mask=box_mask & region_valid.unsqueeze(-1),
            region_valid=region_valid,
            global_ids=t.global_ids[positions, :long_width],
            global_key=t.global_key[positions],
            region_ids=t.region_ids[positions, :regions, :short_width],
            region_key=t.region_key[positions, :regions],
            negative_ids=t.negative_ids[positions, :regions, :negatives, :short_width],
            negative_valid=t.negative_valid[positions, :regions, :negatives],
            record_index=t.record_index[positions],
        )

    def _report_skips(self, skipped: list[tuple[int, str]]) -> None:
        for position, message in skipped:
            if position not in self._warned_skips:
                self._warned_skips.add(position)
                log.warning("skipping a damaged record (--skip-damaged): %s", message)


Key = tuple[int, int]  # (epoch, batch number in the epoch)


@dataclass
class _PendingBatch:
    slot: int
    positions: list  # dataset position read into each row (None until its read is done)

    def complete(self) -> bool:
        return all(p is not None for p in self.positions)


class _SlotRing:
    """The shared slots (a `ReaderPool`'s block), the reads into them and the transfers out of them."""

    def __init__(self, loader: ShardLoader):
        self.loader = loader
        self.layout = loader.layout
        self.on_cuda = loader.device.type == "cuda"
        job = TrainingReadJob(loader.sources, self.layout.num_frames, loader.skip_damaged,
                              frame_selection=loader.frame_selection, seed=loader.seed)
        self.pool = ReaderPool(self.layout.arrays(), job, num_readers=loader.num_workers, pin=self.on_cuda,
                               what="loader worker", advice="lower --workers or the batch size, or check the system log")
        self.tensors = {name: torch.from_numpy(view) for name, view in self.pool.views.items()}
        self.copy_stream = torch.cuda.Stream(device=loader.device) if self.on_cuda else None
        self._active = False
        # The stream of batches, keyed (epoch, batch): read ahead across epoch boundaries, so
        # a new epoch starts with its first batches already in memory.
        self._free_slots: deque[int] = deque(range(self.layout.num_slots))
        self._release_events: dict[int, object] = {}  # slot -> CUDA event of the last copy out of it
        self._reading: dict[Key, _PendingBatch] = {}  # issued to workers, in issue order
        self._on_device: deque = deque()  # (key, tensors, positions_host, event), transfer order
        self._next_key: Key | None = None  # the next batch to issue
        self._plans: dict[int, list[np.ndarray]] = {}

    @property
    def pinned(self) -> bool:
        return self.pool.pinned is not None

    def close(self) -> None:
        self.tensors = {}
        self.pool.close()

    # --- the pipeline ---------------------------------------------------------------------------

    def run(self, plan: list[np.ndarray], first: int, epoch: int) -> Iterator[MicroBatch]:
        if self._active:
            raise RuntimeError("this loader is already being iterated; finish or close the previous epoch first")
        self._active = True
        try:
            self._plans = {epoch: plan, **{e: p for e, p in self._plans.items() if e == epoch + 1}}
            self._align((epoch, first))
            for batch in range(first, len(plan)):
                key, moved, positions_host, event = self._next_on_device()
                assert key == (epoch, batch), (key, epoch, batch)
                if event is not None:
                    current = torch.cuda.current_stream(self.loader.device)
                    current.wait_event(event)
                    for tensor in moved:
                        tensor.record_stream(current)
                out = self.loader._finish_batch(*moved[:3], positions_host, moved[3], epoch, batch)
                self._fill()
                yield out
        finally:
            self._active = False

    def _plan(self, epoch: int) -> list[np.ndarray]:
        if epoch not in self._plans:
            self._plans[epoch] = self.loader.batch_positions(epoch)
        return self._plans[epoch]

    def _following(self, key: Key) -> Key | None:
        """The batch after `key`: the next of its epoch, else the first of the next epoch."""
        epoch, batch = key
        if batch + 1 < len(self._plan(epoch)):
            return (epoch, batch + 1)
        return (epoch + 1, 0)

    def _align(self, first: Key) -> None:
        """Keep what was read ahead if it starts at `first`, else drop it (resume, seek)."""
        queued = [item[0] for item in self._on_device] + list(self._reading)
        if queued and queued[0] == first:
            return
        self._on_device.clear()
        for key in list(self._reading):
            while not self._reading[key].complete():
                self._collect()
            self._free_slots.append(self._reading.pop(key).slot)
        self._next_key = first
        self._fill()

    def _fill(self) -> None:
        """Issue reads into free slots, then move up to `prefetch` batches to the device."""
        self._issue()
        while len(self._on_device) < self.loader.prefetch and self._reading:
            self._transfer_next()
            self._issue()

    def _issue(self) -> None:
        current_epoch = min(self._plans)
        while self._free_slots and self._next_key is not None:
            key = self._next_key
            if key[0] > current_epoch + 1:
                return  # read ahead into the next epoch only
            slot = self._free_slots.popleft()
            event = self._release_events.pop(slot, None)
            if event is not None:
                event.synchronize()  # the copy out of this slot finished long ago, in practice
            positions = self._plan(key[0])[key[1]]
            self._reading[key] = _PendingBatch(slot, [None] * len(positions))
            for row, position in enumerate(positions):
                self._read(key, slot, row, int(position))
            self._next_key = self._following(key)

    def _next_on_device(self):
        if not self._on_device:
            self._transfer_next()
        return self._on_device.popleft()

    def _transfer_next(self) -> None:
        """Wait until the oldest issued batch is read, then start its copy to the device."""
        key = next(iter(self._reading))
        pending = self._reading[key]
        waited = time.perf_counter()
        while not pending.complete():
            self._collect()
        self.loader.data_wait_s += time.perf_counter() - waited
        del self._reading[key]
        slot, rows = pending.slot, len(pending.positions)
        host = tuple(self.tensors[name][slot, :rows] for name in ("frames", "boxes", "box_mask", "positions"))
        if self.on_cuda:
            with torch.cuda.stream(self.copy_stream):
                moved = tuple(t.to(self.loader.device, non_blocking=self.pinned) for t in host)
                event = torch.cuda.Event()
                event.record(self.copy_stream)
            self._release_events[slot] = event
        else:
            moved = tuple(t.clone() for t in host)
            event = None
        self._free_slots.append(slot)
        self._on_device.append((key, moved, pending.positions, event))

    def _read(self, key: Key, slot: int, row: int, position: int) -> None:
        self.pool.submit((key, row), (slot, row, position, key[0]))

    def _collect(self) -> None:
        """Wait for one read to finish and file it (raise on a read error)."""
        try:
            (key, row), (position, skipped) = self.pool.next_result()
        except ReadFailed as err:
            message = str(err)
            advice = "" if "fgclip-vad frames" in message else (
                " The shard is damaged: delete it and rerun `fgclip-vad frames` to rebuild it.")
            raise LoaderError(f"{message}{advice} Or pass --skip-damaged to train on without this record.") from None
        except RuntimeError as err:  # a worker died
            raise LoaderError(str(err)) from None
        if skipped:
            self.loader._report_skips(skipped)
        self._reading[key].positions[row] = position
