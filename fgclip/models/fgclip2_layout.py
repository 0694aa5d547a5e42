"""FG-CLIP 2's checkpoint layout (model_type "fgclip2") and plain SigLIP 2 directories.

An FG-CLIP 2 directory (360CVGroup/FG-CLIP, branch main, `fgclip2/model/strcs/`) holds
config.json with `model_type: fgclip2`, a text and a vision sub-config (SigLIP 2's fields plus
`keep_len` and `longtext_len` in the text one), and weights whose names are SigLIP 2's
(`text_model.*`, `vision_model.*`, `logit_scale`, `logit_bias`) plus FG-CLIP 2's additions:

* `text_model.embeddings.position_embedding_ori.weight`, `..._res.weight`: the long-text
  positions (`longtext_len` rows; position p uses ori[p] for p < keep_len, res[p] after);
* `longtext_head.*`, `boxtext_head.*`: Linear D -> D heads of long and box texts;
* `dense_feature_head.*`: an attention-pooling head (probe, attention, layernorm, mlp) whose
  attention, layernorm and mlp make the dense patch features;
* in checkpoints of FG-CLIP 2's own trainer, `logit_scale_finegraind` and `logit_scale_hardneg`
  (0-d log scales of its region and hard-negative losses; `TRAINER_SCALARS`).

This module converts between that layout and transformers' `Siglip2Config`; the weight names
are those of `fgclip.models.siglip2_video.FGCLIP2Video.state_dict()` (minus our extras), so reading and
writing the weights needs no renaming.
"""

from __future__ import annotations

import copy

FGCLIP2_MODEL_TYPE = "fgclip2"
SIGLIP2_MODEL_TYPE = "siglip2"
SIGLIP_FAMILY_MODEL_TYPES = (FGCLIP2_MODEL_TYPE, SIGLIP2_MODEL_TYPE)

DEFAULT_KEEP_LEN = 20
DEFAULT_LONGTEXT_LEN = 196  # 64 x 4 - 3 x 20: FG-CLIP 2's long table from SigLIP 2's 64 rows

# Weight names FG-CLIP 2 adds to SigLIP 2 (a plain SigLIP 2 directory lacks them; we build them).
FGCLIP2_ADDITION_PREFIXES = (
    "text_model.embeddings.position_embedding_ori.",
    "text_model.embeddings.position_embedding_res.",
    "longtext_head.",
    "boxtext_head.",
    "dense_feature_head.",
)

# FG-CLIP 2's trainer (train_fgclip2.py) adds these scalars after loading and saves them with the
# model: the log scales of its region (box-text) and hard-negative losses -> our region and hard scales.
TRAINER_SCALARS = {
    "logit_scale_finegraind": "term_scales.region",
    "logit_scale_hardneg": "term_scales.hard",
}

# Sub-config fields that are FG-CLIP 2's, not SigLIP 2's.
_TEXT_ONLY_FIELDS = ("keep_len", "longtext_len")


def is_addition(name: str) -> bool:
    return name.startswith(FGCLIP2_ADDITION_PREFIXES)


def read_trainer_scalars(weights: dict) -> tuple[dict, dict]:
    """(weights without FG-CLIP 2's trainer scalars, {our state name: scalar}); both scalars or neither."""
    present = [name for name in TRAINER_SCALARS if name in weights]
    if len(present) not in (0, len(TRAINER_SCALARS)):
        missing = [name for name in TRAINER_SCALARS if name not in weights]
        raise ValueError(f"FG-CLIP 2 trainer scalar {', '.join(present)} without {', '.join(missing)}: an incomplete "
                         f"checkpoint of FG-CLIP 2's trainer; copy its weights again")
    scalars = {TRAINER_SCALARS[name]: weights[name] for name in present}
    rest = {name: value for name, value in weights.items() if name not in TRAINER_SCALARS}
    return rest, scalars


def siglip2_config(config: dict):
    """(transformers Siglip2Config, keep_len, longtext_len) from an fgclip2 or siglip2 config.json dict."""
    from transformers import Siglip2Config

    text = dict(config.get("text_config") or {})
    vision = dict(config.get("vision_config") or {})
    keep_len = int(text.get("keep_len", DEFAULT_KEEP_LEN))
    for name in (*_TEXT_ONLY_FIELDS, "model_type", "architectures", "auto_map"):
        text.pop(name, None)
        vision.pop(name, None)
    short_length = int(text.get("max_position_embeddings", 64))
    longtext_len = int((config.get("text_config") or {}).get("longtext_len", 4 * short_length - 3 * keep_len))
    # Attention dropout would make the forward random; gradient caching re-runs it (see model docs).
    text["attention_dropout"] = 0.0
    vision["attention_dropout"] = 0.0
    return Siglip2Config(text_config=text, vision_config=vision), keep_len, longtext_len


def fgclip2_config_dict(siglip_config, *, keep_len: int, longtext_len: int, source: dict | None = None) -> dict:
    """config.json in FG-CLIP 2's layout for a model of `siglip_config`'s shape.

    Fields of the source directory's config.json that we do not model (auto_map, architectures,
    torch_dtype, ...) are kept, so an exported FG-CLIP 2 checkpoint loads in their scripts as before."""
    out = copy.deepcopy(source) if source and source.get("model_type") == FGCLIP2_MODEL_TYPE else {}
    text = siglip_config.text_config.to_dict()
    vision = siglip_config.vision_config.to_dict()
    for sub in (text, vision):
        for name in ("transformers_version", "_name_or_path", "architectures", "id2label", "label2id",
                     "chunk_size_feed_forward", "problem_type", "output_hidden_states", "return_dict"):
            sub.pop(name, None)
    text.update(model_type="fgclip2_text_model", keep_len=keep_len, longtext_len=longtext_len)
    vision["model_type"] = "fgclip2_vision_model"
    out_text = dict(out.get("text_config") or {})
    out_text.update(text)
    out_vision = dict(out.get("vision_config") or {})
    out_vision.update(vision)
    out.update(model_type=FGCLIP2_MODEL_TYPE, text_config=out_text, vision_config=out_vision)
    out.setdefault("architectures", ["FG_CLIP2_Model"])
    return out
