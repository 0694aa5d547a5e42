"""The training loader: right records, frames and boxes; deterministic shuffles; disjoint ranks;
frame subsampling; augmentation that moves boxes with the pixels; damaged shards reported."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fgclip.train.augment import CropFlip, crop_flip_boxes, crop_flip_frames, sample_crop_flip
from fgclip.train.batch import check_micro_batch
from fgclip.train.loader import LoaderError, ShardLoader, epoch_positions
from fgclip.train.loader_worker import subsample_rows
from fgclip.models.clip_video import FGCLIPVideo
from fgclip.models.text import LONG_TEXT_LENGTH, SHORT_TEXT_LENGTH, caption_key, load_tokenizer, tokenize
from pipeline.shards import ShardReader, list_shards
from train_data import BACKGROUND, write_square_shards

REPO_ROOT = Path(__file__).resolve().parent.parent
NUM_RECORDS = 10
STORED_FRAMES = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(model_dir):
    return FGCLIPVideo.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return load_tokenizer(model_dir)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    return write_square_shards(tmp_path_factory.mktemp("shards"), num_records=NUM_RECORDS, num_frames=STORED_FRAMES)


def records_by_index(shard_dir):
    out = {}
    for path in list_shards(shard_dir):
        with ShardReader(path) as reader:
            for i in range(reader.num_records):
                record = reader.read_record(i)
                out[record.record_index] = record
    return out


def make_loader(shard_dir, model, tokenizer, **kwargs):
    options = dict(model=model, tokenizer=tokenizer, batch_size=3, num_frames=4, num_workers=2, device="cpu", seed=7)
    options.update(kwargs)
    return ShardLoader(shard_dir, **options)


def test_subsample_rows_keeps_uniform_centres():
    assert subsample_rows(8, 4).tolist() == [1, 3, 5, 7]
    assert subsample_rows(64, 16).tolist() == list(range(2, 64, 4))
    assert subsample_rows(256, 128).tolist() == list(range(1, 256, 2))
    assert subsample_rows(256, 256).tolist() == list(range(256))
    rows = subsample_rows(256, 100)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0) and rows[0] >= 0 and rows[-1] <= 255
    with pytest.raises(ValueError):
        subsample_rows(64, 128)


def test_batches_carry_the_right_records_frames_boxes_and_captions(shard_dir, model, tokenizer):
    records = records_by_index(shard_dir)
    rows = subsample_rows(STORED_FRAMES, 4)
    seen = []
    with make_loader(shard_dir, model, tokenizer) as loader:
        assert len(loader) == NUM_RECORDS // 3  # drop_last
        expected_order = loader.batch_positions(0)
        batches = list(loader)
    assert len(batches) == 3
    for batch, positions in zip(batches, expected_order):
        sizes = check_micro_batch(batch)  # every key, dtype and shape of the contract
        assert (sizes["B"], sizes["T"], sizes["S"]) == (3, 4, model.image_size)
        assert batch["record_index"].tolist() == [loader.metas[p].record_index for p in positions]
        for b, index in enumerate(batch["record_index"].tolist()):
            record = records[index]
            seen.append(index)
            # the subsampled stored frames, preprocessed by the model itself
            assert torch.equal(batch["pixels"][b], model.preprocess(torch.from_numpy(record.frames_uint8[rows])))
            r = record.num_regions
            assert torch.equal(batch["boxes"][b, :r], torch.from_numpy(record.boxes[:, rows]))
            assert torch.equal(batch["box_mask"][b, :r], torch.from_numpy(record.box_mask[:, rows]))
            assert batch["region_valid"][b].tolist() == [True] * r + [False] * (batch["boxes"].shape[1] - r)
            # token ids, cut after the batch's longest caption (only padding is cut)
            assert_cut_padding(batch["global_ids"][b], tokenize(tokenizer, [record.global_caption], LONG_TEXT_LENGTH)[0], tokenizer)
            assert batch["global_key"][b].item() == caption_key(record.global_caption)
            assert_cut_padding(batch["region_ids"][b, :r], tokenize(tokenizer, record.region_captions, SHORT_TEXT_LENGTH), tokenizer)
            negatives = record.hard_negatives[0]
            assert batch["negative_valid"][b, 0].sum().item() == len(negatives)
            if negatives:
                assert_cut_padding(batch["negative_ids"][b, 0, : len(negatives)],
                                   tokenize(tokenizer, negatives, SHORT_TEXT_LENGTH), tokenizer)
            assert batch["negative_ids"].shape[-1] == batch["region_ids"].shape[-1]
        assert batch["pixels"].shape == (3, 4, 3, model.image_size, model.image_size)
        assert batch["pixels"].dtype == torch.float32 and batch["boxes"].dtype == torch.float32
        assert batch["global_ids"].shape[0] == 3 and batch["global_ids"].shape[1] < LONG_TEXT_LENGTH
        assert batch["region_ids"].shape[-1] < SHORT_TEXT_LENGTH
        # the cut changes no text embedding: the text encoder is causal and pools at the end token
        with torch.no_grad():
            cut = model.encode_text(batch["global_ids"], "long")
            full = model.encode_text(tokenize(tokenizer, [records[i].global_caption for i in batch["record_index"].tolist()],
                                              LONG_TEXT_LENGTH), "long")
        torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)
    assert len(set(seen)) == 9  # 9 distinct records: one epoch without repeats, one left over


def assert_cut_padding(cut: torch.Tensor, full: torch.Tensor, tokenizer) -> None:
    width = cut.shape[-1]
    assert torch.equal(cut, full[..., :width])
    assert torch.all(full[..., width:] == tokenizer.pad_token_id)
    assert torch.all((cut == tokenizer.eos_token_id).any(-1))  # every caption keeps its end token


def test_in_process_reading_gives_the_same_batches(shard_dir, model, tokenizer):
    with make_loader(shard_dir, model, tokenizer, num_workers=0) as local, make_loader(shard_dir, model, tokenizer) as workers:
        for a, b in zip(local, workers):
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_epochs_reshuffle_deterministically_and_resume_mid_epoch(shard_dir, model, tokenizer):
    first = [p.tolist() for p in make_loader(shard_dir, model, tokenizer, num_workers=0).batch_positions(0)]
    second = [p.tolist() for p in make_loader(shard_dir, model, tokenizer, num_workers=0).batch_positions(1)]
    assert first != second
    again = make_loader(shard_dir, model, tokenizer, num_workers=0)
    assert [p.tolist() for p in again.batch_positions(0)] == first
    other_seed = make_loader(shard_dir, model, tokenizer, num_workers=0, seed=8)
    assert [p.tolist() for p in other_seed.batch_positions(0)] != first
    with make_loader(shard_dir, model, tokenizer, num_workers=1) as loader:
        loader.set_epoch(1)
        full = [b["record_index"].tolist() for b in loader]
        loader.set_epoch(1, start_batch=1)
        tail = [b["record_index"].tolist() for b in loader]
        assert tail == full[1:]
        assert [b["record_index"].tolist() for b in loader] == full  # start_batch applies once
        loader.set_epoch(0)
        assert [b["record_index"].tolist() for b in loader] == [[loader.metas[p].record_index for p in ps] for ps in first]


def test_windows_end_with_each_epoch_and_resume_from_the_state_dict(shard_dir, model, tokenizer):
    """3 micro-batches per epoch in windows of 2: 2 + 1 per epoch; the position after each window
    is where a resumed loader goes on."""
    with make_loader(shard_dir, model, tokenizer, num_workers=0) as loader:
        per_epoch = [[[loader.metas[p].record_index for p in ps] for ps in loader.batch_positions(e)] for e in range(2)]
        windows = loader.windows(2)
        got, states = [], []
        for _ in range(4):
            got.append([b["record_index"].tolist() for b in next(windows)])
            states.append(loader.state_dict())
        windows.close()
    assert got == [per_epoch[0][:2], per_epoch[0][2:], per_epoch[1][:2], per_epoch[1][2:]]
    assert states == [{"epoch": 0, "batch_in_epoch": 2}, {"epoch": 1, "batch_in_epoch": 0},
                      {"epoch": 1, "batch_in_epoch": 2}, {"epoch": 2, "batch_in_epoch": 0}]
    with make_loader(shard_dir, model, tokenizer, num_workers=0) as resumed:
        resumed.load_state_dict(states[0])
        assert resumed.epochs_done() == pytest.approx(2 / 3)
        windows = resumed.windows(2)
        assert [[b["record_index"].tolist() for b in next(windows)] for _ in range(2)] == got[1:3]
        windows.close()


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_disjoint_equal_parts(world_size):
    for epoch in range(3):
        parts = [epoch_positions(NUM_RECORDS, seed=1, epoch=epoch, rank=r, world_size=world_size, drop_last=True)
                 for r in range(world_size)]
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) == NUM_RECORDS // world_size
        flat = np.concatenate(parts)
        assert len(set(flat.tolist())) == len(flat)
        padded = [epoch_positions(NUM_RECORDS, seed=1, epoch=epoch, rank=r, world_size=world_size, drop_last=False)
                  for r in range(world_size)]
        assert set(np.concatenate(padded).tolist()) == set(range(NUM_RECORDS))
        assert len({len(p) for p in padded}) == 1


def test_rank_loaders_read_disjoint_records(shard_dir, model, tokenizer):
    seen = []
    for rank in range(2):
        with make_loader(shard_dir, model, tokenizer, batch_size=2, num_workers=1, rank=rank, world_size=2) as loader:
            assert len(loader) == 2
            seen.append({i for b in loader for i in b["record_index"].tolist()})
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == 4


def test_flip_maps_a_drawn_box_onto_the_flipped_drawing():
    frame = np.zeros((1, 20, 30, 3), dtype=np.uint8)
    box = torch.tensor([[[0.1, 0.25, 0.4, 0.75]]])  # x1 3..12, y1 5..15
    frame[0, 5:15, 3:12] = 255
    for params in (CropFlip(0, 0, 20, 30, True), CropFlip(2, 4, 16, 20, True), CropFlip(4, 0, 12, 15, False)):
        out = crop_flip_frames(torch.from_numpy(frame), params)[0].numpy()
        new_box, visible = crop_flip_boxes(box, torch.ones(1, 1, dtype=torch.bool), params, 20, 30)
        assert visible.item()
        x1, y1, x2, y2 = new_box[0, 0].tolist()
        height, width = out.shape[:2]
        drawn = np.argwhere(out[..., 0] == 255)
        assert drawn[:, 1].min() == round(x1 * width) and drawn[:, 1].max() + 1 == round(x2 * width)
        assert drawn[:, 0].min() == round(y1 * height) and drawn[:, 0].max() + 1 == round(y2 * height)
    # a crop that misses the box hides it on that frame
    hidden_box, hidden = crop_flip_boxes(box, torch.ones(1, 1, dtype=torch.bool), CropFlip(0, 15, 20, 15, False), 20, 30)
    assert not hidden.item() and torch.all(hidden_box == 0)


def test_augmented_batches_keep_boxes_on_the_square(shard_dir, model, tokenizer):
    """Random crops and flips of whole videos: the box still covers the coloured square."""
    mean = model.image_mean[None, :, None, None]
    std = model.image_std[None, :, None, None]
    generator = torch.Generator().manual_seed(0)
    assert len({sample_crop_flip(generator, 32, 32) for _ in range(20)}) > 10
    flips = 0
    with make_loader(shard_dir, model, tokenizer, augment=True, num_frames=8) as loader:
        for epoch in range(2):
            loader.set_epoch(epoch)
            for batch in loader:
                for b in range(batch["pixels"].shape[0]):
                    pixels = (batch["pixels"][b] * std + mean) * 255  # (T, 3, S, S)
                    size = pixels.shape[-1]
                    for t in range(pixels.shape[0]):
                        if not batch["box_mask"][b, 0, t]:
                            continue
                        x1, y1, x2, y2 = (batch["boxes"][b, 0, t] * size).tolist()
                        inner = pixels[t, :, math.ceil(y1) + 1 : math.floor(y2) - 1, math.ceil(x1) + 1 : math.floor(x2) - 1]
                        assert inner.numel() > 0
                        # inside the box: the square's colour, far from the grey background
                        assert (inner - BACKGROUND).abs().amax(dim=0).float().mean() > 60
                    # the square moves right on even records: a flip reverses its track
                    track = batch["boxes"][b, 0, :, 0]
                    moving_right = batch["record_index"][b].item() % 2 == 0
                    flips += int((track[-1] > track[0]).item() != moving_right)
        # identical augmentation for identical (seed, epoch, batch)
        loader.set_epoch(1)
        again = list(loader)
    assert flips > 0
    assert torch.equal(again[-1]["pixels"], batch["pixels"]) and torch.equal(again[-1]["boxes"], batch["boxes"])


def _damage_record(shard_path, record: int) -> None:
    """Flip bytes inside one record's frame chunk on disk (Fletcher-32 will catch it)."""
    with h5py.File(shard_path, "r") as f:
        offset = f["frames"].id.get_chunk_info(record).byte_offset
    with open(shard_path, "r+b") as handle:
        handle.seek(offset + 100)
        data = bytearray(handle.read(16))
        handle.seek(offset + 100)
        handle.write(bytes(b ^ 0xFF for b in data))


def test_damaged_record_stops_with_its_name_or_is_skipped(tmp_path, model, tokenizer, caplog):
    shards = write_square_shards(tmp_path / "shards", num_records=6, num_frames=4, records_per_shard=3)
    damaged = list_shards(shards)[1]
    _damage_record(damaged, 1)  # record_index 4
    with make_loader(shards, model, tokenizer, batch_size=2, num_frames=4) as loader:
        with pytest.raises(LoaderError) as info:
            for _ in range(2):
                loader.set_epoch(_)
                list(loader)
    message = str(info.value)
    assert str(damaged) in message and "record 1" in message and "fgclip-vad frames" in message
    with caplog.at_level(logging.WARNING, logger="fgclip.train.loader"):
        with make_loader(shards, model, tokenizer, batch_size=2, num_frames=4, skip_damaged=True) as loader:
            indices = []
            for epoch in range(3):
                loader.set_epoch(epoch)
                indices += [i for b in loader for i in b["record_index"].tolist()]
    assert 4 not in indices and len(indices) == 18
    assert any(str(damaged) in r.getMessage() for r in caplog.records)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_equal_cpu_batches(shard_dir, model, tokenizer):
    """Pinned shared slots, side-stream copies and GPU preprocessing give the CPU path's batches."""
    gpu_model = model.to("cuda")
    try:
        with make_loader(shard_dir, gpu_model, tokenizer, device="cuda") as gpu_loader:
            gpu_batches = [{k: v.cpu() for k, v in b.items()} for b in gpu_loader]
            assert gpu_loader._ring.pinned
    finally:
        model.to("cpu")
    with make_loader(shard_dir, model, tokenizer) as cpu_loader:
        for g, c in zip(gpu_batches, cpu_loader):
            for key in c:
                if key == "pixels":
                    torch.testing.assert_close(g[key], c[key], atol=1e-5, rtol=1e-5)
                else:
                    assert torch.equal(g[key], c[key]), key


def test_plain_script_without_main_guard_and_no_orphans(shard_dir, model_dir, tmp_path):
    """Workers are fresh `python -m fgclip.reader_pool` processes: a script needs no
    `if __name__ == "__main__"` guard, and workers exit when the trainer dies abruptly."""
    script = tmp_path / "plain_script.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from fgclip.train.loader import ShardLoader
        from fgclip.models.clip_video import FGCLIPVideo
        from fgclip.models.text import load_tokenizer

        model = FGCLIPVideo.from_pretrained({str(model_dir)!r})
        loader = ShardLoader({str(shard_dir)!r}, model=model, tokenizer=load_tokenizer({str(model_dir)!r}),
                             batch_size=2, num_frames=4, num_workers=2, device="cpu", seed=0)
        batches = iter(loader)
        print(next(batches)["record_index"].tolist(), flush=True)
        print(" ".join(str(w.proc.pid) for w in loader._ring.pool.workers), flush=True)
        os._exit(0)  # no cleanup at all, like a crash
    """))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(json.loads(lines[0])) == 2
    pids = [int(p) for p in lines[1].split()]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
