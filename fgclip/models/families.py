"""Model families behind one interface: which model class a directory holds, and what every
family's model offers the trainer, the loader and evaluation.

* "clip": FG-CLIP on transformers' CLIP (`fgclip.models.clip_video.FGCLIPVideo`; directories with
  model_type clip: OpenAI CLIP copies, FG-CLIP v1, our checkpoints). InfoNCE losses.
* "siglip2": FG-CLIP 2 on transformers' SigLIP 2 (`fgclip.models.siglip2_video.FGCLIP2Video`;
  model_type fgclip2 or siglip2). Sigmoid losses with learned biases; bilingual text.

The directory's config.json (its layout) decides the family; nothing else needs to know which
one it is: callers use the `VideoModel` protocol below.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from torch import Tensor, nn

from fgclip.models import fgclip2_layout
from fgclip.models.layouts import ModelDirError, read_config
from fgclip.models.clip_video import VideoOutput
from fgclip.models.text import TextRules, load_tokenizer

FAMILY_MODEL_TYPES = {"clip": ("clip",), "siglip2": fgclip2_layout.SIGLIP_FAMILY_MODEL_TYPES}


class VideoModel(Protocol):
    """What the trainer, loader and evaluation use of a model (both families implement it)."""

    family: str  # "clip" | "siglip2"
    objective: str  # "infonce" | "sigmoid": how similarities become losses and scores (fgclip.train.losses)
    bilingual: bool  # Chinese captions are native text (no translation needed)
    text_rules: TextRules  # text lengths and caption preparation
    image_size: int  # square input side in pixels
    patch_grid: int  # patches per side
    embed_dim: int

    def preprocess(self, frames_uint8: Tensor) -> Tensor: ...
    def encode_video(self, pixels: Tensor, boxes: Tensor, box_mask: Tensor) -> VideoOutput: ...
    def frame_features(self, pixels: Tensor) -> Tensor: ...  # (N, D) before normalisation (snippet features)
    def encode_frames(self, pixels: Tensor) -> Tensor: ...  # the same, L2-normalised
    def dense_features(self, pixels: Tensor) -> Tensor: ...
    # kind: long / short / box; attention_mask (the tokenizer's): the family's inference path (prompts)
    # token_embeds (N, L, W): instead of the ids' embeddings (a head's learnable prompt context)
    def encode_text(self, input_ids: Tensor, kind: str, attention_mask: Tensor | None = None,
                    token_embeds: Tensor | None = None) -> Tensor: ...
    def text_token_embedding(self) -> nn.Embedding: ...
    def temperatures(self) -> dict[str, Tensor]: ...  # global / region / hard logit scales
    def logit_biases(self) -> dict[str, Tensor]: ...  # the same terms' biases ({} for InfoNCE)
    def check_tokenizer(self, tokenizer, model_dir) -> None: ...
    def save_pretrained(self, path) -> None: ...
    def set_gradient_checkpointing(self, enabled: bool) -> None: ...
    def compile_blocks(self) -> None: ...


def family_of(model_dir) -> str:
    """The family of a model directory, from its config.json's model_type."""
    path = Path(model_dir)
    config_file = path / "config.json"
    if path.is_dir() and config_file.is_file():
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (ValueError, AttributeError):
            model_type = None
        for family, model_types in FAMILY_MODEL_TYPES.items():
            if model_type in model_types:
                return family
        if model_type is not None:
            known = ", ".join(t for types in FAMILY_MODEL_TYPES.values() for t in types)
            raise ModelDirError(f"{config_file}: model_type {model_type!r} is not a family this tool trains ({known})")
    read_config(path)  # the CLIP family's checks name what is wrong with the directory
    return "clip"


def model_class(family: str):
    if family == "siglip2":
        from fgclip.models.siglip2_video import FGCLIP2Video

        return FGCLIP2Video
    from fgclip.models.clip_video import FGCLIPVideo

    return FGCLIPVideo


def load_video_model(model_dir) -> VideoModel:
    """The model of a directory, of its family (from_pretrained of that family's class)."""
    return model_class(family_of(model_dir)).from_pretrained(model_dir)


def load_model_and_tokenizer(model_dir) -> tuple[VideoModel, object]:
    """Model and tokenizer of a directory, checked against each other (ModelDirError if they differ)."""
    model = load_video_model(model_dir)
    tokenizer = load_tokenizer(model_dir)
    model.check_tokenizer(tokenizer, model_dir)
    return model, tokenizer
