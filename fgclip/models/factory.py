"""New model directories from scratch: a CLIP config of a preset size plus a BPE tokenizer.

The result is an ordinary Hugging Face CLIP directory (config.json, model.safetensors,
tokenizer.json + tokenizer_config.json, preprocessor_config.json), so `FGCLIPVideo.from_pretrained`,
`CLIPModel.from_pretrained` and `AutoTokenizer.from_pretrained` load it exactly like a copy of
`openai/clip-vit-base-patch16`: one loading path for the embedded default and real checkpoints.

Presets:
* `tiny`: the embedded default's model, sized to train on 2 CPU cores at 112 px.
* `vit-b16`: random weights of ViT-B/16 CLIP shape (fg-clip-base's), for benchmarks (no real
  weights offline).
* `vit-l14-336`: random weights of ViT-L/14 at 336 px (fg-clip-large's shape, a 24x24 grid).
* `tiny-siglip2`: the embedded default of the FG-CLIP 2 family (SigLIP 2 towers), same size as `tiny`,
  written in FG-CLIP 2's layout (model_type fgclip2) with a Gemma-style tokenizer.
* `vit-b16-siglip2`: random weights of a ViT-B/16-shaped SigLIP 2 at 224 px (196 patches, a token
  table of the trained tokenizer's size): NOT fg-clip2-base's shape, kept for earlier figures.

Released shapes, for benchmarks (random weights; token tables at the release's vocabulary size,
because the embedding table is a large part of the parameters the optimizer steps):
* `fg-clip-base`: qihoo360/fg-clip-base, CLIP ViT-B/16 at 224 px, 49,408 tokens, text 77/248;
* `fg-clip-large`: qihoo360/fg-clip-large, CLIP ViT-L/14 at 336 px (24 x 24 patches), 49,408 tokens;
* `fgclip2-base`: qihoo360/fg-clip2-base, SigLIP 2 ViT-B/16 at 256 px (16 x 16 = 256 patches),
  Gemma's 256,000 tokens, text 64/196.

The CLIP tokenizer is byte-level BPE trained with `tokenizers` on the captions: every byte is in
the vocabulary, so any text (unknown words, Chinese) tokenizes; nothing is ever "unknown". The
SigLIP 2 family's tokenizer is Gemma-style (what FG-CLIP 2 and SigLIP 2 ship): BPE over words
marked with "▁", byte fallback for anything unseen, <pad>/<eos>/<bos>/<unk>/<mask> as ids 0-4,
<bos> in front; it loads as transformers' `GemmaTokenizer`, FG-CLIP 2's tokenizer class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from fgclip.models.text import SHORT_TEXT_LENGTH

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"  # also the padding token, as in OpenAI's CLIP tokenizer

# Normalisation of the embedded default frames (CLIP's own statistics; the synthetic scenes
# have no better-founded values, and real checkpoints bring their own).
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]

# Used when the embedded dataset has not been generated yet: UCF-Crime classes and common
# caption words, so the tokenizer still has sensible merges (any other text falls back to bytes).
BUILTIN_CAPTIONS = [
    "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "Normal",
    "Road Accident", "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism",
    "A man in a black shirt walks across the street while a car drives past.",
    "A woman in a red coat runs away from two people fighting near a parked car.",
    "A person is setting fire to a building at night and flames spread quickly.",
    "Police officers arrest a man and push him against the wall of a shop.",
    "A normal surveillance scene with people walking and cars moving on the road.",
    "Someone breaks the window of a store, steals goods and leaves the scene.",
    "An explosion happens in the parking lot and smoke fills the camera view.",
    "Two men punch and kick each other in the hallway; a bystander watches.",
    "A vehicle crashes into another car at the intersection and stops suddenly.",
    "A robber points a gun at the cashier and takes money from the counter.",
    "A man hides items in his bag and walks out of the shop without paying.",
    "A person sprays paint on the wall and damages the door of the building.",
    "An actor moves from the left to the right of the frame, the background stays static.",
    "white blue green yellow orange purple gray brown pink small large fast slow indoor outdoor",
]


CLIP_VOCAB_ROWS = 49408  # OpenAI CLIP's BPE vocabulary (fg-clip-base, fg-clip-large)
GEMMA_VOCAB_ROWS = 256000  # Gemma's SentencePiece vocabulary (SigLIP 2, fg-clip2-*)


@dataclass(frozen=True)
class Preset:
    vision_width: int
    vision_layers: int
    vision_heads: int
    patch_size: int
    image_size: int
    text_width: int
    text_layers: int
    text_heads: int
    projection_dim: int
    vocab_size: int  # target of BPE training; the trained vocabulary may be smaller
    family: str = "clip"  # "clip" or "siglip2"
    text_positions: int = SHORT_TEXT_LENGTH  # short-text positions (long = CLIP 248 / FG-CLIP 2 4 x this - 60)
    # SigLIP family only: the sigmoid loss's starting bias. SigLIP's -10 suits batches of thousands
    # (almost every pair a negative); a window of 16 wants about -4, and the bias moves only
    # ~1e-3 per step, so a from-scratch run never gets there by itself.
    logit_bias_init: float = -10.0
    # Rows of the token table; None: the trained tokenizer's size. The released shapes set their
    # vocabulary's (ids the small tokenizer never produces stay unused, as in a real checkpoint).
    token_rows: int | None = None


PRESETS: dict[str, Preset] = {
    # 112 px / patch 16 = 7x7 patches + CLS = 50 tokens per frame: cheap on CPU, still a grid
    # for RoIAlign. 4.2M parameters; on 2 busy CPU cores a debug-preset step (1 video x 64
    # frames x 4 accumulation, grad cache included) takes about 5-6 s. Wider (256) or deeper (6)
    # vision towers cost ~1.5-1.8x the FLOPs per frame, with no need for them on the synthetic scenes.
    "tiny": Preset(vision_width=192, vision_layers=4, vision_heads=3, patch_size=16, image_size=112,
                   text_width=192, text_layers=4, text_heads=3, projection_dim=128, vocab_size=4096),
    "vit-b16": Preset(vision_width=768, vision_layers=12, vision_heads=12, patch_size=16, image_size=224,
                      text_width=512, text_layers=12, text_heads=8, projection_dim=512, vocab_size=49408),
    # fg-clip-large's shape (CLIP ViT-L/14 at 336 px): a 24x24 patch grid.
    "vit-l14-336": Preset(vision_width=1024, vision_layers=24, vision_heads=16, patch_size=14, image_size=336,
                          text_width=768, text_layers=12, text_heads=12, projection_dim=768, vocab_size=49408),
    # FG-CLIP 2 needs text width = projection = vision width. 22 short positions (28 long, the fewest
    # FG-CLIP 2's rule allows above keep_len 20) rather than FG-CLIP 2's 64 (196): SigLIP 2 pads every
    # caption to the full length and pools at the last position, so from a random start that position
    # averages mostly padding and all captions embed alike (cosine 0.99 at 64/196 rows); the embedded
    # captions are at most 21 tokens (global) and 10 (regions, prompts), so shorter rows lose nothing.
    "tiny-siglip2": Preset(vision_width=192, vision_layers=4, vision_heads=3, patch_size=16, image_size=112,
                           text_width=192, text_layers=4, text_heads=3, projection_dim=192, vocab_size=4096,
                           family="siglip2", text_positions=22, logit_bias_init=-4.0),
    "vit-b16-siglip2": Preset(vision_width=768, vision_layers=12, vision_heads=12, patch_size=16, image_size=224,
                              text_width=768, text_layers=12, text_heads=12, projection_dim=768, vocab_size=49408,
                              family="siglip2", text_positions=64),
    # The released shapes (see the module docstring).
    "fg-clip-base": Preset(vision_width=768, vision_layers=12, vision_heads=12, patch_size=16, image_size=224,
                           text_width=512, text_layers=12, text_heads=8, projection_dim=512, vocab_size=49408,
                           token_rows=CLIP_VOCAB_ROWS),
    "fg-clip-large": Preset(vision_width=1024, vision_layers=24, vision_heads=16, patch_size=14, image_size=336,
                            text_width=768, text_layers=12, text_heads=12, projection_dim=768, vocab_size=49408,
                            token_rows=CLIP_VOCAB_ROWS),
    "fgclip2-base": Preset(vision_width=768, vision_layers=12, vision_heads=12, patch_size=16, image_size=256,
                           text_width=768, text_layers=12, text_heads=12, projection_dim=768, vocab_size=4096,
                           family="siglip2", text_positions=64, token_rows=GEMMA_VOCAB_ROWS),
}

# Gemma's special tokens in their ids (SigLIP 2 / FG-CLIP 2 tokenizers), then the 256 byte-fallback tokens.
GEMMA_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
WORD_MARK = "\u2581"  # SentencePiece's word-start mark, Gemma's stand-in for a space


def default_captions() -> list[str]:
    """Captions of the embedded default dataset if it exists, else the built-in word list."""
    from pipeline import embedded

    if embedded.TRAIN_JSON.is_file():
        return captions_from_annotations(embedded.TRAIN_JSON)
    return list(BUILTIN_CAPTIONS)


def captions_from_annotations(path: Path) -> list[str]:
    """Every caption of an annotation JSON (global, region, hard negatives), in file order."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read captions ({err})") from err
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    captions: list[str] = []
    for record in records:
        if not isinstance(record, dict):
            continue
        captions.extend(_strings([record.get("global_caption")]))
        captions.extend(_strings(record.get("region_captions") or []))
        for negatives in record.get("hard_negatives") or []:
            captions.extend(_strings(negatives if isinstance(negatives, list) else []))
    return captions


def _strings(values: Iterable) -> list[str]:
    return [value for value in values if isinstance(value, str) and value.strip()]


def train_tokenizer(captions: list[str], vocab_size: int):
    """A byte-level BPE tokenizer wrapped for transformers (CLIP conventions: lower case,
    start/end tokens around every caption, end token used as padding)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Lowercase(), normalizers.Replace(r"\s+", " "), normalizers.Strip()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[START_TOKEN, END_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: no unknown input
        show_progress=False,
    )
    tokenizer.train_from_iterator(captions or BUILTIN_CAPTIONS, trainer=trainer)
    start_id, end_id = tokenizer.token_to_id(START_TOKEN), tokenizer.token_to_id(END_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START_TOKEN} $A {END_TOKEN}",
        pair=f"{START_TOKEN} $A {END_TOKEN} $B {END_TOKEN}",
        special_tokens=[(START_TOKEN, start_id), (END_TOKEN, end_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=START_TOKEN,
        eos_token=END_TOKEN,
        pad_token=END_TOKEN,
        model_max_length=SHORT_TEXT_LENGTH,
        padding_side="right",
    )


def train_gemma_tokenizer(captions: list[str], vocab_size: int, max_length: int):
    """A Gemma-style tokenizer (see the module docstring) trained on lower-cased `captions`.

    Merges stay inside words (as SentencePiece's do), so a prompt word seen in captions is one
    token there too; Chinese has no spaces, so its merges span phrases, as in Gemma."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    pad, eos, bos, unk, mask = GEMMA_SPECIAL_TOKENS
    tokenizer = Tokenizer(models.BPE(unk_token=unk, byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Replace(" ", WORD_MARK)
    # Training only: pieces split before each word mark, so no merge crosses a word boundary.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(WORD_MARK, behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[*GEMMA_SPECIAL_TOKENS, *(f"<0x{byte:02X}>" for byte in range(256))],
    )
    tokenizer.train_from_iterator([caption.lower() for caption in (captions or BUILTIN_CAPTIONS)], trainer=trainer)
    # Gemma's own pipeline (its tokenizer.json): no pre-tokenizer split that could fire after the
    # normaliser; the trained merges never cross a word mark, so the ids are the same.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(WORD_MARK, " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                             special_tokens=[(bos, tokenizer.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token=unk, mask_token=mask, model_max_length=max_length, padding_side="right")


def siglip2_config(preset: Preset, *, vocab_size: int, pad_token_id: int, bos_token_id: int, eos_token_id: int):
    from transformers import Siglip2Config

    grid = preset.image_size // preset.patch_size
    text = dict(vocab_size=vocab_size, hidden_size=preset.text_width, intermediate_size=4 * preset.text_width,
                num_hidden_layers=preset.text_layers, num_attention_heads=preset.text_heads,
                max_position_embeddings=preset.text_positions, projection_size=preset.projection_dim,
                pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    vision = dict(hidden_size=preset.vision_width, intermediate_size=4 * preset.vision_width,
                  num_hidden_layers=preset.vision_layers, num_attention_heads=preset.vision_heads,
                  patch_size=preset.patch_size, num_patches=grid * grid)
    return Siglip2Config(text_config=text, vision_config=vision)


def siglip2_preprocessor_config(preset: Preset) -> dict:
    """The image processor file of an FG-CLIP 2 / SigLIP 2 directory (NaFlex fields; we read mean/std)."""
    grid = preset.image_size // preset.patch_size
    return {
        "image_processor_type": "Siglip2ImageProcessor", "do_resize": True, "resample": 2, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True, "patch_size": preset.patch_size, "max_num_patches": grid * grid,
    }


def start_local_dense_head(head, sharpness: float = 2.0) -> None:
    """From scratch, start FG-CLIP 2's dense head with each patch attending mostly to itself.

    FG-CLIP 2 copies a pretrained pooling head, whose attention is already content-based; a random
    one attends uniformly, so every patch's dense feature starts as the frame's average and RoIAlign
    of any box gives the same region embedding (region and hard-negative losses cannot start). With
    query = key = `sharpness` x identity, a patch's logit with itself (its post-layernorm state has
    unit variance per channel) exceeds its logit with a less similar patch by sharpness^2 x head
    size^0.5 x (1 - cosine), and value/output = identity pass the patch's own state on."""
    import torch

    attention = head.attention
    width = attention.embed_dim
    identity = torch.eye(width)
    with torch.no_grad():
        attention.in_proj_weight.copy_(torch.cat([sharpness * identity, sharpness * identity, identity]))
        attention.in_proj_bias.zero_()
        attention.out_proj.weight.copy_(identity)
        attention.out_proj.bias.zero_()


def _init_siglip2(spec: Preset, out_dir: Path, captions: list[str], seed: int) -> Path:
    """A new FG-CLIP 2-layout directory: random SigLIP 2 towers (SigLIP's start: logit scale log 10,
    the preset's bias), FG-CLIP 2's additions started from them, a Gemma-style tokenizer."""
    import math

    import torch
    from transformers import Siglip2Model

    from fgclip.models.siglip2_video import FGCLIP2Video

    tokenizer = train_gemma_tokenizer(captions, spec.vocab_size, spec.text_positions)
    config = siglip2_config(spec, vocab_size=spec.token_rows or len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    siglip = Siglip2Model(config)
    with torch.no_grad():
        siglip.logit_scale.fill_(math.log(10.0))
        siglip.logit_bias.fill_(spec.logit_bias_init)
    model = FGCLIP2Video(siglip, longtext_len=4 * spec.text_positions - 3 * 20)
    start_local_dense_head(model.dense_feature_head)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, with_extras=False)
    tokenizer.save_pretrained(str(out_dir))
    _portable_tokenizer_class(out_dir / "tokenizer_config.json", "GemmaTokenizer")
    (out_dir / "preprocessor_config.json").write_text(json.dumps(siglip2_preprocessor_config(spec), indent=2) + "\n")
    return out_dir


def clip_config(preset: Preset, *, vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int):
    from transformers import CLIPConfig

    text = dict(
        vocab_size=vocab_size, hidden_size=preset.text_width, intermediate_size=4 * preset.text_width,
        num_hidden_layers=preset.text_layers, num_attention_heads=preset.text_heads,
        max_position_embeddings=SHORT_TEXT_LENGTH, hidden_act="quick_gelu",
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    vision = dict(
        hidden_size=preset.vision_width, intermediate_size=4 * preset.vision_width,
        num_hidden_layers=preset.vision_layers, num_attention_heads=preset.vision_heads,
        image_size=preset.image_size, patch_size=preset.patch_size, hidden_act="quick_gelu",
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=preset.projection_dim)


def preprocessor_config(image_size: int, *, mean: list[float] = IMAGE_MEAN, std: list[float] = IMAGE_STD) -> dict:
    """The image processor file of a CLIP directory (what CLIPImageProcessor would write)."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "do_convert_rgb": True,
    }


def init_model(preset: str, out_dir: Path, *, captions: list[str] | None = None, seed: int = 0) -> Path:
    """Write a new random CLIP of `preset` size with a tokenizer trained on `captions` to `out_dir`."""
    import torch
    from transformers import CLIPModel

    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    out_dir = Path(out_dir)
    if captions is None:
        captions = default_captions()
    if spec.family == "siglip2":
        return _init_siglip2(spec, out_dir, captions, seed)
    tokenizer = train_tokenizer(captions, spec.vocab_size)
    config = clip_config(
        spec,
        vocab_size=spec.token_rows or len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    _portable_tokenizer_class(out_dir / "tokenizer_config.json")
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(spec.image_size), indent=2) + "\n")
    return out_dir


def _portable_tokenizer_class(config_file: Path, name: str = "PreTrainedTokenizerFast") -> None:
    """Name the class every transformers version knows for a tokenizer.json-only tokenizer
    (5.x writes its internal `TokenizersBackend`; `PreTrainedTokenizerFast` maps to it; the SigLIP 2
    family's is `GemmaTokenizer`, FG-CLIP 2's class)."""
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = name
    config_file.write_text(json.dumps(config, indent=2) + "\n")
