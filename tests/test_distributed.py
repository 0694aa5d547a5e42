"""Two real processes (torch.distributed, gloo on CPU) give the single-process loss and gradients."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fgclip import distributed
from fgclip.train.grad_cache import embed_micro_batch, grad_cached_window, window_losses
from fgclip.train.losses import LossWeights
from tiny_fgclip import concatenate_micro_batches, random_micro_batch, tiny_model

WORLD_SIZE = 2
WEIGHTS = LossWeights(global_weight=1.0, region_weight=0.7, hard_weight=0.5)


def _all_micro_batches() -> list[dict[str, torch.Tensor]]:
    """Rank r gets micro-batches 2r and 2r+1; the ranks differ in region and negative counts,
    and share some caption keys (identical captions across ranks)."""
    return [
        random_micro_batch(11, regions=2, negatives=1, key_pool=5),
        random_micro_batch(12, regions=2, negatives=2, key_pool=5),
        random_micro_batch(13, regions=3, negatives=3, key_pool=5),
        random_micro_batch(14, regions=1, negatives=2, key_pool=5),
    ]


def _worker(rank: int, out_dir: str, family: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD_SIZE)
    try:
        # The FG-CLIP window: this rank's two micro-batches, negatives from both ranks.
        model = tiny_model(perturb_temporal=True, family=family)
        mine = _all_micro_batches()[2 * rank: 2 * rank + 2]
        losses = grad_cached_window(model, mine, WEIGHTS)
        distributed.all_reduce_gradients(model)
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

        # gather_with_local_grad: rank order, gradient only for the local rows.
        local = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
        gathered = distributed.gather_with_local_grad(local)
        weights = torch.arange(gathered.numel(), dtype=torch.float64).view_as(gathered)
        (gathered * weights).sum().backward()

        # all_reduce_gradients: a gradient present on one rank only counts as zero elsewhere;
        # a parameter without gradient on every rank stays without.
        probe = nn.Linear(2, 2).double()
        probe.weight.grad = torch.full_like(probe.weight, 1.0) if rank == 0 else None
        distributed.all_reduce_gradients(probe)

        torch.save({"losses": losses, "grads": grads, "gathered": gathered.detach(), "local_grad": local.grad,
                    "probe_weight_grad": probe.weight.grad, "probe_bias_grad": probe.bias.grad},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("family", ["clip", "siglip2"])
def test_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path, family):
    os.environ.pop("WORLD_SIZE", None)
    # spawn, not fork: autograd refuses to run in a child forked after the parent used it.
    mp.spawn(_worker, args=(str(tmp_path), family), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]

    # Reference: one process, all samples in one plain batch, no caching, no gathering.
    reference = tiny_model(perturb_temporal=True, family=family)
    emb = embed_micro_batch(reference, concatenate_micro_batches(_all_micro_batches()))
    expected_losses = window_losses(reference, emb, WEIGHTS)
    expected_losses["total"].backward()
    expected_grads = {name: p.grad for name, p in reference.named_parameters() if p.grad is not None}
    assert float(expected_losses["hard"].detach()) > 0

    for rank, result in enumerate(results):
        for name, value in expected_losses.items():
            assert abs(result["losses"][name] - float(value.detach())) < 1e-12, (rank, name)
        assert result["grads"].keys() == expected_grads.keys()
        for name, expected in expected_grads.items():
            torch.testing.assert_close(result["grads"][name], expected, rtol=1e-9, atol=1e-12,
                                       msg=lambda m: f"rank {rank}, {name}: {m}")

        weights = torch.arange(12, dtype=torch.float64).view(4, 3)
        torch.testing.assert_close(result["gathered"], torch.tensor([[1.0] * 3] * 2 + [[2.0] * 3] * 2, dtype=torch.float64))
        torch.testing.assert_close(result["local_grad"], weights[2 * rank: 2 * rank + 2])
        torch.testing.assert_close(result["probe_weight_grad"], torch.ones(2, 2, dtype=torch.float64))
        assert result["probe_bias_grad"] is None


def test_single_process_helpers_are_identity():
    x = torch.randn(3, 2)
    assert distributed.gather_with_local_grad(x) is x
    assert distributed.gather_rows_with_local_grad(x) is x
    info = distributed.init_from_env() if "WORLD_SIZE" not in os.environ else None
    if info is not None:
        assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
