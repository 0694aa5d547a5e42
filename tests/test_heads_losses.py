"""The heads' losses on cases computed by hand, and the VadCLIP head's masking."""

from __future__ import annotations

import math

import pytest
import torch

from fgclip.heads import losses
from fgclip.heads.mil import MILConfig, MILHead
from fgclip.heads.vadclip import VadCLIPConfig, VadCLIPHead, distance_adjacency, window_attention_mask


def test_topk_k_is_length_over_16_plus_one():
    assert losses.topk_k(torch.tensor([1, 15, 16, 33, 256])).tolist() == [1, 1, 2, 3, 17]


def test_topk_mil_bce_by_hand():
    # video 0: 20 real snippets (k = 2), top two 0.9 and 0.7 -> 0.8, label 1; the padding's 0.99 is ignored
    # video 1: 3 real snippets (k = 1), top 0.4, label 0
    probabilities = torch.zeros(2, 24)
    probabilities[0, :20] = 0.1
    probabilities[0, 3], probabilities[0, 11] = 0.9, 0.7
    probabilities[0, 22] = 0.99
    probabilities[1, :3] = torch.tensor([0.2, 0.4, 0.3])
    probabilities[1, 10] = 0.95
    loss = losses.topk_mil_bce(probabilities, torch.tensor([20, 3]), torch.tensor([1.0, 0.0]))
    expected = (-math.log(0.8) - math.log(1 - 0.4)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_mil_align_by_hand():
    # one video, 2 snippets (k = 1), 3 classes: video logits = per-class max = [1, 3, 0]; target class 1
    logits = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 3.0, -1.0]]])
    loss = losses.mil_align(logits, torch.tensor([2]), torch.tensor([1]))
    expected = -3.0 + math.log(math.exp(1) + math.exp(3) + math.exp(0))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_text_separation_by_hand():
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])  # normal, then two anomaly classes
    expected = (0.0 + abs(-1 / math.sqrt(2))) / 2
    assert losses.text_separation(text, normal_index=0).item() == pytest.approx(expected, rel=1e-5)


def test_ranking_loss_by_hand():
    anomalous = torch.tensor([[0.1, 0.6, 0.2]])
    normal = torch.tensor([[0.3, 0.0, 0.1]])
    hinge = 1 - 0.6 + 0.3
    smooth = (0.6 - 0.1) ** 2 + (0.2 - 0.6) ** 2
    sparse = 0.1 + 0.6 + 0.2
    loss = losses.ranking_loss(anomalous, normal, smoothness=0.5, sparsity=0.25)
    assert loss.item() == pytest.approx(hinge + 0.5 * smooth + 0.25 * sparse, rel=1e-5)
    # a wide margin leaves only the two regularisers
    assert losses.ranking_loss(torch.tensor([[2.0, 2.0]]), torch.tensor([[0.0, 0.0]]), smoothness=1.0,
                               sparsity=0.0).item() == pytest.approx(0.0)


def test_window_mask_and_distance_adjacency():
    blocked = window_attention_mask(5, 2, "cpu")
    assert not blocked[0, 1] and blocked[1, 2] and not blocked[4, 4]
    adjacency = distance_adjacency(torch.tensor([[True, True, False]]), sigma=1.0)
    assert adjacency[0, 0].tolist() == pytest.approx([1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1)), 0.0])


def test_vadclip_head_ignores_padding():
    torch.manual_seed(0)
    head = VadCLIPHead(VadCLIPConfig(feature_dim=16, num_classes=3, max_snippets=12, window=4, heads=2)).eval()
    features = torch.randn(1, 7, 16)
    padded = torch.cat([features, 100 * torch.randn(1, 5, 16)], dim=1)
    alone = head(features, torch.tensor([7])).probabilities
    with_padding = head(padded, torch.tensor([7])).probabilities
    torch.testing.assert_close(with_padding[:, :7], alone, rtol=1e-4, atol=1e-5)
    assert with_padding[:, 7:].abs().max() == 0
    # scoring a video longer than the positions goes in chunks
    assert head.score(torch.randn(30, 16)).shape == (30,)


def test_mil_head_scores_each_snippet():
    head = MILHead(MILConfig(feature_dim=8)).eval()
    scores = head.score(torch.randn(5, 8))
    assert scores.shape == (5,) and ((scores > 0) & (scores < 1)).all()


def test_context_slots_go_around_the_class_words():
    from fgclip.heads.prompt_context import insert_context_slots

    # [BOS=0] word 7 word 8 [EOS=1] pad pad pad pad (pad = EOS, as CLIP)
    ids = torch.tensor([[0, 7, 8, 1, 1, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    new_ids, new_mask, slots = insert_context_slots(ids, mask, {0, 1}, prefix=2, postfix=1)
    assert new_ids.tolist() == [[0, 7, 7, 7, 8, 7, 1, 1]]
    assert new_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 0]]
    assert slots.tolist() == [[False, True, True, False, False, True, False, False]]


@pytest.mark.usefixtures("one_torch_thread")
def test_prompt_context_on_fgclip2_text_tower(tmp_path):
    """Either family: FG-CLIP 2's own tower encodes the prompts; only the context learns."""
    from fgclip.heads.prompt_context import LearnablePromptText
    from fgclip.models.factory import init_model
    from fgclip.models.families import load_model_and_tokenizer

    path = init_model("tiny-siglip2", tmp_path / "model", captions=["normal activity", "road accidents", "abuse"] * 4)
    tower, tokenizer = load_model_and_tokenizer(path)
    prompts = LearnablePromptText(tower, tokenizer, ["normal", "abuse", "road accidents"], prefix=3, postfix=2)
    assert [name for name, _ in prompts.named_parameters()] == ["prefix", "postfix"]
    embeds = prompts()
    assert embeds.shape == (3, tower.embed_dim)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(3))
    embeds[:, 0].sum().backward()
    assert prompts.prefix.grad.abs().sum() > 0 and prompts.postfix.grad.abs().sum() > 0
    assert all(p.grad is None for p in tower.parameters())
