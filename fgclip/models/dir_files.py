"""The files of a model directory besides its config, for both families: the weights (one
safetensors file, or shards named by `model.safetensors.index.json`), the tokenizer and image
processor files, and the remote code that an `auto_map` names.

* Weights: the index's `weight_map` decides which file holds each tensor; a shard it names that
  is missing, a tensor it places in a shard that lacks it, or a tensor in a shard that it does not
  place there is a `ModelDirError` naming the file. Writing keeps a source's sharding when the
  tensor names are the same (an FG-CLIP v1 or FG-CLIP 2 directory exports back file for file).
* Side files: every tokenizer file a Hugging Face tokenizer may read (`tokenizer.json`,
  SentencePiece's `tokenizer.model`, BPE's `vocab.json` + `merges.txt`, ...), the processor
  configs, and the `*.py` files that the `auto_map` of config.json, tokenizer_config.json or
  preprocessor_config.json names (with the modules they import relatively), so a checkpoint or an
  export loads with `AutoModel...from_pretrained(dir, trust_remote_code=True)` as FG-CLIP's README does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torch import Tensor

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

TOKENIZER_FILE_NAMES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",  # SentencePiece (Gemma: FG-CLIP 2, SigLIP 2)
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
)
PROCESSOR_FILE_NAMES = ("preprocessor_config.json", "processor_config.json")
# Files whose `auto_map` may name remote code (module.Class, repo--module.Class, or [slow, fast]).
AUTO_MAP_FILE_NAMES = ("config.json", "tokenizer_config.json", *PROCESSOR_FILE_NAMES)

_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import\s", re.MULTILINE)


class ModelDirError(ValueError):
    """A model directory that is missing, damaged or not a usable model (the message says which)."""


# --- weights ------------------------------------------------------------------------------------


def read_index(index_file: Path) -> dict[str, str]:
    """The `weight_map` (tensor name -> shard file name) of a safetensors index."""
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelDirError(f"{index_file}: not a readable safetensors index with a weight_map ({err}); "
                            f"copy it again from the model you downloaded") from err
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelDirError(f"{index_file}: weight_map is not a mapping of tensor names to file names")
    return weight_map


def read_sharded(index_file: Path) -> dict[str, Tensor]:
    """Every tensor of a sharded checkpoint, each from the file the index's weight_map names."""
    from safetensors import SafetensorError, safe_open

    weight_map = read_index(index_file)
    folder = index_file.parent
    missing = sorted({file for file in weight_map.values() if not (folder / file).is_file()})
    if missing:
        raise ModelDirError(f"{folder}: shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} named by "
                            f"{index_file.name} {'are' if len(missing) > 1 else 'is'} missing; copy every "
                            f"model-*-of-*.safetensors file of the download")
    weights: dict[str, Tensor] = {}
    for file in sorted(set(weight_map.values())):
        placed = {name for name, owner in weight_map.items() if owner == file}
        try:
            with safe_open(str(folder / file), framework="pt") as shard:
                held = set(shard.keys())
                if held != placed:
                    raise ModelDirError(
                        f"{folder / file}: holds {len(held)} tensors, {index_file.name} places {len(placed)} there "
                        f"(not in the file: {sorted(placed - held)[:5]}; not in the index: {sorted(held - placed)[:5]}); "
                        f"the shard and the index come from different saves")
                weights.update({name: shard.get_tensor(name) for name in held})
        except (OSError, SafetensorError) as err:
            raise ModelDirError(f"{folder / file}: unreadable ({err}); the shard is damaged, copy it again") from err
    return weights


def read_safetensors_weights(model_dir: Path) -> tuple[dict[str, Tensor], dict[str, str] | None]:
    """(tensors, weight_map or None) of `model.safetensors` or, if absent, of the sharded index."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index = model_dir / WEIGHTS_NAME, model_dir / INDEX_NAME
    if single.is_file():
        try:
            return load_file(str(single)), None
        except (OSError, SafetensorError) as err:
            raise ModelDirError(f"{single}: unreadable ({err}); copy it again") from err
    if index.is_file():
        return read_sharded(index), read_index(index)
    raise ModelDirError(f"{model_dir}: no {WEIGHTS_NAME} nor {INDEX_NAME} (only safetensors weights are read "
                        f"for this family); copy the weights of the model you downloaded")


def write_safetensors_weights(model_dir: Path, tensors: dict[str, Tensor], *,
                              weight_map: dict[str, str] | None = None) -> list[str]:
    """Write `tensors` as one `model.safetensors`, or, when `weight_map` names exactly these
    tensors, as the shards it names plus the index. Returns the file names written; weight files
    of another layout left in `model_dir` by an earlier save are removed (they would be read instead)."""
    from safetensors.torch import save_file

    model_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().contiguous().cpu() for name, value in tensors.items()}
    sharded = weight_map is not None and set(weight_map) == set(tensors)
    for stale in [model_dir / WEIGHTS_NAME, model_dir / INDEX_NAME, *model_dir.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)
    if not sharded:
        save_file(tensors, str(model_dir / WEIGHTS_NAME), metadata={"format": "pt"})
        return [WEIGHTS_NAME]
    files = sorted(set(weight_map.values()))
    for file in files:
        save_file({name: value for name, value in tensors.items() if weight_map[name] == file}, str(model_dir / file),
                  metadata={"format": "pt"})
    total = sum(value.numel() * value.element_size() for value in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (model_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, INDEX_NAME]


# --- tokenizer, processor and remote code ----------------------------------------------------------


def auto_map_modules(model_dir: Path) -> list[str]:
    """Module names (`modeling_fgclip2`) that the auto_maps of the directory's config files name."""
    modules: list[str] = []
    for name in AUTO_MAP_FILE_NAMES:
        file = model_dir / name
        if not file.is_file():
            continue
        try:
            auto_map = json.loads(file.read_text()).get("auto_map") or {}
        except (ValueError, AttributeError):
            continue  # a broken config is reported by whoever reads it for its content
        for reference in auto_map.values():
            for entry in reference if isinstance(reference, list) else [reference]:
                if isinstance(entry, str) and "." in entry:
                    module = entry.split("--")[-1].rsplit(".", 1)[0]  # "repo--module.Class" -> "module"
                    if module not in modules:
                        modules.append(module)
    return modules


def remote_code_files(model_dir: Path) -> tuple[list[str], list[str]]:
    """(present, missing) `*.py` file names: those the auto_maps name, and the modules they import
    relatively (`from .configuration_fgclip2 import ...`), as transformers' dynamic loading needs."""
    present, missing = [], []
    pending = [module.replace(".", "/") + ".py" for module in auto_map_modules(model_dir)]
    while pending:
        name = pending.pop(0)
        if name in present or name in missing:
            continue
        file = model_dir / name
        if not file.is_file():
            missing.append(name)
            continue
        present.append(name)
        pending.extend(f"{module}.py" for module in _RELATIVE_IMPORT.findall(file.read_text(errors="replace")))
    return present, missing


def side_files(model_dir: Path) -> dict[str, bytes]:
    """Name -> content of the tokenizer files, processor configs and remote code of a directory:
    what travels with every checkpoint and export written from it."""
    names = [*TOKENIZER_FILE_NAMES, *PROCESSOR_FILE_NAMES, *remote_code_files(model_dir)[0]]
    return {name: (model_dir / name).read_bytes() for name in names if (model_dir / name).is_file()}
