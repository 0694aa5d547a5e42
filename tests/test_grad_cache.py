"""Gradient caching is exact: one window of k micro-batches = one big batch, gradient for gradient,
for both families' losses (InfoNCE for CLIP, sigmoid with learned biases for SigLIP 2)."""

from __future__ import annotations

import pytest
import torch

from fgclip.train.batch import check_micro_batch
from fgclip.train.grad_cache import embed_micro_batch, grad_cached_window, join_text_ids, window_losses
from fgclip.train.losses import LossWeights, concat_embeddings
from tiny_fgclip import concatenate_micro_batches, random_micro_batch, tiny_model

WEIGHTS = LossWeights(global_weight=1.0, region_weight=0.7, hard_weight=0.5)


def _gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# Parameters that must receive gradient, per family: both towers, the temporal module, the long
# positions, the scales (and biases).
MUST_TRAIN = {
    "clip": ("clip.vision_model.encoder.layers.1.mlp.fc2.weight", "clip.text_model.encoder.layers.0.self_attn.q_proj.weight",
             "long_positions.ori", "long_text_projection.weight", "temporal.query", "temporal.blocks.0.qkv.weight",
             "logit_scales.global", "logit_scales.region", "logit_scales.hard"),
    "siglip2": ("vision_model.encoder.layers.1.mlp.fc2.weight", "text_model.encoder.layers.0.self_attn.q_proj.weight",
                "text_model.embeddings.position_embedding_ori.weight", "text_model.embeddings.position_embedding_res.weight",
                "vision_model.head.probe", "dense_feature_head.attention.in_proj_weight", "dense_feature_head.mlp.fc1.weight",
                "longtext_head.weight", "boxtext_head.weight", "temporal.query", "temporal.blocks.0.qkv.weight",
                "logit_scale", "logit_bias", "term_scales.region", "term_biases.hard"),
}


def _big_batch_reference(micro_batches, family):
    """The plain computation: one forward of all samples with graph, loss, backward. Also the
    global loss of each micro-batch alone (what plain gradient accumulation would see)."""
    model = tiny_model(perturb_temporal=True, family=family)
    emb = embed_micro_batch(model, concatenate_micro_batches(micro_batches))
    losses = window_losses(model, emb, WEIGHTS)
    losses["total"].backward()
    start, alone = 0, []
    with torch.no_grad():
        for batch in micro_batches:
            size = batch["global_key"].shape[0]
            part = emb.replace(video=emb.video[start:start + size], global_text=emb.global_text[start:start + size],
                               global_key=emb.global_key[start:start + size])
            alone.append(float(window_losses(model, part, WEIGHTS)["global"]))
            start += size
    return {name: float(value.detach()) for name, value in losses.items()}, _gradients(model), alone


@pytest.mark.parametrize("family", ["clip", "siglip2"])
def test_window_of_micro_batches_equals_one_big_batch(family):
    # Different region counts per micro-batch and some shared caption keys across micro-batches.
    micro_batches = [
        random_micro_batch(1, regions=2, negatives=2, key_pool=6),
        random_micro_batch(2, regions=3, negatives=1, key_pool=6),
        random_micro_batch(3, regions=1, negatives=3, key_pool=6),
    ]
    for batch in micro_batches:
        check_micro_batch(batch)  # the test's batches are in the loader's format
    expected_losses, expected_grads, global_loss_alone = _big_batch_reference(micro_batches, family)

    model = tiny_model(perturb_temporal=True, family=family)
    losses = grad_cached_window(model, micro_batches, WEIGHTS)
    grads = _gradients(model)

    assert expected_losses["hard"] > 0 and expected_losses["region"] > 0
    # The window sees more negatives than any micro-batch: not the mean of per-micro-batch losses.
    assert abs(losses["global"] - sum(global_loss_alone) / len(global_loss_alone)) > 1e-3
    for name in ("total", "global", "region", "hard"):
        assert abs(losses[name] - expected_losses[name]) < 1e-12, name
    assert grads.keys() == expected_grads.keys()
    # Every part of the model is trained.
    for must_have in MUST_TRAIN[family]:
        assert must_have in grads and grads[must_have].abs().max() > 0, must_have
    for name, expected in expected_grads.items():
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("count", [1, 3])
def test_the_last_micro_batch_is_not_embedded_twice(count):
    """The vision tower runs 2k - 1 times for k micro-batches: the last one's graph from the first
    pass is used for its backward (the equality tests above show that this stays exact)."""
    micro_batches = [random_micro_batch(20 + number, key_pool=6) for number in range(count)]
    model = tiny_model(perturb_temporal=True)
    calls = []
    encode_video = model.encode_video

    def counted(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return encode_video(*args, **kwargs)

    model.encode_video = counted
    grad_cached_window(model, micro_batches, WEIGHTS)
    assert calls == [False] * (count - 1) + [True] * count


def test_texts_of_micro_batches_of_different_widths_are_embedded_together_exactly():
    """The window's texts go through the text tower in one pass per kind, although the loader cuts
    each micro-batch's ids at its own longest caption: widening the narrower ids must not change an
    embedding. Reference: every micro-batch embedded on its own, with graph, then one loss."""
    micro_batches = [
        random_micro_batch(11, regions=2, negatives=2, long_length=24, short_length=12, key_pool=6),
        random_micro_batch(12, regions=3, negatives=1, long_length=14, short_length=7, key_pool=6),
        random_micro_batch(13, regions=1, negatives=3, long_length=19, short_length=10, key_pool=6),
    ]
    reference = tiny_model(perturb_temporal=True)
    window = concat_embeddings([embed_micro_batch(reference, batch) for batch in micro_batches])
    expected = window_losses(reference, window, WEIGHTS)
    expected["total"].backward()

    model = tiny_model(perturb_temporal=True)
    losses = grad_cached_window(model, micro_batches, WEIGHTS)
    for name in ("total", "global", "region", "hard"):
        assert abs(losses[name] - float(expected[name].detach())) < 1e-12, name
    grads, expected_grads = _gradients(model), _gradients(reference)
    assert grads.keys() == expected_grads.keys()
    for name, value in expected_grads.items():
        torch.testing.assert_close(grads[name], value, rtol=1e-9, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_join_text_ids_widens_by_the_last_id_and_refuses_full_length_mixtures():
    narrow = torch.tensor([[5, 7, 9], [5, 9, 9]])
    wide = torch.tensor([[5, 6, 7, 8, 9]])
    joined = join_text_ids([narrow, wide], full_length=False)
    assert joined.tolist() == [[5, 7, 9, 9, 9], [5, 9, 9, 9, 9], [5, 6, 7, 8, 9]]
    assert torch.equal(join_text_ids([wide, wide], full_length=True), torch.cat([wide, wide]))
    with pytest.raises(ValueError, match="full length"):
        join_text_ids([narrow, wide], full_length=True)


def test_gradient_accumulates_over_windows():
    """.grad is summed (the trainer zeroes it per step); two windows = sum of their gradients."""
    first, second = [random_micro_batch(4, frames=2)], [random_micro_batch(5, frames=2)]
    model = tiny_model()
    grad_cached_window(model, first, WEIGHTS)
    after_first = _gradients(model)
    grad_cached_window(model, second, WEIGHTS)
    both = _gradients(model)
    alone = tiny_model()
    grad_cached_window(alone, second, WEIGHTS)
    for name, value in _gradients(alone).items():
        torch.testing.assert_close(both[name], after_first[name] + value, rtol=1e-10, atol=1e-13)


def test_compiled_blocks_with_checkpointing_give_the_same_gradients():
    """`--compile` (torch.compile of the blocks, inductor) under gradient checkpointing: the same
    losses and gradients as the eager model, so a compiled run trains the same model."""
    micro_batches = [random_micro_batch(1, key_pool=4), random_micro_batch(2, key_pool=4)]
    reference = tiny_model(perturb_temporal=True)
    expected = grad_cached_window(reference, micro_batches, WEIGHTS)

    model = tiny_model(perturb_temporal=True)
    model.set_gradient_checkpointing(True)
    model.compile_blocks()
    losses = grad_cached_window(model, micro_batches, WEIGHTS)
    assert model.clip.vision_model.encoder.layers[0]._compiled_call_impl is not None
    for name in ("total", "global", "region", "hard"):
        assert abs(losses[name] - expected[name]) < 1e-9, name
    grads, expected_grads = _gradients(model), _gradients(reference)
    assert grads.keys() == expected_grads.keys()
    for name, value in expected_grads.items():
        torch.testing.assert_close(grads[name], value, rtol=1e-7, atol=1e-10, msg=lambda m: f"{name}: {m}")
