"""Model directory layouts: how each family names its tensors, and the conversions between
them and this project's model (the state dict of `fgclip.models.clip_video.FGCLIPVideo`).

Layouts of the main weights file (model.safetensors), recognised by their keys, whatever
config.json's `architectures` says:

* `clip`: a plain Hugging Face `CLIPModel` (e.g. openai/clip-vit-base-patch16, or the embedded
  default). Everything FG-CLIP adds starts as FG-CLIP starts it from CLIP: long positions
  interpolated from the 77 short ones, the long projection a copy of `text_projection`, the
  region and hard temperatures equal to `logit_scale`.
* `fgclip-v1`: FG-CLIP v1 (qihoo360/fg-clip-base, fg-clip-large): every `CLIPModel` key plus

      text_model.embeddings.position_embedding_ori.weight  (248 rows) -> long_positions.ori
      text_model.embeddings.position_embedding_res.weight  (248 rows) -> long_positions.res
      text_filip_projection.weight                                    -> long_text_projection.weight
      logit_scale_finegraind (region loss)                            -> logit_scales.region
      logit_scale_hardneg (hard negatives)                            -> logit_scales.hard

  and `logit_scale` (global) -> logit_scales.global. A long caption's position p reads `ori[p]`
  for p < 20 and `res[p]` from 20 on (`fgclip.models.clip_video.LongTextPositions`).

Beside either, our own files (`fgclip_video.json` + `fgclip_video.safetensors`) hold what the
main file has no place for: in our checkpoints (main file `clip`) the long positions, long
projection, three temperatures and the temporal module; in an `export-model --format fgclip`
directory (main file `fgclip-v1`) only the temporal module.

Every tensor of a directory is used or refused by name (`ModelDirError`); nothing is dropped
silently. FG-CLIP 2's layout belongs here too, in the same shape: a key table, a
`..._to_model` and a `model_to_...` function.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from fgclip.models.dir_files import INDEX_NAME, ModelDirError, read_index, read_sharded
from fgclip.run_dir import MODEL_CONFIG_NAME, MODEL_WEIGHT_NAMES

EXTRAS_CONFIG_NAME = "fgclip_video.json"
EXTRAS_WEIGHTS_NAME = "fgclip_video.safetensors"
# 1: long positions as one table `long_position_embedding`, no long projection (written until
# FG-CLIP v1 loading came); 2: `long_positions.ori/res` and `long_text_projection`.
EXTRAS_FORMAT_VERSION = 2

CLIP_PREFIX = "clip."  # FGCLIPVideo keeps the CLIPModel as `self.clip`

# FG-CLIP v1 key -> FGCLIPVideo state key, beside the plain CLIPModel keys.
FGCLIP_V1_NAMES = {
    "text_model.embeddings.position_embedding_ori.weight": "long_positions.ori",
    "text_model.embeddings.position_embedding_res.weight": "long_positions.res",
    "text_filip_projection.weight": "long_text_projection.weight",
    "logit_scale_finegraind": "logit_scales.region",
    "logit_scale_hardneg": "logit_scales.hard",
}
GLOBAL_SCALE = "logit_scales.global"  # CLIP's and FG-CLIP's `logit_scale`
FGCLIP_V1_ARCHITECTURE = "FGCLIPModel"
FGCLIP_V1_LONG_ROWS = 248  # FG-CLIP v1 builds both long tables with exactly 248 rows


LAYOUT_DESCRIPTIONS = {
    "clip": "plain CLIP (FG-CLIP's additions start from it: long positions interpolated, long projection "
            "copied from text_projection, region/hard temperatures from logit_scale; temporal module new)",
    "fgclip-v1": "FG-CLIP v1 (long positions ori/res, text_filip_projection and the three temperatures loaded; "
                 "temporal module new)",
    "fgclip-vad": "fgclip-vad checkpoint (plain CLIP files + fgclip_video.*)",
    "fgclip-v1+fgclip-vad": "FG-CLIP v1 with fgclip-vad's temporal module (an `export-model --format fgclip` directory)",
    # The SigLIP 2 family (`fgclip.models.fgclip2_layout`, `fgclip.models.siglip2_video`):
    "fgclip2": "FG-CLIP 2 (SigLIP 2 towers + long positions ori/res, box/long text heads, dense head; its trainer's "
               "logit_scale_finegraind/_hardneg as region/hard scales when saved; temporal module new)",
    "siglip2": "plain SigLIP 2 (FG-CLIP 2's additions start from it: long positions stretched, box/long heads and "
               "dense head copied; temporal module new)",
    "fgclip2+fgclip-vad": "fgclip-vad checkpoint of the FG-CLIP 2 family (FG-CLIP 2's files + fgclip_video.*)",
}


@dataclass
class ModelDirContents:
    """A model directory read and converted to FGCLIPVideo state names."""

    path: Path
    config: dict  # config.json
    layout: str  # a key of LAYOUT_DESCRIPTIONS
    state: dict[str, Tensor]  # FGCLIPVideo state-dict names
    origin: dict[str, str]  # state name -> "file: source key", for messages
    extras_config: dict = field(default_factory=dict)  # fgclip_video.json ({} when absent)
    # True when the directory must give every tensor of the model (one of our checkpoints); False
    # when the parts it lacks start as from a plain CLIP (a CLIP or an FG-CLIP v1 download).
    complete: bool = False
    # tensor name (as in the file) -> shard file, when the weights came sharded (None: one file)
    weight_map: dict[str, str] | None = None

    @property
    def description(self) -> str:
        return LAYOUT_DESCRIPTIONS[self.layout]


# --- reading a directory -----------------------------------------------------------------------


def read_config(path: Path) -> dict:
    """config.json of a model directory, with errors that say what is wrong and what to do."""
    if not path.exists():
        raise ModelDirError(
            f"{path}: model directory not found. Give a local Hugging Face CLIP or FG-CLIP directory "
            f"(e.g. a copy of qihoo360/fg-clip-base) or run `fgclip-vad init-model --out {path}`."
        )
    if not path.is_dir():
        raise ModelDirError(f"{path}: not a directory; a model is a directory with config.json and weights")
    config_file = path / MODEL_CONFIG_NAME
    if not config_file.is_file():
        raise ModelDirError(f"{path}: no config.json, so this is not a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text())
    except (ValueError, OSError) as err:
        raise ModelDirError(f"{config_file}: unreadable JSON ({err})") from err
    if not isinstance(config, dict) or config.get("model_type") != "clip":
        model_type = config.get("model_type") if isinstance(config, dict) else None
        raise ModelDirError(
            f"{config_file}: model_type is {model_type!r}, not 'clip'; FG-CLIP v1 and CLIP directories say 'clip'"
        )
    return config


def weights_file(path: Path) -> Path:
    for name in MODEL_WEIGHT_NAMES:
        if (path / name).is_file():
            return path / name
    raise ModelDirError(f"{path}: no file named model.safetensors (nor model.safetensors.index.json or "
                        f"pytorch_model.bin): the weights are missing; copy them from the model you downloaded")


def read_weights(file: Path) -> dict[str, Tensor]:
    """All tensors of a weights file (safetensors, a sharded safetensors index, or a torch pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if file.name == INDEX_NAME:  # the index's weight_map decides which shard holds each tensor
        return _without_index_buffers(read_sharded(file))
    try:
        if file.suffix == ".safetensors":
            weights = load_file(str(file))
        else:
            weights = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, SafetensorError) as err:
        details = " ".join(str(err).split())
        raise ModelDirError(f"{file}: could not read the weights ({details}); the file is damaged or incomplete, "
                            f"copy it again") from err
    return _without_index_buffers(weights)


def _without_index_buffers(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop `*.embeddings.position_ids`, which transformers before 4.31 saved with the weights:
    they are the constant 0, 1, 2, ... (not learned); any other value is kept, to be refused."""
    kept = {}
    for key, value in weights.items():
        if key.endswith("embeddings.position_ids") and torch.equal(
                value.reshape(-1).long(), torch.arange(value.numel())):
            continue
        kept[key] = value
    return kept


def detect_layout(keys) -> str:
    """`fgclip-v1` if any of FG-CLIP v1's own keys is there (all must be), else `clip`."""
    keys = set(keys)
    present = [key for key in FGCLIP_V1_NAMES if key in keys]
    if not present:
        return "clip"
    missing = [key for key in FGCLIP_V1_NAMES if key not in keys]
    if missing:
        raise ModelDirError(f"FG-CLIP v1 weights ({', '.join(present)}) without {', '.join(missing)}: an incomplete "
                            f"FG-CLIP v1 checkpoint; copy the whole model.safetensors again")
    return "fgclip-v1"


def read_model_dir(path: Path) -> ModelDirContents:
    """Config, layout and every tensor of a model directory, in FGCLIPVideo state names."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    config = read_config(path)
    file = weights_file(path)
    weights = read_weights(file)
    layout = detect_layout(weights)
    state = fgclip_v1_to_model(weights) if layout == "fgclip-v1" else clip_to_model(weights)
    weight_map = read_index(file) if file.name == INDEX_NAME else None
    holder = (lambda key: weight_map.get(key, file.name)) if weight_map else (lambda key: file.name)
    origin = {name: f"{holder(source)}: {source}" for name, source in _sources(layout, weights).items()}
    contents = ModelDirContents(path=path, config=config, layout=layout, state=state, origin=origin,
                                weight_map=weight_map)

    extras_config_file = path / EXTRAS_CONFIG_NAME
    if not extras_config_file.is_file():
        return contents
    try:
        contents.extras_config = json.loads(extras_config_file.read_text())
    except (ValueError, OSError) as err:
        raise ModelDirError(f"{extras_config_file}: unreadable JSON ({err}); the checkpoint is damaged, "
                            f"use an earlier one") from err
    extras_file = path / EXTRAS_WEIGHTS_NAME
    if not extras_file.is_file():
        raise ModelDirError(f"{path}: {EXTRAS_CONFIG_NAME} is present but {EXTRAS_WEIGHTS_NAME} is missing")
    try:
        extras = load_file(str(extras_file))
    except (OSError, SafetensorError) as err:
        raise ModelDirError(f"{extras_file}: could not read it ({err}); the checkpoint is damaged, use an earlier one") from err
    version = contents.extras_config.get("format_version", 1)
    extras = upgrade_extras(extras, version, state, extras_file)
    given_twice = sorted(set(extras) & set(state))
    if given_twice:
        raise ModelDirError(f"{path}: {', '.join(given_twice)} given both by {file.name} and by {EXTRAS_WEIGHTS_NAME}; "
                            f"remove one (they are not the same checkpoint)")
    state.update(extras)
    origin.update({name: f"{EXTRAS_WEIGHTS_NAME}: {name}" for name in extras})
    contents.layout = "fgclip-vad" if layout == "clip" else "fgclip-v1+fgclip-vad"
    contents.complete = True
    return contents


def _sources(layout: str, weights: dict[str, Tensor]) -> dict[str, str]:
    """FGCLIPVideo state name -> the source key it came from."""
    renamed = FGCLIP_V1_NAMES if layout == "fgclip-v1" else {}
    sources = {renamed.get(key, CLIP_PREFIX + key): key for key in weights}
    if "logit_scale" in weights and layout == "fgclip-v1":
        sources[GLOBAL_SCALE] = "logit_scale"
    return sources


def upgrade_extras(extras: dict[str, Tensor], version: int, state: dict[str, Tensor], file: Path) -> dict[str, Tensor]:
    """Our extras file of any format version -> the current names."""
    if version == EXTRAS_FORMAT_VERSION:
        return dict(extras)
    if version != 1:
        raise ModelDirError(f"{file}: format version {version} is newer than this code ({EXTRAS_FORMAT_VERSION}); "
                            f"update fgclip-vad")
    upgraded = dict(extras)
    table = upgraded.pop("long_position_embedding", None)
    if table is not None:  # one table then: the same rows for ori (< 20) and res (>= 20)
        upgraded["long_positions.ori"] = table.clone()
        upgraded["long_positions.res"] = table.clone()
    projection = state.get(CLIP_PREFIX + "text_projection.weight")
    if projection is not None:  # no long projection then: long captions used text_projection
        upgraded.setdefault("long_text_projection.weight", projection.clone())
    return upgraded


# --- plain CLIP ------------------------------------------------------------------------------------


def clip_to_model(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """CLIPModel keys -> FGCLIPVideo state names (the CLIP part only; the rest starts from it)."""
    return {CLIP_PREFIX + key: value for key, value in weights.items()}


def model_to_clip(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """FGCLIPVideo state -> (CLIPModel weights, the names of our parts a plain CLIP has no place for).

    `logit_scale` carries the trained global temperature."""
    weights = {key[len(CLIP_PREFIX):]: value for key, value in state.items() if key.startswith(CLIP_PREFIX)}
    weights["logit_scale"] = state[GLOBAL_SCALE]
    left_out = [key for key in state if not key.startswith(CLIP_PREFIX) and key != GLOBAL_SCALE]
    return weights, left_out


# --- FG-CLIP v1 ------------------------------------------------------------------------------------


def fgclip_v1_to_model(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """FG-CLIP v1 keys -> FGCLIPVideo state names (`logit_scale` also stays CLIP's own)."""
    state = {FGCLIP_V1_NAMES.get(key, CLIP_PREFIX + key): value for key, value in weights.items()}
    if "logit_scale" in weights:
        state[GLOBAL_SCALE] = weights["logit_scale"]
    return state


def model_to_fgclip_v1(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """FGCLIPVideo state -> (FG-CLIP v1 weights, our tensors FG-CLIP v1 has no place for)."""
    to_v1 = {ours: theirs for theirs, ours in FGCLIP_V1_NAMES.items()}
    for name in ("long_positions.ori", "long_positions.res"):
        rows = state[name].shape[0]
        if rows != FGCLIP_V1_LONG_ROWS:
            raise ModelDirError(f"the long position table has {rows} rows; FG-CLIP v1's has {FGCLIP_V1_LONG_ROWS} "
                                f"(a CLIP with 77 text positions): this model has no FG-CLIP v1 layout")
    weights, rest = {}, {}
    for key, value in state.items():
        if key.startswith(CLIP_PREFIX):
            weights[key[len(CLIP_PREFIX):]] = value
        elif key in to_v1:
            weights[to_v1[key]] = value
        elif key != GLOBAL_SCALE:
            rest[key] = value
    weights["logit_scale"] = state[GLOBAL_SCALE]
    return weights, rest
