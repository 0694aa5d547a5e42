"""--batch-size auto: the micro-batch it picks changes speed and memory, never the step's math."""

from __future__ import annotations

import pytest
import torch

from fgclip.train.grad_cache import grad_cached_window
from fgclip.train.loader import ShardLoader
from fgclip.train.losses import LossWeights
from fgclip.models.clip_video import FGCLIPVideo
from fgclip.train.step_fit import micro_batch_choices, pick_fit
from fgclip.models.text import load_tokenizer
from train_data import write_square_shards

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GIB = 2**30
WINDOW = 4  # videos per optimizer step


def _first_window(shard_dir, model, tokenizer, batch_size: int) -> list[dict]:
    loader = ShardLoader(shard_dir, model=model, tokenizer=tokenizer, batch_size=batch_size, num_frames=3,
                         num_workers=0, device="cpu", seed=3)
    try:
        window = []
        for batch in loader:
            window.append({name: value.double() if value.is_floating_point() else value for name, value in batch.items()})
            if len(window) * batch_size == WINDOW:
                return window
    finally:
        loader.close()
    raise AssertionError("too few records for one window")


def test_micro_batch_1_2_4_give_the_same_loss_and_gradients(tmp_path, model_dir):
    """One optimizer step's window read by the real loader as 4 x 1, 2 x 2 and 1 x 4 videos: batches
    of different sizes pad regions, negatives and token widths differently, the result is equal."""
    shard_dir = write_square_shards(tmp_path / "shards", num_records=WINDOW, num_frames=4)  # records 0 and 3 carry hard negatives
    tokenizer = load_tokenizer(model_dir)
    weights = LossWeights(global_weight=1.0, region_weight=0.5, hard_weight=0.5)
    results = {}
    for batch_size in (1, 2, 4):
        torch.manual_seed(0)  # a plain CLIP directory: the temporal module starts from random weights
        model = FGCLIPVideo.from_pretrained(model_dir).double()
        model.train()
        window = _first_window(shard_dir, model, tokenizer, batch_size)
        assert sorted(int(i) for b in window for i in b["record_index"]) == sorted(
            int(i) for b in _first_window(shard_dir, model, tokenizer, 4) for i in b["record_index"])
        losses = {name: float(value) for name, value in grad_cached_window(model, window, weights).items()}
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results[batch_size] = losses, grads
    reference_losses, reference_grads = results[4]
    assert reference_losses["hard"] > 0 and reference_losses["region"] > 0
    for batch_size in (1, 2):
        losses, grads = results[batch_size]
        for name, value in reference_losses.items():
            assert losses[name] == pytest.approx(value, rel=1e-10, abs=1e-12), (batch_size, name)
        assert grads.keys() == reference_grads.keys()
        for name, expected in reference_grads.items():
            torch.testing.assert_close(grads[name], expected, rtol=1e-8, atol=1e-12, msg=lambda m: f"{batch_size} {name}: {m}")


def test_micro_batches_split_the_contrastive_batch_exactly():
    assert micro_batch_choices(16) == [16, 8, 4, 2, 1]
    assert micro_batch_choices(12) == [12, 6, 4, 3, 2, 1]


def _h100_footprint(batch: int, checkpointing: bool) -> float:
    """Peak bytes of the ViT-B/16 step at 256 frames per video, from the H100 measurements
    (docs/PERFORMANCE.md: 17.9 GiB at 2 videos with checkpointing, 53 GiB without, eager)."""
    return (2.0 + (8.0 if checkpointing else 25.5) * batch) * GIB


def test_the_rule_picks_the_cards_setting():
    # H200, 139 GiB less the 10% margin: 4 videos without checkpointing (8 would need 206 GiB).
    fit = pick_fit(16, _h100_footprint, 125 * GIB)
    assert (fit.batch_size, fit.grad_accum, fit.gradient_checkpointing) == (4, 4, False)
    # A 24 GB card: 1 video without checkpointing would fit only barely, 2 with checkpointing do.
    fit = pick_fit(16, _h100_footprint, 21 * GIB)
    assert (fit.batch_size, fit.grad_accum, fit.gradient_checkpointing) == (2, 8, True)
    # Checkpointing forced on: the largest micro-batch that fits with it.
    fit = pick_fit(16, _h100_footprint, 125 * GIB, checkpointing=True)
    assert (fit.batch_size, fit.grad_accum, fit.gradient_checkpointing) == (8, 2, True)
    # Nothing fits: one video, checkpointing on, and the caller is warned.
    fit = pick_fit(16, lambda batch, ckpt: None, 1 * GIB)
    assert (fit.batch_size, fit.grad_accum, fit.gradient_checkpointing) == (1, 16, True)
