"""Model directories in the layouts other tools write, built from scratch for the layout tests.

* `write_fgclip_v1_dir`: FG-CLIP v1's layout (qihoo360/fg-clip-base): the real fg-clip-base
  config.json shrunk to a tiny width, its real CLIP BPE tokenizer files, and a model.safetensors
  with every CLIPModel key plus FG-CLIP's five (position_embedding_ori/_res, text_filip_projection,
  logit_scale_finegraind, logit_scale_hardneg), all random and different from what loading a
  plain CLIP would derive, so a test sees whether each one is really used.
* `write_format1_checkpoint`: a checkpoint as fgclip-vad wrote them before FG-CLIP v1 loading
  came (fgclip_video format 1: one long table `long_position_embedding`, no long projection).

Both write the files with safetensors and json directly, by key name, not with fgclip's code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

V1_SCALES = {"logit_scale": 3.1, "logit_scale_finegraind": 2.3, "logit_scale_hardneg": 1.7}
TOKENIZER_FILES = ("merges.txt", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json")


def tiny_fgclip_v1_config(real_files: Path, *, image_size: int = 32, patch_size: int = 8) -> dict:
    """fg-clip-base's config.json (architectures, auto_map, eos id 2, ...) at a tiny width."""
    config = json.loads((real_files / "config.json").read_text())
    config["projection_dim"] = 16
    config["text_config"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 projection_dim=16)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=image_size, patch_size=patch_size, projection_dim=16)
    config["vision_config"].update(vision)
    # transformers builds the vision config from `vision_config_dict` alone when there is one
    # (fg-clip-base's says patch_size 16, the rest are CLIPVisionConfig's defaults: ViT-B at 224)
    config["vision_config_dict"] = vision
    return config


def fgclip_v1_weights(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of a random FG-CLIP v1 model of `config`, by FG-CLIP's key names."""
    torch.manual_seed(seed)
    clip = CLIPModel(CLIPConfig.from_dict(config))
    weights = {key: value.detach().clone() for key, value in clip.state_dict().items()}
    width = config["text_config"]["hidden_size"]
    generator = torch.Generator().manual_seed(seed + 1)
    weights["text_model.embeddings.position_embedding_ori.weight"] = torch.randn(248, width, generator=generator)
    weights["text_model.embeddings.position_embedding_res.weight"] = torch.randn(248, width, generator=generator)
    weights["text_filip_projection.weight"] = torch.randn(weights["text_projection.weight"].shape, generator=generator) * 0.2
    for key, value in V1_SCALES.items():
        weights[key] = torch.tensor(value)
    return weights


def write_fgclip_v1_dir(out_dir: Path, real_files: Path, *, seed: int = 0) -> Path:
    """A tiny FG-CLIP v1 directory: config, weights, real tokenizer and preprocessor files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_fgclip_v1_config(real_files)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_weights(out_dir / "model.safetensors", fgclip_v1_weights(config, seed))
    for name in TOKENIZER_FILES + ("preprocessor_config.json",):
        shutil.copy(real_files / name, out_dir / name)
    return out_dir


def changed_copy(source_dir: Path, out_dir: Path, *, extra: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A copy of a model directory with `extra` tensors added to its weights and `drop` keys removed."""
    shutil.copytree(source_dir, out_dir)
    weights = read_safetensors(out_dir / "model.safetensors")
    weights.update(extra or {})
    for key in drop:
        del weights[key]
    write_weights(out_dir / "model.safetensors", weights)
    return out_dir


def write_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    save_file({key: value.contiguous() for key, value in weights.items()}, str(path), metadata={"format": "pt"})


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def write_format1_checkpoint(out_dir: Path, clip_dir: Path, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A copy of the plain CLIP directory `clip_dir` plus the extras of format 1 with random values
    (long table, temporal module, three temperatures). Returns the extras written."""
    from fgclip.models.clip_video import TemporalPooling

    shutil.copytree(clip_dir, out_dir)
    clip_config = json.loads((clip_dir / "config.json").read_text())
    width, dim = clip_config["text_config"]["hidden_size"], clip_config["projection_dim"]
    generator = torch.Generator().manual_seed(seed)
    extras = {"long_position_embedding": torch.randn(248, width, generator=generator)}
    temporal = TemporalPooling(dim, num_layers=2, num_heads=2)
    for name, value in temporal.state_dict().items():
        extras[f"temporal.{name}"] = value + 0.05 * torch.randn(value.shape, generator=generator)
    for index, name in enumerate(("global", "region", "hard")):
        extras[f"logit_scales.{name}"] = torch.tensor(2.0 + 0.5 * index)
    save_file(extras, str(out_dir / "fgclip_video.safetensors"))
    (out_dir / "fgclip_video.json").write_text(json.dumps({
        "format_version": 1, "temporal_layers": 2, "temporal_heads": 2, "long_text_length": 248,
        "long_keep_rows": 20, "long_expansion": 4}, indent=2))
    return extras
