"""FG-CLIP 2 as released, for tests: tiny model directories in its real layout and a reference forward.

Written from FG-CLIP 2's published code (360CVGroup/FG-CLIP, branch main: `fgclip2/model/strcs/`
`modeling_fgclip2.py`, `fgclip2.py`, `configuration_fgclip2.py`, `image_processing_fgclip2.py`;
`fgclip2/train/train_fgclip2.py`; the README's inference example), independently of fgclip's model
code: the directories are written with json, safetensors and the tokenizers library, and the
reference is plain torch on the raw tensors. Nothing here imports `fgclip`.

Directory variants (`write_fgclip2_dir`):
* plain: config.json, one model.safetensors, tokenizer, preprocessor_config.json, remote code;
* `shards=N`: the weights in `model-0000i-of-0000N.safetensors` + `model.safetensors.index.json`
  (what `save_pretrained` writes past its shard size, and how the larger releases come);
* `trainer_scalars=(region, hard)`: the two scalars FG-CLIP 2's trainer adds and saves
  (`logit_scale_finegraind`, `logit_scale_hardneg`, 0-d tensors);
* `logit_scale=math.log(118)`: a global scale above CLIP's cap of 100, as released SigLIP-family
  scales are.

The reference (`ReferenceFGCLIP2`) follows FG-CLIP 2's code path:
* text: token + position rows (long texts: `position_embedding_ori` for positions < keep_len,
  `position_embedding_res` after), a bidirectional encoder, final layer norm, the LAST position's
  state, then `text_model.head` (short), `boxtext_head` (box) or `longtext_head` (long). Its
  inference (`get_text_features(**tokenizer(...))`) passes the tokenizer's attention mask, which
  blocks padded keys; its training (`train_fgclip2.py` passes only input ids) does not.
* images: patches in (row, column, pixel row, pixel column, channel) order, `patch_embedding`,
  the position grid resized to the patch grid (bilinear, antialias), encoder, post layer norm,
  the attention-pooling head (probe as the one query);
* dense features: `dense_feature_head`'s attention with every patch as a query over the last
  hidden state, then + mlp(layernorm(.));
* scores: cosine x exp(logit_scale) + logit_bias, never clamped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

KEEP_LEN = 20

# Stand-ins for the remote-code files a release carries (auto_map names them); their content is
# only compared byte for byte, never run. The modeling file imports the configuration file by a
# relative import, as FG-CLIP 2's does.
REMOTE_CODE = {
    "configuration_fgclip2.py": "# stand-in for FG-CLIP 2's configuration module (test fixture)\nCONFIG = 'fgclip2'\n",
    "modeling_fgclip2.py": "# stand-in for FG-CLIP 2's modeling module (test fixture)\n"
                           "from .configuration_fgclip2 import CONFIG\n",
    "image_processing_fgclip2.py": "# stand-in for FG-CLIP 2's image processor module (test fixture)\n",
}
AUTO_MAP = {
    "AutoConfig": "configuration_fgclip2.Fgclip2Config",
    "AutoModel": "modeling_fgclip2.Fgclip2Model",
    "AutoModelForCausalLM": "modeling_fgclip2.Fgclip2Model",
}
SENTENCEPIECE_STAND_IN = b"\x0a\x08stand-in sentencepiece model (test fixture)"
PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "image_processing_fgclip2.Fgclip2ImageProcessor"}

CAPTIONS = [
    "a man in a black shirt walks across the street while a car drives past",
    "two men punch and kick each other in the hallway",
    "a person is setting fire to a building at night",
    "a video frame of normal activity", "a surveillance camera frame of fighting",
    "一个红色的人向左走", "一段爆炸的监控视频",
]


@dataclass(frozen=True)
class TinyShape:
    """A tiny FG-CLIP 2 (text width = projection = vision width, as FG-CLIP 2's heads need)."""

    width: int = 32
    layers: int = 2
    heads: int = 2
    text_positions: int = 24  # short texts; long = 4 x this - 3 x keep_len
    patch_size: int = 8
    grid: int = 4  # patches per side at the stored resolution (num_patches = grid^2)

    @property
    def longtext_len(self) -> int:
        return 4 * self.text_positions - 3 * KEEP_LEN

    @property
    def image_size(self) -> int:
        return self.grid * self.patch_size


# --- the tokenizer ------------------------------------------------------------------------------


def write_gemma_style_tokenizer(out_dir: Path, max_length: int, captions: list[str] = CAPTIONS):
    """A small Gemma-style tokenizer in HF format (tokenizer.json + tokenizer_config.json +
    special_tokens_map.json): <pad> <eos> <bos> <unk> <mask> as ids 0-4, byte fallback, <bos> in
    front, padding on the right (FG-CLIP 2 pools at the last position, padding included)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "\u2581")
    tokenizer.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=1, show_progress=False,
                                  special_tokens=[*specials, *(f"<0x{byte:02X}>" for byte in range(256))])
    tokenizer.train_from_iterator(captions, trainer=trainer)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>",
                                      bos_token="<bos>", unk_token="<unk>", mask_token="<mask>",
                                      model_max_length=max_length, padding_side="right")
    wrapped.save_pretrained(str(out_dir))
    config_file = out_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "GemmaTokenizer"  # what FG-CLIP 2 (and SigLIP 2) ship
    config_file.write_text(json.dumps(config, indent=2))
    # Releases saved with transformers 4.x carry this file too (5.x no longer writes it).
    special = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>",
               "mask_token": "<mask>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return len(wrapped)


# --- the weights -----------------------------------------------------------------------------------


def _encoder_tensors(prefix: str, shape: TinyShape, generator: torch.Generator) -> dict[str, torch.Tensor]:
    width, tensors = shape.width, {}

    def linear(name: str, rows: int, cols: int) -> None:
        tensors[f"{name}.weight"] = torch.randn(rows, cols, generator=generator) / cols ** 0.5
        tensors[f"{name}.bias"] = 0.02 * torch.randn(rows, generator=generator)

    def norm(name: str) -> None:
        tensors[f"{name}.weight"] = 1 + 0.1 * torch.randn(width, generator=generator)
        tensors[f"{name}.bias"] = 0.1 * torch.randn(width, generator=generator)

    for layer in range(shape.layers):
        base = f"{prefix}.encoder.layers.{layer}"
        norm(f"{base}.layer_norm1")
        for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
            linear(f"{base}.self_attn.{projection}", width, width)
        norm(f"{base}.layer_norm2")
        linear(f"{base}.mlp.fc1", 4 * width, width)
        linear(f"{base}.mlp.fc2", width, 4 * width)
    return tensors


def _pooling_head_tensors(prefix: str, width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Fgclip2MultiheadAttentionPoolingHead: probe, nn.MultiheadAttention, layernorm, mlp."""
    return {
        f"{prefix}.probe": torch.randn(1, 1, width, generator=generator),
        f"{prefix}.attention.in_proj_weight": torch.randn(3 * width, width, generator=generator) / width ** 0.5,
        f"{prefix}.attention.in_proj_bias": 0.02 * torch.randn(3 * width, generator=generator),
        f"{prefix}.attention.out_proj.weight": torch.randn(width, width, generator=generator) / width ** 0.5,
        f"{prefix}.attention.out_proj.bias": 0.02 * torch.randn(width, generator=generator),
        f"{prefix}.layernorm.weight": 1 + 0.1 * torch.randn(width, generator=generator),
        f"{prefix}.layernorm.bias": 0.1 * torch.randn(width, generator=generator),
        f"{prefix}.mlp.fc1.weight": torch.randn(4 * width, width, generator=generator) / width ** 0.5,
        f"{prefix}.mlp.fc1.bias": 0.02 * torch.randn(4 * width, generator=generator),
        f"{prefix}.mlp.fc2.weight": torch.randn(width, 4 * width, generator=generator) / (4 * width) ** 0.5,
        f"{prefix}.mlp.fc2.bias": 0.02 * torch.randn(width, generator=generator),
    }


def fgclip2_tensors(shape: TinyShape, vocab_size: int, *, seed: int = 0, logit_scale: float = math.log(10.0),
                    logit_bias: float = -6.0) -> dict[str, torch.Tensor]:
    """Every tensor FG-CLIP 2's `FG_CLIP2_Model.state_dict()` holds, by its names, random."""
    generator = torch.Generator().manual_seed(seed)
    width = shape.width
    tensors = {
        "text_model.embeddings.token_embedding.weight": torch.randn(vocab_size, width, generator=generator),
        "text_model.embeddings.position_embedding.weight": torch.randn(shape.text_positions, width, generator=generator),
        "text_model.embeddings.position_embedding_res.weight": torch.randn(shape.longtext_len, width, generator=generator),
        "text_model.embeddings.position_embedding_ori.weight": torch.randn(shape.longtext_len, width, generator=generator),
        "vision_model.embeddings.patch_embedding.weight":
            torch.randn(width, 3 * shape.patch_size ** 2, generator=generator) / (3 * shape.patch_size ** 2) ** 0.5,
        "vision_model.embeddings.patch_embedding.bias": 0.02 * torch.randn(width, generator=generator),
        "vision_model.embeddings.position_embedding.weight": torch.randn(shape.grid ** 2, width, generator=generator),
        "logit_scale": torch.tensor([logit_scale]),
        "logit_bias": torch.tensor([logit_bias]),
    }
    tensors.update(_encoder_tensors("text_model", shape, generator))
    tensors.update(_encoder_tensors("vision_model", shape, generator))
    for name in ("text_model.final_layer_norm", "vision_model.post_layernorm"):
        tensors[f"{name}.weight"] = 1 + 0.1 * torch.randn(width, generator=generator)
        tensors[f"{name}.bias"] = 0.1 * torch.randn(width, generator=generator)
    for head in ("text_model.head", "longtext_head", "boxtext_head"):
        tensors[f"{head}.weight"] = torch.randn(width, width, generator=generator) / width ** 0.5
        tensors[f"{head}.bias"] = 0.1 * torch.randn(width, generator=generator)
    tensors.update(_pooling_head_tensors("vision_model.head", width, generator))
    tensors.update(_pooling_head_tensors("dense_feature_head", width, generator))
    return tensors


# --- the directory ---------------------------------------------------------------------------------


def fgclip2_config(shape: TinyShape, vocab_size: int) -> dict:
    """config.json as `Fgclip2Config.save_pretrained` writes it (remote code named by auto_map)."""
    text = {
        "attention_dropout": 0.0, "bos_token_id": 2, "eos_token_id": 1, "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": shape.width, "intermediate_size": 4 * shape.width, "keep_len": KEEP_LEN,
        "layer_norm_eps": 1e-6, "longtext_len": shape.longtext_len, "max_position_embeddings": shape.text_positions,
        "model_type": "fgclip2_text_model", "num_attention_heads": shape.heads, "num_hidden_layers": shape.layers,
        "pad_token_id": 0, "projection_size": shape.width, "vocab_size": vocab_size,
    }
    vision = {
        "attention_dropout": 0.0, "hidden_act": "gelu_pytorch_tanh", "hidden_size": shape.width,
        "intermediate_size": 4 * shape.width, "layer_norm_eps": 1e-6, "model_type": "fgclip2_vision_model",
        "num_attention_heads": shape.heads, "num_channels": 3, "num_hidden_layers": shape.layers,
        "num_patches": shape.grid ** 2, "patch_size": shape.patch_size,
    }
    return {"architectures": ["FG_CLIP2_Model"], "auto_map": dict(AUTO_MAP), "initializer_factor": 1.0,
            "model_type": "fgclip2", "text_config": text, "torch_dtype": "float32",
            "transformers_version": "4.56.0", "vision_config": vision}


def preprocessor_config(shape: TinyShape) -> dict:
    return {"auto_map": dict(PROCESSOR_AUTO_MAP), "image_processor_type": "Fgclip2ImageProcessor",
            "do_resize": True, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
            "patch_size": shape.patch_size, "max_num_patches": shape.grid ** 2}


def shard_names(count: int) -> list[str]:
    return [f"model-{index:05d}-of-{count:05d}.safetensors" for index in range(1, count + 1)]


def write_sharded(out_dir: Path, tensors: dict[str, torch.Tensor], count: int) -> dict[str, str]:
    """`tensors` split in `count` files by name order + the index (its weight_map: name -> file)."""
    names = sorted(tensors)
    files = shard_names(count)
    weight_map = {name: files[min(index * count // len(names), count - 1)] for index, name in enumerate(names)}
    for file in files:
        save_file({name: tensors[name].contiguous() for name in names if weight_map[name] == file},
                  str(out_dir / file), metadata={"format": "pt"})
    total = sum(value.numel() * value.element_size() for value in tensors.values())
    (out_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return weight_map


def write_fgclip2_dir(out_dir: Path, *, shape: TinyShape = TinyShape(), seed: int = 0, shards: int = 1,
                      trainer_scalars: tuple[float, float] | None = None, logit_scale: float = math.log(10.0),
                      dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A tiny FG-CLIP 2 directory in its released layout; returns every tensor written (by name)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = write_gemma_style_tokenizer(out_dir, shape.text_positions)
    tensors = fgclip2_tensors(shape, vocab_size, seed=seed, logit_scale=logit_scale)
    if trainer_scalars is not None:
        # train_fgclip2.py: nn.Parameter(torch.ones([]) * log_scale), saved with the model
        tensors["logit_scale_finegraind"] = torch.tensor(trainer_scalars[0])
        tensors["logit_scale_hardneg"] = torch.tensor(trainer_scalars[1])
    tensors = {name: value.to(dtype) for name, value in tensors.items()}
    (out_dir / "config.json").write_text(json.dumps(fgclip2_config(shape, vocab_size), indent=2))
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(shape), indent=2))
    for name, source in REMOTE_CODE.items():
        (out_dir / name).write_text(source)
    # Gemma's SentencePiece model travels beside tokenizer.json in a release; transformers reads
    # tokenizer.json, so opaque stand-in bytes test that exports carry it (sentencepiece is not installed).
    (out_dir / "tokenizer.model").write_bytes(SENTENCEPIECE_STAND_IN)
    if shards > 1:
        write_sharded(out_dir, tensors, shards)
    else:
        save_file({name: value.contiguous() for name, value in tensors.items()}, str(out_dir / "model.safetensors"),
                  metadata={"format": "pt"})
    return tensors


# --- the reference forward ------------------------------------------------------------------------


def _additive_key_mask(mask: torch.Tensor, queries: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, S) 1 = attend, 0 = padding -> (N, 1, queries, S): 0 where allowed, the dtype's min where not
    (transformers' `_prepare_4d_attention_mask`, which FG-CLIP 2 calls)."""
    blocked = (1.0 - mask[:, None, None, :].to(dtype)).expand(mask.shape[0], 1, queries, mask.shape[1])
    return blocked.masked_fill(blocked.bool(), torch.finfo(dtype).min)


class ReferenceFGCLIP2:
    """FG-CLIP 2's forward on the raw tensors of a directory (see the module docstring)."""

    def __init__(self, tensors: dict[str, torch.Tensor], shape: TinyShape = TinyShape()) -> None:
        self.t = {name: value.double() for name, value in tensors.items()}
        self.shape = shape

    # building blocks
    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.t[f"{name}.weight"], self.t[f"{name}.bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.t[f"{name}.weight"], self.t[f"{name}.bias"], eps=1e-6)

    def _mlp(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self._linear(F.gelu(self._linear(x, f"{name}.fc1"), approximate="tanh"), f"{name}.fc2")

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(N, Lq, W), (N, Lk, W) x2 projected -> (N, Lq, W) multi-head attention, heads concatenated."""
        heads, count = self.shape.heads, q.shape[0]
        split = lambda x: x.view(count, x.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        weights = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        if mask is not None:
            weights = weights + mask
        out = weights.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(count, -1, q.shape[1] * q.shape[-1])

    def _encoder(self, hidden: torch.Tensor, prefix: str, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in range(self.shape.layers):
            base = f"{prefix}.encoder.layers.{layer}"
            x = self._norm(hidden, f"{base}.layer_norm1")
            attn = f"{base}.self_attn"
            x = self._attention(self._linear(x, f"{attn}.q_proj"), self._linear(x, f"{attn}.k_proj"),
                                self._linear(x, f"{attn}.v_proj"), mask)
            hidden = hidden + self._linear(x, f"{attn}.out_proj")
            hidden = hidden + self._mlp(self._norm(hidden, f"{base}.layer_norm2"), f"{base}.mlp")
        return hidden

    def _mha(self, query: torch.Tensor, source: torch.Tensor, prefix: str) -> torch.Tensor:
        """nn.MultiheadAttention (batch_first) of a pooling head: in_proj split q, k, v, then out_proj."""
        w_q, w_k, w_v = self.t[f"{prefix}.in_proj_weight"].chunk(3)
        b_q, b_k, b_v = self.t[f"{prefix}.in_proj_bias"].chunk(3)
        out = self._attention(F.linear(query, w_q, b_q), F.linear(source, w_k, b_k), F.linear(source, w_v, b_v), None)
        return self._linear(out, f"{prefix}.out_proj")

    # text
    def text_features(self, input_ids: torch.Tensor, walk_type: str,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`get_text_features(input_ids, attention_mask, walk_type)`: (N, W), not normalised."""
        length = input_ids.shape[1]
        embeddings = self.t["text_model.embeddings.token_embedding.weight"][input_ids]
        if walk_type == "long":
            keep = (torch.arange(length) < KEEP_LEN).double()[:, None]
            ori = self.t["text_model.embeddings.position_embedding_ori.weight"][:length]
            res = self.t["text_model.embeddings.position_embedding_res.weight"][:length]
            hidden = embeddings + ori * keep + res * (1 - keep)
        else:
            hidden = embeddings + self.t["text_model.embeddings.position_embedding.weight"][:length]
        mask = None if attention_mask is None else _additive_key_mask(attention_mask, length, hidden.dtype)
        hidden = self._norm(self._encoder(hidden, "text_model", mask), "text_model.final_layer_norm")
        pooled = hidden[:, -1]  # the last position, padding or not
        head = {"short": "text_model.head", "box": "boxtext_head", "long": "longtext_head"}[walk_type]
        return self._linear(pooled, head)

    # images
    @staticmethod
    def patches(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
        """(N, 3, S, S) -> (N, g*g, p*p*3) in FG-CLIP 2's image processor's order."""
        count, channels, height, width = pixels.shape
        hwc = pixels.permute(0, 2, 3, 1)
        rows, cols = height // patch_size, width // patch_size
        grid = hwc.reshape(count, rows, patch_size, cols, patch_size, channels).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(count, rows * cols, -1)

    def vision_hidden(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> last hidden state after post_layernorm, (N, g*g, W)."""
        shape = self.shape
        patches = self.patches(pixels.double(), shape.patch_size)
        rows = pixels.shape[-2] // shape.patch_size
        cols = pixels.shape[-1] // shape.patch_size
        hidden = self._linear(patches, "vision_model.embeddings.patch_embedding")
        table = self.t["vision_model.embeddings.position_embedding.weight"]
        table = table.reshape(shape.grid, shape.grid, -1).permute(2, 0, 1)[None]
        resized = F.interpolate(table, size=(rows, cols), mode="bilinear", align_corners=False, antialias=True)
        hidden = hidden + resized.reshape(table.shape[1], rows * cols).t()
        mask = _additive_key_mask(torch.ones(hidden.shape[:2]), hidden.shape[1], hidden.dtype)  # all real patches
        return self._norm(self._encoder(hidden, "vision_model", mask), "vision_model.post_layernorm")

    def _head(self, query: torch.Tensor, hidden: torch.Tensor, prefix: str) -> torch.Tensor:
        attended = self._mha(query, hidden, f"{prefix}.attention")
        return attended + self._mlp(self._norm(attended, f"{prefix}.layernorm"), f"{prefix}.mlp")

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """`get_image_features`: the pooling head's output, (N, W), not normalised."""
        hidden = self.vision_hidden(pixels)
        probe = self.t["vision_model.head.probe"].expand(hidden.shape[0], 1, -1)
        return self._head(probe, hidden, "vision_model.head")[:, 0]

    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """`get_image_dense_feature`: (N, g*g, W), not normalised."""
        hidden = self.vision_hidden(pixels)
        return self._head(hidden, hidden, "dense_feature_head")

    # scores
    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """(N images, M texts): cosine x exp(logit_scale) + logit_bias, as FG-CLIP 2 scores (no clamp)."""
        cosine = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).t()
        return cosine * self.t["logit_scale"].exp() + self.t["logit_bias"]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (..., D) tensors, in float64."""
    return F.cosine_similarity(a.double().flatten(0, -2), b.double().flatten(0, -2), dim=-1)
