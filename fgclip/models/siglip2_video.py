"""The FG-CLIP 2 video model: transformers' SigLIP 2 towers plus FG-CLIP 2's additions.

FG-CLIP 2 (360CVGroup, bilingual English/Chinese) is SigLIP 2 with:

* long texts: a `longtext_len`-row position table (196 = 64 x 4 - 60) in two halves, `ori` for
  the first `keep_len` (20) positions and `res` for the rest, built from SigLIP 2's 64 rows with
  the same stretch rule as FG-CLIP (`fgclip.models.clip_video.long_position_table`);
* three text heads on the last token's hidden state (the text tower has no causal mask and
  pools at the last position, padding included): short texts `text_model.head`, box texts
  `boxtext_head`, long texts `longtext_head`;
* dense features: `dense_feature_head` (attention, layernorm, mlp of a SigLIP attention-pooling
  head) with every patch token as a query over the last hidden state, then LN + MLP residual;
* scores: cosine x exp(logit_scale) + logit_bias, trained with the pairwise sigmoid loss. The
  scale is used as stored, never clamped (FG-CLIP 2 does not clamp; released SigLIP-family scales
  lie above CLIP's cap of 100, and a clamp would also stop its gradient);
* FG-CLIP 2's trainer (`train_fgclip2.py`) adds `logit_scale_finegraind` and `logit_scale_hardneg`
  (its region and hard-negative scales) and saves them: they are read as our region and hard
  scales and written back in FG-CLIP 2's layout when the source had them.

What this model adds for video, as in the CLIP family (`fgclip.models.clip_video`): frame embeddings are
the vision tower's pooled output (its attention-pooling head), pooled over time by
`TemporalPooling` (mean pooling at initialisation); region embeddings are RoIAlign'ed dense
features averaged over the frames where the region is visible; separate scale and bias for the
region and hard-negative terms, initialised from the global ones.

Images: fixed resolution. Frames are squashed to a square grid of `image_size / patch` patches
and patchified in SigLIP 2's order; the vision tower gets the NaFlex inputs (patch rows,
`spatial_shapes`, an all-true `pixel_attention_mask`) with the position grid resized to the
patch grid by transformers' own resize. Variable aspect ratios and patch counts per image
(NaFlex proper) are not supported.

Checkpoint layout: FG-CLIP 2's own (config.json with model_type fgclip2, model.safetensors with
its names, or shards with `model.safetensors.index.json`, see `fgclip.models.fgclip2_layout` and
`fgclip.models.dir_files`), the tokenizer, preprocessor and remote-code files, and our extras
`fgclip_video.json` / `fgclip_video.safetensors` (temporal module, region/hard scales and biases).
A plain SigLIP 2 directory (model_type siglip2) loads too: the additions start as FG-CLIP 2
starts them (long table stretched, box/long heads copies of `text_model.head`, dense head a copy
of the vision pooling head).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fgclip.models import fgclip2_layout as layout
from fgclip.models.clip_video import (
    EXTRAS_CONFIG_NAME,
    EXTRAS_FORMAT_VERSION,
    EXTRAS_WEIGHTS_NAME,
    ModelDirError,
    TemporalPooling,
    VideoOutput,
    _avoid_cudnn_attention,
    long_position_table,
    pool_regions,
    squash_and_normalise,
)
from fgclip.models.dir_files import read_safetensors_weights, side_files, write_safetensors_weights
from fgclip.models.text import TextRules

log = logging.getLogger(__name__)

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
_EXTRA_PREFIXES = ("temporal.", "term_scales.", "term_biases.")


class FGCLIP2Video(nn.Module):
    """SigLIP 2 towers + FG-CLIP 2's long positions, text heads and dense head + temporal pooling."""

    family = "siglip2"
    objective = "sigmoid"
    bilingual = True  # FG-CLIP 2 is trained on English and Chinese

    def __init__(self, siglip, *, keep_len: int = layout.DEFAULT_KEEP_LEN,
                 longtext_len: int = layout.DEFAULT_LONGTEXT_LEN,
                 image_mean: tuple[float, ...] = SIGLIP_MEAN, image_std: tuple[float, ...] = SIGLIP_STD,
                 temporal_layers: int = 2, temporal_heads: int | None = None,
                 aux_files: dict[str, bytes] | None = None, source_config: dict | None = None) -> None:
        """`siglip`: a transformers `Siglip2Model` (its towers and scale/bias are taken over)."""
        super().__init__()
        from transformers.models.siglip2.modeling_siglip2 import Siglip2MultiheadAttentionPoolingHead

        self.config = siglip.config
        text_config, vision_config = siglip.config.text_config, siglip.config.vision_config
        if not getattr(vision_config, "vision_use_head", True):
            raise ValueError("the vision tower has no pooling head (vision_use_head false); FG-CLIP 2 needs it")
        if not (text_config.hidden_size == text_config.projection_size == vision_config.hidden_size):
            raise ValueError(
                f"text width {text_config.hidden_size}, text projection {text_config.projection_size} and vision "
                f"width {vision_config.hidden_size} differ; FG-CLIP 2's heads need them equal")
        self.text_model = siglip.text_model
        self.vision_model = siglip.vision_model
        self.logit_scale = siglip.logit_scale
        self.logit_bias = siglip.logit_bias
        width = text_config.hidden_size
        self.keep_len = keep_len
        # Named as in FG-CLIP 2's checkpoints (text_model.embeddings.position_embedding_ori/res).
        embeddings = self.text_model.embeddings
        embeddings.position_embedding_ori = nn.Embedding(longtext_len, width)
        embeddings.position_embedding_res = nn.Embedding(longtext_len, width)
        self.longtext_head = nn.Linear(width, width)
        self.boxtext_head = nn.Linear(width, width)
        self.dense_feature_head = Siglip2MultiheadAttentionPoolingHead(vision_config)
        self.start_additions_from_siglip()

        self.patch_size: int = vision_config.patch_size
        self.position_grid: int = int(round(vision_config.num_patches ** 0.5))
        if self.position_grid ** 2 != vision_config.num_patches:
            raise ValueError(f"num_patches {vision_config.num_patches} is not a square; the position grid must be")
        # Fixed resolution: the square grid of the position table (NaFlex's choice for square frames).
        self.patch_grid: int = self.position_grid
        self.image_size: int = self.patch_grid * self.patch_size
        self.embed_dim: int = width
        self.text_rules = TextRules(long_length=longtext_len, short_length=text_config.max_position_embeddings,
                                    lowercase=True, full_length=True)
        self._aux_files = dict(aux_files or {})
        self._source_config = source_config
        self._checkpointing = False
        # Set by from_pretrained: the source's shards (name -> file), kept by every save, and whether
        # it carried FG-CLIP 2's trainer scalars (then saves write them back in FG-CLIP 2's layout).
        self.source_weight_map: dict[str, str] | None = None
        self.trainer_scalars = False
        self.source_layout: str | None = None  # set by from_pretrained (a key of fgclip.models.layouts.LAYOUT_DESCRIPTIONS)

        if temporal_heads is None:
            temporal_heads = 8 if width % 8 == 0 else 1
        self.temporal = TemporalPooling(width, num_layers=temporal_layers, num_heads=temporal_heads)
        scale, bias = self.logit_scale.detach().reshape(()).float(), self.logit_bias.detach().reshape(()).float()
        # The global term uses FG-CLIP 2's logit_scale / logit_bias; region and hard terms their own.
        self.term_scales = nn.ParameterDict({name: nn.Parameter(scale.clone()) for name in ("region", "hard")})
        self.term_biases = nn.ParameterDict({name: nn.Parameter(bias.clone()) for name in ("region", "hard")})
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32), persistent=False)

    def start_additions_from_siglip(self) -> None:
        """FG-CLIP 2's start from SigLIP 2: long table stretched from the 64 rows (ori = res), box and
        long heads copies of the text head, dense head a copy of the vision pooling head."""
        embeddings = self.text_model.embeddings
        with torch.no_grad():
            stretched = long_position_table(embeddings.position_embedding.weight, keep_rows=self.keep_len)
            rows = embeddings.position_embedding_ori.weight.shape[0]
            if stretched.shape[0] != rows:
                raise ValueError(f"longtext_len {rows} is not {stretched.shape[0]} (= 4 x positions - 3 x keep_len)")
            embeddings.position_embedding_ori.weight.copy_(stretched)
            embeddings.position_embedding_res.weight.copy_(stretched)
            for head in (self.longtext_head, self.boxtext_head):
                head.load_state_dict(self.text_model.head.state_dict())
            self.dense_feature_head.load_state_dict(self.vision_model.head.state_dict())

    # --- loading and saving ---------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, *, attn_implementation: str = "sdpa") -> "FGCLIP2Video":
        """An FG-CLIP 2 directory, a plain SigLIP 2 directory, or one of our checkpoints of this family.

        Every tensor of the weights (one file, or the shards an index names) is used or refused by
        name: unknown names and missing ones are a ModelDirError (FG-CLIP 2's additions may be missing
        only from a siglip2 directory; its trainer's two scalars are optional)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from transformers import Siglip2Model

        from fgclip.models.clip_video import _image_normalisation

        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        model_type = config.get("model_type")
        try:
            siglip_config, keep_len, longtext_len = layout.siglip2_config(config)
        except (TypeError, ValueError) as err:
            raise ModelDirError(f"{path / 'config.json'}: not a usable {model_type} config ({err})") from err
        siglip_config._attn_implementation = attn_implementation
        _avoid_cudnn_attention()
        weights, weight_map = read_safetensors_weights(path)
        try:
            weights, trainer_scalars = layout.read_trainer_scalars(weights)
        except ValueError as err:
            raise ModelDirError(f"{path}: {err}") from err
        extras_file = path / EXTRAS_CONFIG_NAME
        try:
            extras = json.loads(extras_file.read_text()) if extras_file.is_file() else {}
        except ValueError as err:
            raise ModelDirError(f"{extras_file}: unreadable JSON ({err}); the checkpoint is damaged") from err
        mean, std = _image_normalisation(path, default=(SIGLIP_MEAN, SIGLIP_STD))
        aux_files = side_files(path)  # tokenizer, processor and remote code travel with every save
        try:
            siglip = Siglip2Model(siglip_config).float()
            model = cls(siglip, keep_len=keep_len, longtext_len=longtext_len, image_mean=mean, image_std=std,
                        temporal_layers=extras.get("temporal_layers", 2), temporal_heads=extras.get("temporal_heads"),
                        aux_files=aux_files, source_config=config)
        except ValueError as err:
            raise ModelDirError(f"{path}: {err}") from err
        if extras:
            extra_weights = path / EXTRAS_WEIGHTS_NAME
            if not extra_weights.is_file():
                raise ModelDirError(f"{path}: {EXTRAS_CONFIG_NAME} is present but {EXTRAS_WEIGHTS_NAME} is missing")
            try:
                extra_tensors = load_file(str(extra_weights))
            except (OSError, SafetensorError) as err:
                raise ModelDirError(f"{extra_weights}: unreadable ({err}); the checkpoint is damaged, use an earlier one") from err
            given_twice = sorted(set(extra_tensors) & set(trainer_scalars))
            if given_twice:
                raise ModelDirError(f"{path}: {', '.join(given_twice)} given both by the model weights (FG-CLIP 2's trainer "
                                    f"scalars) and by {EXTRAS_WEIGHTS_NAME}; remove one (they are not the same checkpoint)")
            weights.update(extra_tensors)
        weights.update(trainer_scalars)
        model._load_named_tensors(weights, path, with_additions=model_type == layout.FGCLIP2_MODEL_TYPE,
                                  with_extras=bool(extras), with_trainer_scalars=bool(trainer_scalars))
        model.source_layout = "fgclip2+fgclip-vad" if extras else model_type
        model.source_weight_map = weight_map
        model.trainer_scalars = bool(trainer_scalars)
        return model

    def _load_named_tensors(self, weights: dict[str, Tensor], path: Path, *, with_additions: bool,
                            with_extras: bool, with_trainer_scalars: bool) -> None:
        expected = self.state_dict()
        given_scales = set(layout.TRAINER_SCALARS.values()) if with_trainer_scalars else set()
        optional = [name for name in expected if name not in given_scales and (
            (not with_additions and layout.is_addition(name)) or (not with_extras and name.startswith(_EXTRA_PREFIXES)))]
        unknown = sorted(set(weights) - set(expected))
        missing = sorted(set(expected) - set(weights) - set(optional))
        if unknown or missing:
            raise ModelDirError(f"{path}: the weights do not match this {self.config.model_type} model: "
                                f"unknown tensors {unknown[:8]}{' ...' if len(unknown) > 8 else ''}, "
                                f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
                                f"is config.json the one of these weights?")
        wrong = [f"{name} {tuple(weights[name].shape)} vs {tuple(expected[name].shape)}" for name in weights
                 if weights[name].shape != expected[name].shape and not (
                     name in given_scales and weights[name].numel() == 1)]  # scalars saved as () or (1,)
        if wrong:
            raise ModelDirError(f"{path}: tensors of another shape than config.json says: {wrong[:5]}")
        weights = {name: value.reshape(expected[name].shape) for name, value in weights.items()}
        self.load_state_dict(weights, strict=False)
        if not with_additions:
            self.start_additions_from_siglip()
        if not with_extras:
            with torch.no_grad():  # FG-CLIP 2's region/hard terms have no bias: start ours from the global one
                for name in ("region", "hard"):
                    if not with_trainer_scalars:
                        self.term_scales[name].copy_(self.logit_scale.reshape(()))
                    self.term_biases[name].copy_(self.logit_bias.reshape(()))

    def aux_files(self) -> dict[str, bytes]:
        """The tokenizer and image-processor files of the directory this model came from (name -> content)."""
        return dict(self._aux_files)

    def extra_state_dict(self) -> dict[str, Tensor]:
        """Our parameters beyond FG-CLIP 2's (what `fgclip_video.safetensors` holds); the region and
        hard scales are FG-CLIP 2's trainer scalars when the source had them, so not extras then."""
        in_main = set(layout.TRAINER_SCALARS.values()) if self.trainer_scalars else set()
        return {name: value for name, value in self.state_dict().items()
                if name.startswith(_EXTRA_PREFIXES) and name not in in_main}

    def fgclip2_state_dict(self) -> dict[str, Tensor]:
        """The weights in FG-CLIP 2's layout (every name FG-CLIP 2's model has, plus its trainer's
        two scalars when the source had them; nothing else)."""
        state = self.state_dict()
        weights = {name: value for name, value in state.items() if not name.startswith(_EXTRA_PREFIXES)}
        if self.trainer_scalars:
            weights.update({theirs: state[ours] for theirs, ours in layout.TRAINER_SCALARS.items()})
        return weights

    def save_pretrained(self, path, *, with_extras: bool = True) -> list[str]:
        """FG-CLIP 2's layout (config.json, model.safetensors or the source's shards), the tokenizer,
        preprocessor and remote-code files, and (unless `with_extras` is false, as for an export) our
        extras. Returns the names of the model weight files written."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = layout.fgclip2_config_dict(self.config, keep_len=self.keep_len,
                                            longtext_len=self.text_rules.long_length, source=self._source_config)
        (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        weight_files = write_safetensors_weights(path, self.fgclip2_state_dict(), weight_map=self.source_weight_map)
        for name, content in self._aux_files.items():
            (path / name).write_bytes(content)
        if not with_extras:
            for stale in (EXTRAS_CONFIG_NAME, EXTRAS_WEIGHTS_NAME):  # of an earlier save into the same place
                (path / stale).unlink(missing_ok=True)
            return weight_files
        save_file({name: value.detach().contiguous().cpu() for name, value in self.extra_state_dict().items()},
                  str(path / EXTRAS_WEIGHTS_NAME))
        extras = {"format_version": EXTRAS_FORMAT_VERSION, "family": self.family,
                  "temporal_layers": len(self.temporal.blocks), "temporal_heads": self.temporal.num_heads}
        (path / EXTRAS_CONFIG_NAME).write_text(json.dumps(extras, indent=2) + "\n")
        return weight_files

    def check_tokenizer(self, tokenizer, model_dir) -> None:
        """ModelDirError unless every id of `tokenizer` is inside the token table."""
        rows = self.text_model.embeddings.token_embedding.num_embeddings
        if len(tokenizer) > rows:
            raise ModelDirError(
                f"{model_dir}: the tokenizer has {len(tokenizer)} tokens but the model's token table only {rows} rows; "
                f"the tokenizer files belong to another model. Copy the tokenizer of the model these weights came from")

    # --- options ----------------------------------------------------------------------------

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each transformer block of both towers in backward instead of storing it."""
        self._checkpointing = bool(enabled)

    def compile_blocks(self) -> None:
        """torch.compile every transformer block of both towers (identical blocks share a graph)."""
        for layer in (*self.vision_model.encoder.layers, *self.text_model.encoder.layers):
            layer.compile()

    def _run_layers(self, layers, hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        for layer in layers:
            if self._checkpointing and self.training and torch.is_grad_enabled():
                hidden = torch.utils.checkpoint.checkpoint(layer, hidden, attention_mask, use_reentrant=False)
            else:
                hidden = layer(hidden, attention_mask)
        return hidden

    # --- images -------------------------------------------------------------------------------

    def preprocess(self, frames_uint8: Tensor) -> Tensor:
        """(..., H, W, 3) uint8 -> (..., 3, S, S) float32: squashed to S x S (bilinear), mean/std normalised."""
        return squash_and_normalise(frames_uint8, self.image_size, self.image_mean, self.image_std)

    def naflex_inputs(self, pixels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(N, 3, S, S) -> SigLIP 2's inputs: patch rows (N, g*g, p*p*3) in its order (row, column,
        channel within a patch), pixel_attention_mask (N, g*g) all true, spatial_shapes (N, 2) = (g, g)."""
        count, channels, height, width = pixels.shape
        p, g = self.patch_size, height // self.patch_size
        if height != width or height % p:
            raise ValueError(f"fixed-resolution input must be square and a multiple of {p} px, got {height}x{width}")
        patches = pixels.reshape(count, channels, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(count, g * g, p * p * channels)
        mask = torch.ones(count, g * g, dtype=torch.long, device=pixels.device)
        shapes = torch.tensor([[g, g]], dtype=torch.long, device=pixels.device).expand(count, 2)
        return patches, mask, shapes

    def _vision_hidden(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> the vision tower's last hidden state after post-layernorm, (N, g*g, W)."""
        patches, pixel_mask, spatial_shapes = self.naflex_inputs(pixels)
        embeddings = self.vision_model.embeddings
        hidden = embeddings.patch_embedding(patches.to(embeddings.patch_embedding.weight.dtype))
        grid = self.position_grid
        table = embeddings.position_embedding.weight
        if int(spatial_shapes[0, 0]) == grid:
            positions = table[None]  # the stored grid: transformers' resize is the identity
        else:
            # Every frame has the same grid: resize once (transformers' own bilinear/antialias rule).
            positions = embeddings.resize_positional_embeddings(table.reshape(grid, grid, -1), spatial_shapes[:1],
                                                                max_length=patches.shape[1])
        hidden = hidden + positions
        # All patches are real at fixed resolution, so the bidirectional mask is empty (None) here.
        attention_mask = None if bool(pixel_mask.all()) else self._additive_mask(pixel_mask, hidden.dtype)
        hidden = self._run_layers(self.vision_model.encoder.layers, hidden, attention_mask)
        return self.vision_model.post_layernorm(hidden)

    @staticmethod
    def _additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
        blocked = (mask[:, None, None, :] == 0)
        return torch.zeros(blocked.shape, dtype=dtype, device=mask.device).masked_fill(blocked, torch.finfo(dtype).min)

    def _dense(self, hidden: Tensor) -> Tensor:
        """(N, P, W) last hidden state -> (N, P, W) dense features (FG-CLIP 2's dense_feature_head)."""
        head = self.dense_feature_head
        attended = head.attention(hidden, hidden, hidden, need_weights=False)[0]
        return attended + head.mlp(head.layernorm(attended))

    def dense_features(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, D, g, g) dense patch features, L2-normalised per patch."""
        dense = F.normalize(self._dense(self._vision_hidden(pixels)), dim=-1)
        return dense.transpose(1, 2).reshape(dense.shape[0], dense.shape[2], self.patch_grid, self.patch_grid)

    def frame_features(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, D) frame embeddings before normalisation: the vision pooling head's
        output (what the field's snippet-feature files hold)."""
        return self.vision_model.head(self._vision_hidden(pixels))

    def encode_frames(self, pixels: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, D) L2-normalised frame embeddings (the vision pooling head)."""
        return F.normalize(self.frame_features(pixels), dim=-1)

    def encode_video(self, pixels: Tensor, boxes: Tensor, box_mask: Tensor, index=None) -> VideoOutput:
        """(B, T, 3, S, S), boxes (B, R, T, 4) x1 y1 x2 y2 in 0..1, box_mask (B, R, T) -> VideoOutput.
        `index`: the visible boxes (`fgclip.models.region_index.box_index(box_mask)`, computed here if not given)."""
        from fgclip.models.region_index import box_index

        if index is None:
            index = box_index(box_mask)
        batch, frames = pixels.shape[:2]
        hidden = self._vision_hidden(pixels.reshape(batch * frames, *pixels.shape[2:]))
        frame_embeds = F.normalize(self.vision_model.head(hidden), dim=-1).view(batch, frames, -1)
        video_embeds = F.normalize(self.temporal(frame_embeds), dim=-1)

        def dense_maps(frame_rows: Tensor) -> Tensor:
            dense = self._dense(hidden[frame_rows])
            return dense.transpose(1, 2).reshape(dense.shape[0], dense.shape[2], self.patch_grid, self.patch_grid)

        region_embeds = pool_regions(dense_maps, boxes, box_mask, index, self.patch_grid)
        return VideoOutput(video_embeds=video_embeds, frame_embeds=frame_embeds,
                           region_embeds=region_embeds.view(batch, boxes.shape[1], -1))

    # --- text -----------------------------------------------------------------------------------

    def long_position_rows(self) -> Tensor:
        """FG-CLIP 2's long positions: ori for the first keep_len rows, res after."""
        embeddings = self.text_model.embeddings
        return torch.cat([embeddings.position_embedding_ori.weight[:self.keep_len],
                          embeddings.position_embedding_res.weight[self.keep_len:]])

    def text_token_embedding(self) -> nn.Embedding:
        """The text tower's token embedding table (heads build learnable prompt context in its space)."""
        return self.text_model.embeddings.token_embedding

    def encode_text(self, input_ids: Tensor, kind: str, attention_mask: Tensor | None = None,
                    token_embeds: Tensor | None = None) -> Tensor:
        """(N, L) token ids -> (N, D) L2-normalised; kind "long" (long positions, longtext_head),
        "short" (text_model.head) or "box" (boxtext_head). Pooled at the last position, so ids
        should be padded to the full length of their kind (`text_rules`).

        `attention_mask` (N, L), 1 = token, 0 = padding: FG-CLIP 2's inference path (its README passes
        the tokenizer's mask; padded keys are blocked, the last position is still pooled). Without
        it, its training path (`train_fgclip2.py` passes ids only: every position attends to all).
        `token_embeds` (N, L, W): used instead of the ids' embeddings (learnable prompt context)."""
        text = self.text_model
        heads = {"short": text.head, "box": self.boxtext_head, "long": self.longtext_head}
        if kind not in heads:
            raise ValueError(f"unknown text kind {kind!r}; one of {', '.join(heads)}")
        table = self.long_position_rows() if kind == "long" else text.embeddings.position_embedding.weight
        length = input_ids.shape[1]
        if length > table.shape[0]:
            raise ValueError(f"{length} text tokens exceed the {kind} position table ({table.shape[0]} rows)")
        tokens = text.embeddings.token_embedding(input_ids) if token_embeds is None else token_embeds
        hidden = tokens + table[:length]
        key_mask = None if attention_mask is None else self._additive_mask(attention_mask, hidden.dtype)
        hidden = self._run_layers(text.encoder.layers, hidden, key_mask)  # never a causal mask
        pooled = text.final_layer_norm(hidden[:, -1])
        return F.normalize(heads[kind](pooled), dim=-1)

    # --- scores ---------------------------------------------------------------------------------

    def temperatures(self) -> dict[str, Tensor]:
        """{"global", "region", "hard"}: exp(log scale), as stored (FG-CLIP 2 never clamps; CLIP's cap
        of 100 would change every released SigLIP-family score and stop the scale's gradient)."""
        scales = {"global": self.logit_scale.reshape(()), **dict(self.term_scales.items())}
        return {name: scale.exp() for name, scale in scales.items()}

    def logit_biases(self) -> dict[str, Tensor]:
        """{"global", "region", "hard"}: the sigmoid loss's learned biases."""
        return {"global": self.logit_bias.reshape(()), **dict(self.term_biases.items())}
