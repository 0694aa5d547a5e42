"""Tiny real models of both families and synthetic training micro-batches, shared by the model tests.

Importable by spawned worker processes too (tests/ is on their sys.path), so the
distributed test builds exactly the same model and batches in every process.
"""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel

from fgclip.train.batch import AXES
from fgclip.models.clip_video import FGCLIPVideo

VOCAB_SIZE = 64
EOS_ID = VOCAB_SIZE - 1  # also padding, as in CLIP
BOS_ID = 0
IMAGE_SIZE = 32
PATCH_SIZE = 8


def tiny_clip_config() -> CLIPConfig:
    text = dict(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
                pad_token_id=EOS_ID)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def tiny_clip(seed: int = 0) -> CLIPModel:
    torch.manual_seed(seed)
    return CLIPModel(tiny_clip_config())


def tiny_siglip2_config(text_positions: int = 32):
    """A tiny SigLIP 2 config whose FG-CLIP 2 additions fit (text width = projection = vision width);
    the position grid is the test images' patch grid (32 px / 8 px = 4 x 4)."""
    from transformers import Siglip2Config

    text = dict(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=text_positions, projection_size=32)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  patch_size=PATCH_SIZE, num_patches=(IMAGE_SIZE // PATCH_SIZE) ** 2)
    return Siglip2Config(text_config=text, vision_config=vision)


def tiny_siglip2_model(seed: int = 0, dtype: torch.dtype = torch.float64, text_positions: int = 32):
    """The FG-CLIP 2 model on a tiny random SigLIP 2 (SigLIP's start: scale log 10, bias -10),
    its additions perturbed so that they differ from the SigLIP weights they start from."""
    import math

    from transformers import Siglip2Model

    from fgclip.models.siglip2_video import FGCLIP2Video

    torch.manual_seed(seed)
    siglip = Siglip2Model(tiny_siglip2_config(text_positions))
    with torch.no_grad():
        siglip.logit_scale.fill_(math.log(10.0))
        siglip.logit_bias.fill_(-10.0)
    model = FGCLIP2Video(siglip, longtext_len=4 * text_positions - 60)
    generator = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("longtext_head", "boxtext_head", "dense_feature_head", "text_model.embeddings.position_embedding_")):
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.to(dtype)


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float64, perturb_temporal: bool = False,
               family: str = "clip"):
    """The FG-CLIP model of `family` ("clip": on a tiny random CLIP; "siglip2": FG-CLIP 2 on a tiny
    SigLIP 2), in float64 for exact gradient comparisons.

    `perturb_temporal` moves the temporal module away from its mean-pooling start, and the scales
    (and biases) apart, so that gradients through all of their parameters are exercised."""
    model = FGCLIPVideo(tiny_clip(seed)).to(dtype) if family == "clip" else tiny_siglip2_model(seed, dtype)
    if perturb_temporal:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, parameter in model.temporal.named_parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
            for index, name in enumerate(("global", "region", "hard")):
                scale_and_bias = _scale_parameters(model, name)
                for parameter in scale_and_bias:
                    parameter.add_(0.1 * (index + 1))
    return model


def _scale_parameters(model, term: str) -> list[torch.nn.Parameter]:
    """The log-scale (and, for the sigmoid family, bias) parameters of one loss term."""
    if isinstance(model, FGCLIPVideo):
        return [model.logit_scales[term]]
    if term == "global":
        return [model.logit_scale, model.logit_bias]
    return [model.term_scales[term], model.term_biases[term]]


def random_ids(generator: torch.Generator, shape: tuple[int, ...], length: int) -> torch.Tensor:
    """Token ids like a CLIP tokenizer's: start token, words, end token, end-token padding."""
    ids = torch.randint(1, EOS_ID, (*shape, length), generator=generator)
    ids[..., 0] = BOS_ID
    ends = torch.randint(2, min(length, 12), shape, generator=generator)
    positions = torch.arange(length).expand(*shape, length)
    ids[positions >= ends[..., None]] = EOS_ID
    return ids


def random_micro_batch(seed: int, *, batch: int = 2, frames: int = 3, regions: int = 2, negatives: int = 2,
                       long_length: int = 24, short_length: int = 12, key_pool: int = 1000,
                       dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """A micro-batch in the loader's format (`fgclip.train.batch.MicroBatch`) with random content.

    Some region slots are padding, some region/frame pairs invisible, some negatives missing,
    so every masking path of the model and the losses is exercised. `key_pool` small makes
    caption keys collide (identical captions)."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(batch, regions, frames, 2, generator=g, dtype=dtype) * 0.5
    size = 0.2 + torch.rand(batch, regions, frames, 2, generator=g, dtype=dtype) * 0.5
    boxes = torch.cat([corner, (corner + size).clamp(max=1.0)], dim=-1)
    box_mask = torch.rand(batch, regions, frames, generator=g) < 0.7
    box_mask[:, 0, 0] = True  # the first region of every sample is visible somewhere
    region_valid = torch.ones(batch, regions, dtype=torch.bool)
    if regions > 1:
        region_valid[-1, -1] = False
        box_mask[-1, -1] = False
    negative_valid = torch.rand(batch, regions, negatives, generator=g) < 0.6
    negative_valid &= region_valid[..., None]
    global_key = torch.randint(0, key_pool, (batch,), generator=g)
    region_key = torch.randint(0, key_pool, (batch, regions), generator=g)
    # Equal keys must mean equal captions: derive the ids from the key.
    global_ids = torch.stack([random_ids(torch.Generator().manual_seed(int(k)), (), long_length) for k in global_key])
    region_ids = torch.stack([
        torch.stack([random_ids(torch.Generator().manual_seed(10_000 + int(k)), (), short_length) for k in row])
        for row in region_key
    ])
    return {
        "pixels": torch.randn(batch, frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g, dtype=dtype),
        "boxes": boxes,
        "box_mask": box_mask,
        "region_valid": region_valid,
        "global_ids": global_ids,
        "global_key": global_key,
        "region_ids": region_ids,
        "region_key": region_key,
        "negative_ids": random_ids(g, (batch, regions, negatives), short_length),
        "negative_valid": negative_valid,
        "record_index": torch.arange(batch) + 100 * seed,
    }


def concatenate_micro_batches(micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One big batch of the same samples: region and negative slots padded to the largest."""
    regions = max(b["region_valid"].shape[1] for b in micro_batches)
    negatives = max(b["negative_valid"].shape[2] for b in micro_batches)

    def pad(tensor: torch.Tensor, region_axis: bool, negative_axis: int | None) -> torch.Tensor:
        shape = list(tensor.shape)
        if region_axis:
            shape[1] = regions
        if negative_axis is not None:
            shape[negative_axis] = negatives
        out = tensor.new_zeros(shape)
        out[tuple(slice(0, n) for n in tensor.shape)] = tensor
        return out

    layout = {name: ("R" in axes, axes.index("K") if "K" in axes else None) for name, (axes, _) in AXES.items()}
    merged = {}
    for name in micro_batches[0]:
        region_axis, negative_axis = layout.get(name, (False, None))
        merged[name] = torch.cat([pad(b[name], region_axis, negative_axis) for b in micro_batches])
    return merged
