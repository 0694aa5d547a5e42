"""The FG-CLIP video model: a Hugging Face `CLIPModel` plus FG-CLIP's additions.

What is added on top of CLIP, and why:

* Long captions: FG-CLIP's 248-row text positions (`LongTextPositions`, built from CLIP's 77 rows
  by `long_position_table`) and its own projection (`long_text_projection`, FG-CLIP's
  `text_filip_projection`, a copy of `text_projection` at the start), used for global (video)
  captions; region captions, hard negatives and prompts keep the original 77 rows and
  `text_projection`.
* Video embedding: CLIP's frame embeddings (CLS -> post-layernorm -> visual projection) pooled
  over time by `TemporalPooling`, which equals mean pooling at initialisation, so fine-tuning
  starts from CLIP's zero-shot quality.
* Region embeddings: dense patch features (the last vision block without query/key, see
  `_dense_patch_features`), RoIAlign'ed with each region's per-frame boxes and averaged over the
  frames where the region is visible. `dense_features` gives them per patch, normalised (patch maps).
* Three learnable temperatures (global, region, hard negatives), initialised from CLIP's.

One vision pass per frame batch: the encoder runs up to the input of the last block once; the
CLS path and the dense path both start from there.

Checkpoint layout (a directory): everything `CLIPModel.save_pretrained` writes (config.json,
model.safetensors; loadable by any tool as a plain CLIP), the tokenizer/processor files of the
model we started from, and our extras: `fgclip_video.json` (their configuration) and
`fgclip_video.safetensors` (long positions and projection, temporal module, temperatures).
`from_pretrained` also reads plain CLIP and FG-CLIP v1 directories; `fgclip.models.layouts` owns the
layouts and the conversions between them.

The forward pass is deterministic (no dropout anywhere; CLIP's attention dropout is forced to
0): gradient caching (`fgclip.train.grad_cache`) re-runs each micro-batch and relies on getting the
same embeddings twice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgclip.models.dir_files import side_files
from fgclip.models.layouts import (
    CLIP_PREFIX,
    EXTRAS_CONFIG_NAME,
    EXTRAS_FORMAT_VERSION,
    EXTRAS_WEIGHTS_NAME,
    ModelDirContents,
    ModelDirError,
    read_model_dir,
)
from fgclip.models.region_index import BoxIndex, box_index
from fgclip.models.text import CLIP_TEXT_RULES, TEXT_KINDS

log = logging.getLogger(__name__)


# CLIP's own normalisation, used when a directory has no preprocessor_config.json.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

LONG_KEEP_ROWS = 20  # positions 0..19 are kept as they are (short captions are trained there)
LONG_EXPANSION = 4  # every later row becomes 4 rows
MAX_LOGIT_SCALE = 100.0


def _avoid_cudnn_attention() -> None:
    """Use flash / memory-efficient attention, not cuDNN's fused attention, on CUDA.

    With torch 2.11 on H100 (cuDNN 9), the cuDNN SDPA backend failed in our training step with
    `mha_graph.execute(...).is_good()` and then an illegal memory access (pytorch#190321
    reports the same; disabling it is the known mitigation). Flash attention is as fast here.
    """
    if torch.cuda.is_available() and hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
        torch.backends.cuda.enable_cudnn_sdp(False)


def long_position_table(short_table: Tensor, keep_rows: int = LONG_KEEP_ROWS, expansion: int = LONG_EXPANSION) -> Tensor:
    """FG-CLIP's long-text position table from CLIP's short one.

    With source rows P[0..L-1] (L = 77) and k = `keep_rows` (20), e = `expansion` (4):

    * rows 0..k-1 are P[0..k-1];
    * source row i in k..L-2 becomes e rows, row k + e*(i-k) + j = P[i] + (j/e) * (P[i+1] - P[i])
      for j = 0..e-1: linear interpolation from P[i] toward the next row;
    * the last source row L-1 has no next row, so it is extrapolated along the last step:
      row k + e*(L-1-k) + j = P[L-1] + (j/e) * (P[L-1] - P[L-2]).

    Length k + e*(L-k) = 20 + 4*57 = 248 for CLIP (20 kept + 56*4 interpolated + 4 extrapolated).
    """
    length = short_table.shape[0]
    if length < keep_rows + 2:
        raise ValueError(f"a position table of {length} rows is too short to stretch (needs > {keep_rows + 1})")
    base = short_table[keep_rows:]  # (L-k, W)
    following = torch.cat([short_table[keep_rows + 1 :], (2 * short_table[-1] - short_table[-2])[None]])
    step = following - base
    fractions = torch.arange(expansion, dtype=short_table.dtype, device=short_table.device) / expansion
    stretched = base[:, None, :] + fractions[None, :, None] * step[:, None, :]  # (L-k, e, W)
    return torch.cat([short_table[:keep_rows], stretched.reshape(-1, short_table.shape[1])])


def long_table_length(short_length: int, keep_rows: int = LONG_KEEP_ROWS, expansion: int = LONG_EXPANSION) -> int:
    return keep_rows + expansion * (short_length - keep_rows)


class LongTextPositions(nn.Module):
    """FG-CLIP's long-caption positions: position p < `keep_rows` reads row p of `ori`, later
    positions row p of `res` (two full tables, as FG-CLIP v1 stores them; the other rows of
    each get no gradient and are kept so a checkpoint goes back to FG-CLIP's layout unchanged).
    From a plain CLIP both start as `long_position_table` of its 77 rows."""

    def __init__(self, table: Tensor, keep_rows: int = LONG_KEEP_ROWS) -> None:
        super().__init__()
        self.keep_rows = keep_rows
        self.ori = nn.Parameter(table.detach().clone())
        self.res = nn.Parameter(table.detach().clone())

    @property
    def num_rows(self) -> int:
        return self.res.shape[0]

    def table(self, length: int) -> Tensor:
        """The first `length` rows, (length, W)."""
        kept = min(length, self.keep_rows)
        return torch.cat([self.ori[:kept], self.res[kept:length]])


@dataclass
class VideoOutput:
    video_embeds: Tensor  # (B, D) L2-normalised
    frame_embeds: Tensor  # (B, T, D) L2-normalised
    region_embeds: Tensor  # (B, R, D) L2-normalised (rows of regions without any visible frame are 0)


class TemporalBlock(nn.Module):
    """A pre-norm transformer block over time whose residual branches start at exactly zero.

    The temporal position embedding enters only the attention branch's input, never the
    residual stream, so at initialisation (zero output projections) the block is the identity.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        for zero_out in (self.attn_out, self.fc2):
            nn.init.zeros_(zero_out.weight)
            nn.init.zeros_(zero_out.bias)

    def forward(self, x: Tensor, position: Tensor) -> Tensor:
        batch, frames, dim = x.shape
        q, k, v = self.qkv(self.norm1(x) + position).chunk(3, dim=-1)
        heads = lambda t: t.view(batch, frames, self.num_heads, -1).transpose(1, 2)  # noqa: E731
        attended = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
        x = x + self.attn_out(attended.transpose(1, 2).reshape(batch, frames, dim))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TemporalPooling(nn.Module):
    """Frame embeddings (B, T, D) -> one video embedding (B, D); mean pooling at initialisation.

    A few `TemporalBlock`s (identity at init), then multi-head attention pooling whose value map
    is the identity (head h pools its own slice of the channels) and whose query starts at zero,
    so every frame gets weight 1/T. Temporal positions come from a learned table sampled at the
    clip's relative times (linear interpolation), so clips of 64 and 256 frames share it.
    """

    def __init__(self, dim: int, num_layers: int = 2, num_heads: int = 8, position_rows: int = 64) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"temporal heads ({num_heads}) must divide the embedding size ({dim})")
        self.num_heads = num_heads
        self.position_table = nn.Parameter(torch.randn(position_rows, dim) * 0.02)
        self.blocks = nn.ModuleList([TemporalBlock(dim, num_heads) for _ in range(num_layers)])
        self.key_norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.zeros(num_heads, dim // num_heads))

    def positions(self, num_frames: int) -> Tensor:
        table = self.position_table.t()[None]  # (1, D, rows)
        return F.interpolate(table, size=num_frames, mode="linear", align_corners=True)[0].t()  # (T, D)

    def forward(self, frame_embeds: Tensor) -> Tensor:
        batch, frames, dim = frame_embeds.shape
        position = self.positions(frames).to(frame_embeds.dtype)
        x = frame_embeds
        for block in self.blocks:
            x = block(x, position)
        keys = self.key(self.key_norm(x) + position).view(batch, frames, self.num_heads, -1)
        scores = torch.einsum("bthd,hd->bht", keys, self.query.to(keys.dtype)) / math.sqrt(keys.shape[-1])
        weights = scores.softmax(dim=-1)
        values = x.view(batch, frames, self.num_heads, -1)
        return torch.einsum("bht,bthd->bhd", weights, values).reshape(batch, dim)


def check_tokenizer(model: "FGCLIPVideo", tokenizer, model_dir) -> None:
    """ModelDirError unless `tokenizer` fits `model`: every id inside its token table, and the
    end token the one the text tower pools at (otherwise training reads past the table, or
    pools every caption at the wrong position without an error)."""
    rows = model.clip.text_model.embeddings.token_embedding.num_embeddings
    if len(tokenizer) > rows:
        raise ModelDirError(
            f"{model_dir}: the tokenizer has {len(tokenizer)} tokens but the model's token table only {rows} rows; "
            f"the tokenizer files belong to another model. Copy the tokenizer of the model these weights came from"
        )
    model_eos = model.clip.text_model.eos_token_id
    if model_eos != 2 and tokenizer.eos_token_id is not None and tokenizer.eos_token_id != model_eos:
        raise ModelDirError(
            f"{model_dir}: the tokenizer's end token has id {tokenizer.eos_token_id}, the model (config.json "
            f"eos_token_id) pools at id {model_eos}; the tokenizer files belong to another model"
        )


def _image_normalisation(path: Path, default: tuple[tuple[float, ...], tuple[float, ...]] = (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
                         ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the directory's preprocessor_config.json, else the family's `default`."""
    processor_file = path / "preprocessor_config.json"
    if not processor_file.is_file():
        log.warning("%s: no preprocessor_config.json; using the family's default mean/std %s", path, default)
        return default
    try:
        processor = json.loads(processor_file.read_text())
    except ValueError as err:
        raise ModelDirError(f"{processor_file}: unreadable JSON ({err}); copy it again from the model you started from") from err
    return tuple(processor.get("image_mean", default[0])), tuple(processor.get("image_std", default[1]))


def squash_and_normalise(frames_uint8: Tensor, size: int, mean: Tensor, std: Tensor) -> Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, size, size) float32: squashed to size x size if needed
    (bilinear, antialiased), then (x / 255 - mean) / std per channel."""
    if frames_uint8.dtype != torch.uint8 or frames_uint8.shape[-1] != 3:
        raise ValueError(f"preprocess expects (..., H, W, 3) uint8 frames, got {tuple(frames_uint8.shape)} {frames_uint8.dtype}")
    leading = frames_uint8.shape[:-3]
    height, width = frames_uint8.shape[-3:-1]
    images = frames_uint8.reshape(-1, height, width, 3).permute(0, 3, 1, 2).float().div_(255.0)
    if (height, width) != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    images = (images - mean.to(images.device)[None, :, None, None]) / std.to(images.device)[None, :, None, None]
    return images.reshape(*leading, 3, size, size)


def pool_regions(dense_maps, boxes: Tensor, box_mask: Tensor, index: BoxIndex, grid: int) -> Tensor:
    """(B*R, D) region embeddings for a family whose dense features come from `dense_maps(frame_rows)`
    ((F', D, g, g) for the frames `index.needed_frames`): RoIAlign 1x1 (aligned) of every visible box,
    masked mean over frames, L2-normalised; regions never visible stay 0."""
    from torchvision.ops import roi_align

    batch, regions = boxes.shape[:2]
    # RoIAlign in float32: under bf16 autocast the frame index column would round (see _region_embeddings).
    dense = dense_maps(index.needed_frames)
    dense = dense.to(torch.promote_types(dense.dtype, torch.float32))
    rois = torch.cat([index.frame_of_box[:, None].to(dense.dtype),
                      boxes.reshape(-1, 4)[index.box].to(dense.dtype) * float(grid)], dim=1)
    pooled = roi_align(dense, rois, output_size=1, spatial_scale=1.0, sampling_ratio=-1, aligned=True).flatten(1)
    sums = pooled.new_zeros(batch * regions, pooled.shape[1]).index_add(0, index.slot, pooled)
    counts = box_mask.to(torch.bool).sum(dim=-1).reshape(-1, 1).to(pooled.dtype)
    return F.normalize(sums / counts.clamp(min=1.0), dim=-1)


def _clip_from_state(contents: ModelDirContents, attn_implementation: str):
    """The CLIPModel of config.json holding the directory's CLIP tensors (all of them, no other)."""
    from transformers import CLIPConfig, CLIPModel
    from transformers.initialization import no_init_weights

    path = contents.path
    try:
        config = CLIPConfig.from_dict(contents.config)
        with no_init_weights():  # every tensor is loaded below; random init of a ViT-L takes seconds
            clip = CLIPModel._from_config(config, attn_implementation=attn_implementation, dtype=torch.float32)
    except (ValueError, TypeError, KeyError) as err:
        raise ModelDirError(f"{path / 'config.json'}: not a CLIP configuration transformers can build ({err})") from err
    clip_state = {name[len(CLIP_PREFIX):]: value for name, value in contents.state.items() if name.startswith(CLIP_PREFIX)}
    try:
        missing, unexpected = clip.load_state_dict(clip_state, strict=False)
    except RuntimeError as err:  # weights of another shape than config.json says
        details = " ".join(str(err).split())
        raise ModelDirError(f"{path}: the weights do not fit config.json ({details})") from err
    _refuse_unused(contents, [CLIP_PREFIX + name for name in unexpected])
    if missing:
        raise ModelDirError(f"{path}: the weights lack {len(missing)} tensors of the CLIP that config.json describes "
                            f"({', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''}); the weights file is "
                            f"incomplete or belongs to another model")
    return clip


def _refuse_unused(contents: ModelDirContents, unexpected: list[str]) -> None:
    if unexpected:
        names = sorted(contents.origin.get(name, name) for name in unexpected)
        raise ModelDirError(f"{contents.path}: {len(names)} tensors this model would not use: {'; '.join(names)}. "
                            f"Layout recognised: {contents.description}. Nothing is dropped silently: remove them, "
                            f"or use the tool they belong to")


class FGCLIPVideo(nn.Module):
    """CLIP + long text positions + temporal pooling + region features + three temperatures."""

    family = "clip"
    objective = "infonce"
    bilingual = False  # CLIP's BPE is English; other scripts become byte fragments
    text_rules = CLIP_TEXT_RULES

    def __init__(
        self,
        clip,
        *,
        image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN,
        image_std: tuple[float, ...] = OPENAI_CLIP_STD,
        temporal_layers: int = 2,
        temporal_heads: int | None = None,
        aux_files: dict[str, bytes] | None = None,
    ) -> None:
        super().__init__()
        self.clip = clip
        text_config, vision_config = clip.config.text_config, clip.config.vision_config
        for sub_config in (text_config, vision_config):
            if getattr(sub_config, "attention_dropout", 0.0):
                log.warning("attention_dropout %.3g set to 0: gradient caching needs a deterministic forward",
                            sub_config.attention_dropout)
                sub_config.attention_dropout = 0.0
        self.image_size: int = vision_config.image_size
        self.patch_grid: int = vision_config.image_size // vision_config.patch_size
        self.embed_dim: int = clip.config.projection_dim
        self._aux_files = dict(aux_files or {})
        self._checkpointing = False
        self._cls_head = self._cls_embedding  # compile_blocks() replaces both heads by compiled ones
        self._dense_head = self._dense_patch_features

        short_table = clip.text_model.embeddings.position_embedding.weight.detach()
        self.long_positions = LongTextPositions(long_position_table(short_table))
        text_projection = clip.text_projection
        self.long_text_projection = nn.Linear(text_projection.in_features, text_projection.out_features, bias=False)
        with torch.no_grad():  # FG-CLIP's start: long captions project as short ones do
            self.long_text_projection.weight.copy_(text_projection.weight)
        self.source_layout: str | None = None  # set by from_pretrained: the layout of the directory read
        # set by from_pretrained: the source's shards (file tensor name -> file), so exports keep them
        self.source_weight_map: dict[str, str] | None = None
        if temporal_heads is None:
            temporal_heads = 8 if self.embed_dim % 8 == 0 else 1
        self.temporal = TemporalPooling(self.embed_dim, num_layers=temporal_layers, num_heads=temporal_heads)
        initial_scale = clip.logit_scale.detach().clone().float()
        self.logit_scales = nn.ParameterDict({name: nn.Parameter(initial_scale.clone()) for name in ("global", "region", "hard")})
        # CLIP's own logit_scale is replaced by the three above; keep it frozen and untouched.
        clip.logit_scale.requires_grad_(False)

        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32), persistent=False)

    # --- loading and saving ---------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, *, attn_implementation: str = "sdpa") -> "FGCLIPVideo":
        """A plain HF CLIP or FG-CLIP v1 directory (the parts it lacks start as from CLIP), or one
        of our checkpoints (everything loaded). Every tensor is used; any other is a ModelDirError."""
        path = Path(path)
        contents = read_model_dir(path)
        _avoid_cudnn_attention()
        clip = _clip_from_state(contents, attn_implementation)
        extras = contents.extras_config
        mean, std = _image_normalisation(path)
        aux_files = side_files(path)  # tokenizer, processor and remote code travel with every save
        try:
            model = cls(
                clip,
                image_mean=mean,
                image_std=std,
                temporal_layers=extras.get("temporal_layers", 2),
                temporal_heads=extras.get("temporal_heads"),
                aux_files=aux_files,
            )
        except ValueError as err:
            raise ModelDirError(f"{path / EXTRAS_CONFIG_NAME}: does not fit this CLIP ({err})") from err
        ours = {name: value for name, value in contents.state.items() if not name.startswith(CLIP_PREFIX)}
        try:
            missing, unexpected = model.load_state_dict(ours, strict=False)
        except RuntimeError as err:
            # e.g. extras written for a model of another width: the message lists the shapes
            details = " ".join(str(err).split())  # one line
            where = path / EXTRAS_WEIGHTS_NAME if (path / EXTRAS_WEIGHTS_NAME).is_file() else path
            raise ModelDirError(f"{where}: does not fit the CLIP weights of {path} (damaged, or "
                                f"copied from another model): {details}") from err
        _refuse_unused(contents, unexpected)
        missing = [name for name in missing if not name.startswith(CLIP_PREFIX)]
        if missing and contents.complete:
            raise ModelDirError(f"{path / EXTRAS_WEIGHTS_NAME}: lacks {', '.join(missing)}; the checkpoint is damaged, "
                                f"use an earlier one")
        model.source_layout = contents.layout
        # a checkpoint of ours remembers the shards of the release it started from, for exports
        model.source_weight_map = contents.weight_map or extras.get("source_weight_map")
        return model

    def aux_files(self) -> dict[str, bytes]:
        """The tokenizer and image-processor files of the directory this model came from (name -> content)."""
        return dict(self._aux_files)

    def extra_state_dict(self) -> dict[str, Tensor]:
        """Our parameters that are not part of the CLIPModel (what `fgclip_video.safetensors` holds)."""
        return {name: value for name, value in self.state_dict().items() if not name.startswith(CLIP_PREFIX)}

    def save_pretrained(self, path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.clip.save_pretrained(str(path), safe_serialization=True)
        for name, content in self._aux_files.items():
            (path / name).write_bytes(content)
        tensors = {name: value.detach().contiguous().cpu() for name, value in self.extra_state_dict().items()}
        save_file(tensors, str(path / EXTRAS_WEIGHTS_NAME))
        extras = {
            "format_version": EXTRAS_FORMAT_VERSION,
            "temporal_layers": len(self.temporal.blocks),
            "temporal_heads": self.temporal.num_heads,
            "long_text_length": self.long_positions.num_rows,
            "long_keep_rows": self.long_positions.keep_rows,
            "long_expansion": LONG_EXPANSION,
        }
        if self.source_weight_map:
            extras["source_weight_map"] = self.source_weight_map
        (path / EXTRAS_CONFIG_NAME).write_text(json.dumps(extras, indent=2) + "\n")

    # --- options ----------------------------------------------------------------------------

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each transformer block of both towers in backward instead of storing it."""
        self._checkpointing = bool(enabled)

    def compile_blocks(self) -> None:
        """torch.compile every transformer block that runs whole (vision blocks but the last, whose
        parts the CLS and dense paths call separately; all text blocks). Identical blocks share one
        compiled graph; it fuses the norms, activations and bias adds that run eager as separate
        memory-bound kernels. Works with gradient checkpointing (the checkpoint wraps the compiled block)."""
        for layer in (*self.clip.vision_model.encoder.layers[:-1], *self.clip.text_model.encoder.layers):
            layer.compile()
        # The last vision block runs as two heads; compiled, their norms, GELU and residual adds
        # fuse too. The dense head sees as many frames as have a visible box: dynamic from the start.
        self._cls_head = torch.compile(self._cls_embedding)
        self._dense_head = torch.compile(self._dense_patch_features, dynamic=True)

    def _run_layer(self, layer: nn.Module, hidden: Tensor, attention_mask: Tensor | None, **kwargs) -> Tensor:
        if self._checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(layer, hidden, attention_mask, use_reentrant=False, **kwargs)
        return layer(hidden, attention_mask, **kwargs)

    # --- images -------------------------------------------------------------------------------

    def preprocess(self, frames_uint8: Tensor) -> Tensor:
        """(..., H, W, 3) uint8 -> (..., 3, S, S) float32, squashed to S x S if needed, normalised."""
        return squash_and_normalise(frames_uint8, self.image_size, self.image_mean, self.image_std)

    def _vision_trunk(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> hidden states entering the last vision block, (N, 1 + P, W)."""
        vision = self.clip.vision_model
        hidden = vision.pre_layrnorm(vision.embeddings(pixels))
        for layer in vision.encoder.layers[:-1]:
            hidden = self._run_layer(layer, hidden, None)
        return hidden

    def _cls_embedding(self, hidden: Tensor) -> Tensor:
        """The last block for the CLS query only (other tokens' outputs are never used) -> projection."""
        layer = self.clip.vision_model.encoder.layers[-1]
        attention = layer.self_attn
        normed = layer.layer_norm1(hidden)
        batch, tokens, width = normed.shape
        split = lambda t: t.view(batch, t.shape[1], attention.num_heads, -1).transpose(1, 2)  # noqa: E731
        query = split(attention.q_proj(normed[:, :1]))
        attended = F.scaled_dot_product_attention(
            query, split(attention.k_proj(normed)), split(attention.v_proj(normed)), scale=attention.scale
        )
        cls = hidden[:, :1] + attention.out_proj(attended.transpose(1, 2).reshape(batch, 1, width))
        cls = cls + layer.mlp(layer.layer_norm2(cls))
        pooled = self.clip.vision_model.post_layernorm(cls[:, 0])
        return self.clip.visual_projection(pooled)

    def _dense_patch_features(self, hidden: Tensor) -> Tensor:
        """(N, 1 + P, W) -> (N, D, g, g): the last block with attention reduced to its value and
        output projections (each patch attends only to itself), post-layernorm, projection."""
        layer = self.clip.vision_model.encoder.layers[-1]
        patches = hidden[:, 1:]
        patches = patches + layer.self_attn.out_proj(layer.self_attn.v_proj(layer.layer_norm1(patches)))
        patches = patches + layer.mlp(layer.layer_norm2(patches))
        dense = self.clip.visual_projection(self.clip.vision_model.post_layernorm(patches))  # (N, P, D)
        return dense.transpose(1, 2).reshape(dense.shape[0], dense.shape[2], self.patch_grid, self.patch_grid)

    def dense_features(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, D, g, g) dense patch features (the region path), L2-normalised per patch."""
        return F.normalize(self._dense_patch_features(self._vision_trunk(pixels)), dim=1)

    def frame_features(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, D) frame embeddings before normalisation: CLS -> post-layernorm ->
        visual projection (what the field's snippet-feature files hold)."""
        return self._cls_head(self._vision_trunk(pixels))

    def encode_frames(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, D) L2-normalised frame embeddings (the CLS path)."""
        return F.normalize(self.frame_features(pixels), dim=-1)

    def dense_features(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, D, g, g) patch embeddings, each L2-normalised over D: the dense path
        that region embeddings pool from (g = `patch_grid`; row 0 is the top of the image)."""
        return F.normalize(self._dense_patch_features(self._vision_trunk(pixels)), dim=1)

    def encode_video(self, pixels: Tensor, boxes: Tensor, box_mask: Tensor, index: BoxIndex | None = None) -> VideoOutput:
        """(B, T, 3, S, S), boxes (B, R, T, 4) x1 y1 x2 y2 in 0..1, box_mask (B, R, T) -> VideoOutput.

        `index`: the visible boxes of `box_mask`, planned on the host (`fgclip.models.region_index`);
        without it the model plans them itself, which makes the host wait for the GPU once."""
        batch, frames = pixels.shape[:2]
        regions = boxes.shape[1]
        if index is None:
            index = box_index(box_mask)
        hidden = self._vision_trunk(pixels.reshape(batch * frames, *pixels.shape[2:]))
        frame_embeds = F.normalize(self._cls_head(hidden), dim=-1).view(batch, frames, -1)
        video_embeds = F.normalize(self.temporal(frame_embeds), dim=-1)
        region_embeds = self._region_embeddings(hidden, boxes, box_mask, index)
        return VideoOutput(video_embeds=video_embeds, frame_embeds=frame_embeds, region_embeds=region_embeds.view(batch, regions, -1))

    def _region_embeddings(self, hidden: Tensor, boxes: Tensor, box_mask: Tensor, index: BoxIndex) -> Tensor:
        """(B*R, D): RoIAlign of the dense features per visible (region, frame), masked mean over frames.
        The dense pass runs only on frames that have a visible box."""
        from torchvision.ops import roi_align

        batch, regions = boxes.shape[:2]
        # RoIAlign in float32: under bf16 autocast the frame index column of `rois` would round
        # (bf16 holds integers exactly only up to 256) and point at the wrong, or a missing, frame.
        dense = self._dense_head(hidden[index.needed_frames])  # (F', D, g, g)
        dense = dense.to(torch.promote_types(dense.dtype, torch.float32))
        grid = float(self.patch_grid)
        frame_column = index.frame_of_box[:, None].to(dense.dtype)
        rois = torch.cat([frame_column, boxes.reshape(-1, 4)[index.box].to(dense.dtype) * grid], dim=1)
        pooled = roi_align(dense, rois, output_size=1, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        pooled = pooled.flatten(1)  # (K, D)
        sums = pooled.new_zeros(batch * regions, pooled.shape[1]).index_add(0, index.slot, pooled)
        counts = box_mask.to(torch.bool).sum(dim=-1).reshape(-1, 1).to(pooled.dtype)
        return F.normalize(sums / counts.clamp(min=1.0), dim=-1)  # regions never visible stay 0

    # --- text -----------------------------------------------------------------------------------

    def text_token_embedding(self) -> nn.Embedding:
        """The text tower's token embedding table (heads build learnable prompt context in its space)."""
        return self.clip.text_model.embeddings.token_embedding

    def encode_text(self, input_ids: Tensor, kind: str, attention_mask: Tensor | None = None,
                    token_embeds: Tensor | None = None) -> Tensor:
        """(N, L) token ids -> (N, D) L2-normalised. kind "long": the 248 long positions and the long
        projection (global captions); "short" and "box" (one and the same for CLIP): CLIP's 77
        positions and text_projection. `attention_mask` is accepted for the family interface and
        not needed: under CLIP's causal mask no token before the end token sees the padding after it.
        `token_embeds` (N, L, W): used instead of the ids' embeddings (learnable prompt context); the
        ids still say where the end token is."""
        if kind not in TEXT_KINDS:
            raise ValueError(f"unknown text kind {kind!r}; one of {', '.join(TEXT_KINDS)}")
        long = kind == "long"
        text = self.clip.text_model
        length = input_ids.shape[1]
        rows = self.long_positions.num_rows if long else text.embeddings.position_embedding.num_embeddings
        if length > rows:
            kind = "long" if long else "short"
            raise ValueError(f"{length} text tokens exceed the {kind} position table ({rows} rows)")
        positions = self.long_positions.table(length) if long else text.embeddings.position_embedding.weight[:length]
        tokens = text.embeddings.token_embedding(input_ids) if token_embeds is None else token_embeds
        hidden = tokens + positions
        # SDPA/flash take causality as a flag (fast kernels); eager attention needs an additive mask.
        attention_mask = None
        if text.config._attn_implementation == "eager":
            attention_mask = torch.full((length, length), torch.finfo(hidden.dtype).min, device=hidden.device,
                                        dtype=hidden.dtype).triu(1)[None, None]
        for layer in text.encoder.layers:
            hidden = self._run_layer(layer, hidden, attention_mask, is_causal=True)
        hidden = text.final_layer_norm(hidden)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), self._eos_positions(input_ids)]
        projection = self.long_text_projection if long else self.clip.text_projection
        return F.normalize(projection(pooled), dim=-1)

    def _eos_positions(self, input_ids: Tensor) -> Tensor:
        """Where each sequence's end-of-text token is, with the same rule as transformers' CLIP."""
        eos_token_id = self.clip.text_model.eos_token_id
        if eos_token_id == 2:
            # Old OpenAI configs carry eos_token_id=2; their end token is the highest id in the vocab.
            return input_ids.to(torch.int).argmax(dim=-1)
        return (input_ids == eos_token_id).to(torch.int).argmax(dim=-1)

    # --- temperatures ---------------------------------------------------------------------------

    def temperatures(self) -> dict[str, Tensor]:
        """{"global", "region", "hard"}: exp(log scale), clamped at 100 (CLIP's cap)."""
        return {name: scale.exp().clamp(max=MAX_LOGIT_SCALE) for name, scale in self.logit_scales.items()}

    def logit_biases(self) -> dict[str, Tensor]:
        """None: the InfoNCE losses have no bias (the sigmoid family's model has one per term)."""
        return {}

    def check_tokenizer(self, tokenizer, model_dir) -> None:
        check_tokenizer(self, tokenizer, model_dir)
