"""The losses: symmetric InfoNCE with identical captions as positives, hard negatives, weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from fgclip.train.losses import (LossWeights, WindowEmbeddings, concat_embeddings, contrastive_loss, fgclip_losses,
                           hard_negative_loss)


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def _window(n: int = 4, m: int = 5, k: int = 3, *, global_key=None, region_key=None, negative_valid=None) -> WindowEmbeddings:
    return WindowEmbeddings(
        video=_unit(n, 8, seed=1), global_text=_unit(n, 8, seed=2),
        global_key=torch.arange(n) if global_key is None else torch.tensor(global_key),
        region=_unit(m, 8, seed=3), region_text=_unit(m, 8, seed=4),
        region_key=torch.arange(m) if region_key is None else torch.tensor(region_key),
        negative_text=_unit(m, k, 8, seed=5),
        negative_valid=torch.zeros(m, k, dtype=torch.bool) if negative_valid is None else negative_valid,
    )


def test_distinct_captions_give_clips_own_loss():
    video, text = _unit(6, 8, seed=1), _unit(6, 8, seed=2)
    scale = torch.tensor(14.0, dtype=torch.float64)
    expected = image_text_contrastive_loss(scale * text @ video.t())  # transformers' CLIP loss (text x image logits)
    torch.testing.assert_close(contrastive_loss(video, text, torch.arange(6), scale), expected)


def test_all_identical_captions_have_nothing_to_contrast():
    """Every other sample is a positive, removed from the softmax: each row has one candidate."""
    video, text = _unit(5, 8, seed=1), _unit(5, 8, seed=2)
    loss = contrastive_loss(video, text, torch.full((5,), 42), torch.tensor(50.0, dtype=torch.float64))
    assert float(loss) == 0.0


def test_identical_captions_are_not_negatives_of_each_other():
    # Samples 0 and 1 share a caption (same key, same text embedding); sample 2 differs.
    video = _unit(3, 8, seed=1)
    text = _unit(3, 8, seed=2)
    text[1] = text[0]
    scale = 10.0
    loss = contrastive_loss(video, text, torch.tensor([7, 7, 9]), torch.tensor(scale, dtype=torch.float64))
    s = scale * video @ text.t()

    def nll(row: torch.Tensor, target: int, candidates: list[int]) -> float:
        return -float(row[target] - torch.logsumexp(row[candidates], dim=0))

    video_to_text = [nll(s[0], 0, [0, 2]), nll(s[1], 1, [1, 2]), nll(s[2], 2, [0, 1, 2])]
    text_to_video = [nll(s[:, 0], 0, [0, 2]), nll(s[:, 1], 1, [1, 2]), nll(s[:, 2], 2, [0, 1, 2])]
    expected = 0.5 * (sum(video_to_text) / 3 + sum(text_to_video) / 3)
    assert math.isclose(float(loss), expected, rel_tol=1e-12)
    # With distinct keys the duplicate would be a negative: a different (larger) loss.
    assert float(contrastive_loss(video, text, torch.tensor([7, 8, 9]), torch.tensor(scale))) > float(loss) + 1e-3


def test_hard_negative_loss_per_region():
    region, region_text, negatives = _unit(3, 8, seed=1), _unit(3, 8, seed=2), _unit(3, 2, 8, seed=3)
    valid = torch.tensor([[True, True], [True, False], [False, False]])
    scale = torch.tensor(20.0, dtype=torch.float64)
    loss = hard_negative_loss(region, region_text, negatives, valid, scale)
    terms = []
    for m, count in ((0, 2), (1, 1)):  # region 2 has no negatives: not part of the mean
        logits = scale * torch.cat([(region[m] * region_text[m]).sum()[None], negatives[m, :count] @ region[m]])
        terms.append(-float(torch.log_softmax(logits, dim=0)[0]))
    assert math.isclose(float(loss), sum(terms) / 2, rel_tol=1e-12)
    # Gradient of the temperature stays finite although some slots are masked.
    scale.requires_grad_(True)
    hard_negative_loss(region, region_text, negatives, valid, scale).backward()
    assert torch.isfinite(scale.grad)


def test_total_is_the_weighted_sum_and_hard_is_zero_without_negatives():
    temperatures = {name: torch.tensor(value, dtype=torch.float64) for name, value in
                    (("global", 30.0), ("region", 20.0), ("hard", 10.0))}
    weights = LossWeights(global_weight=1.0, region_weight=0.1, hard_weight=0.5)
    without = fgclip_losses(_window(), temperatures, weights)
    assert float(without["hard"]) == 0.0
    assert math.isclose(float(without["total"]), float(without["global"]) + 0.1 * float(without["region"]), rel_tol=1e-12)

    valid = torch.zeros(5, 3, dtype=torch.bool)
    valid[1, :2] = True
    valid[3, 0] = True
    losses = fgclip_losses(_window(negative_valid=valid), temperatures, weights)
    assert float(losses["hard"]) > 0
    weighted = float(losses["global"]) + 0.1 * float(losses["region"]) + 0.5 * float(losses["hard"])
    assert math.isclose(float(losses["total"]), weighted, rel_tol=1e-12)
    assert LossWeights() == LossWeights(1.0, 0.1, 0.5)


def test_window_without_regions_has_zero_region_loss():
    window = _window(m=0, k=0)
    temperatures = {name: torch.tensor(10.0, dtype=torch.float64) for name in ("global", "region", "hard")}
    losses = fgclip_losses(window, temperatures, LossWeights())
    assert float(losses["region"]) == 0.0 and float(losses["hard"]) == 0.0 and float(losses["global"]) > 0


def test_concatenation_pads_negative_slots():
    first = _window(n=2, m=2, k=1, negative_valid=torch.ones(2, 1, dtype=torch.bool))
    second = _window(n=1, m=1, k=3, negative_valid=torch.ones(1, 3, dtype=torch.bool))
    both = concat_embeddings([first, second])
    assert both.video.shape == (3, 8) and both.negative_text.shape == (3, 3, 8)
    assert both.negative_valid.tolist() == [[True, False, False], [True, False, False], [True, True, True]]
    assert torch.equal(both.negative_text[:2, 1:], torch.zeros(2, 2, 8, dtype=torch.float64))


def test_a_zero_weight_turns_its_term_off():
    """The loss-terms ablation (global only / region only): a term weighted 0 adds nothing to the
    total and sends no gradient into the embeddings only it sees."""
    temperatures = {name: torch.tensor(10.0, dtype=torch.float64) for name in ("global", "region", "hard")}
    for weights, kept, silent in ((LossWeights(1.0, 0.0, 0.0), "global", ("region", "region_text")),
                                  (LossWeights(0.0, 1.0, 0.0), "region", ("video", "global_text"))):
        window = _window()
        leaves = {name: getattr(window, name).clone().requires_grad_(True) for name in window.EMBEDDING_FIELDS}
        losses = fgclip_losses(window.replace(**leaves), temperatures, weights)
        assert float(losses["total"].detach()) == float(losses[kept].detach()) > 0
        losses["total"].backward()
        for name in silent:
            assert leaves[name].grad is None or not leaves[name].grad.any(), name
