"""Patch-level anomaly maps: where in a frame the model sees the anomaly.

A frame's anomaly score compares its CLS embedding with the evaluation prompts (normal + each
class, templates averaged). The patch map asks the same question of every patch:

    map[i, j] = 1 - P(normal | patch (i, j)) = 1 - softmax(t * cosine(dense[:, i, j], prompts))[normal]

(for the sigmoid family, its own definition in `fgclip.eval.prompts.anomaly_scores`, with the region bias)

with `dense` the model's `dense_features` (the dense path region embeddings are pooled from:
the last vision block with attention reduced to its value path, one embedding per patch,
L2-normalised), the same prompt embeddings as the frame score, and t the model's *region*
temperature (the scale at which dense features are trained against text). The g x g map
(g = image size / patch size) covers the whole stored frame, which stage 1 squashed to a square;
`upsample_maps` stretches it bilinearly back onto a frame of any size and aspect. Values are
probabilities in [0, 1], comparable across frames and videos (not rescaled per frame).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from fgclip.eval.prompts import anomaly_scores

# What a patch map is, as the reports state it.
PATCH_MAP_DOC = ("per patch, the frame score's definition applied to the dense patch feature (region scale and bias), "
                 "same prompts and templates, upsampled bilinearly to the frame")


def patch_anomaly_maps(dense: torch.Tensor, prompt_embeds: torch.Tensor, temperature: torch.Tensor, *,
                       objective: str = "infonce", bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N, D, g, g) normalised patch embeddings x (1 + C, D) prompts -> (N, g, g) float32 maps
    (the frame score's definition, `fgclip.eval.prompts.anomaly_scores`, per patch)."""
    return anomaly_scores(dense.permute(0, 2, 3, 1), prompt_embeds, temperature, objective=objective, bias=bias)


def upsample_maps(maps: torch.Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, g, g) -> (N, height, width) float32, bilinear (patch centres at their pixel centres)."""
    maps = torch.as_tensor(maps, dtype=torch.float32)
    if maps.ndim != 3:
        raise ValueError(f"patch maps must be (N, g, g), got {tuple(maps.shape)}")
    return F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0].numpy()


@torch.inference_mode()
def frame_maps(model, frames_uint8: np.ndarray | torch.Tensor, prompt_embeds: torch.Tensor, *,
               device: torch.device, batch_frames: int = 64) -> np.ndarray:
    """(N, H, W, 3) uint8 frames -> (N, g, g) float32 patch maps, `batch_frames` at a time."""
    device = torch.device(device)
    frames = torch.as_tensor(frames_uint8)
    temperature = model.temperatures()["region"].float().to(device)
    biases = model.logit_biases()  # the sigmoid family's; empty for CLIP
    bias = biases.get("region", biases.get("global"))
    bias = None if bias is None else bias.float().to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    maps = np.empty((len(frames), model.patch_grid, model.patch_grid), dtype=np.float32)
    for start in range(0, len(frames), batch_frames):
        with autocast:
            pixels = model.preprocess(frames[start:start + batch_frames].to(device))
            dense = model.dense_features(pixels)
        maps[start:start + len(pixels)] = patch_anomaly_maps(dense, prompt_embeds, temperature, objective=model.objective,
                                                             bias=bias).cpu().numpy()
    return maps
