"""`fgclip-vad export-model`: a model directory written back in another family's layout.

* `fgclip`: FG-CLIP v1's layout (`fgclip.models.layouts`): the same key names and shapes as
  qihoo360/fg-clip-base, a config.json with `architectures: ["FGCLIPModel"]`, the tokenizer and
  preprocessor files, so FG-CLIP's own scripts (`FGCLIPModel.from_pretrained`) load a model we
  fine-tuned. The temporal module, which FG-CLIP has no place for, goes to `fgclip_video.*`
  beside it (FG-CLIP ignores those files; `FGCLIPVideo.from_pretrained` reads them back, so the
  round trip gives identical embeddings).
* `clip`: a plain Hugging Face CLIP (`logit_scale` = the trained global temperature). It has no
  place for the long-caption positions and projection, the region and hard temperatures and the
  temporal module: the summary names them.
* `fgclip2`: FG-CLIP 2's layout (`fgclip.models.fgclip2_layout`; model_type fgclip2, its key names), for a
  model of the SigLIP 2 family; the temporal module and the region/hard scales and biases go to
  `fgclip_video.*` beside it, as for `fgclip`.

A format belongs to a family: `fgclip` and `clip` export the CLIP family, `fgclip2` the SigLIP 2 one.

Every export keeps the source's sharding when its tensor names are unchanged (`model-0000N-of-
0000M.safetensors` + index, as the larger releases come), and copies every tokenizer file and the
remote code (`*.py`) that the source's `auto_map` names, so `AutoModel(ForCausalLM).from_pretrained(
out, trust_remote_code=True)` works as with the release (the `clip` format, a plain CLIP, has no
remote code). The summary lists the files; remote code named but absent from the source is listed too.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from fgclip import run_dir
from fgclip.models.dir_files import (PROCESSOR_FILE_NAMES, TOKENIZER_FILE_NAMES, remote_code_files,
                                     write_safetensors_weights)
from fgclip.models.families import family_of
from fgclip.models.layouts import (
    EXTRAS_CONFIG_NAME,
    EXTRAS_FORMAT_VERSION,
    EXTRAS_WEIGHTS_NAME,
    FGCLIP_V1_ARCHITECTURE,
    ModelDirError,
    model_to_clip,
    model_to_fgclip_v1,
)

FORMATS = ("fgclip", "clip", "fgclip2")
FORMAT_FAMILIES = {"fgclip": "clip", "clip": "clip", "fgclip2": "siglip2"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")  # one of them makes a tokenizer

# What each of our parts is, for the summary of what a plain CLIP leaves out.
PART_NAMES = {
    "long_positions": "long-caption positions (FG-CLIP's position_embedding_ori/_res)",
    "long_text_projection": "long-caption projection (FG-CLIP's text_filip_projection)",
    "logit_scales.region": "region temperature",
    "logit_scales.hard": "hard-negative temperature",
    "temporal": "temporal module",
}


@dataclass
class ExportSummary:
    source: Path  # the model directory exported
    out_dir: Path
    format: str
    tensors: int  # in the model weights (model.safetensors or its shards)
    beside: int  # in fgclip_video.safetensors (fgclip format)
    left_out: list[str]  # descriptions of our parts not written (clip format)
    beside_parts: str = "the temporal module"  # what the `beside` tensors are
    weight_files: list[str] = field(default_factory=lambda: ["model.safetensors"])
    side_files: list[str] = field(default_factory=list)  # tokenizer and processor files copied
    remote_code: list[str] = field(default_factory=list)  # *.py files copied (auto_map and their imports)
    remote_code_missing: list[str] = field(default_factory=list)  # named by auto_map, absent from the source

    def lines(self) -> list[str]:
        lines = [f"wrote {self.out_dir} from {self.source}: {self.format} layout, {self.tensors} tensors in "
                 f"{', '.join(self.weight_files)}"]
        if self.beside:
            lines.append(f"  + {self.beside} tensors of fgclip-vad's own parts ({self.beside_parts}) in {EXTRAS_WEIGHTS_NAME} "
                         f"(FG-CLIP's scripts ignore it; fgclip-vad reads it back)")
        if self.side_files:
            lines.append(f"  tokenizer and processor files: {', '.join(self.side_files)}")
        if self.remote_code:
            lines.append(f"  remote code (auto_map, for trust_remote_code=True): {', '.join(self.remote_code)}")
        if self.remote_code_missing:
            lines.append(f"  remote code that auto_map names but {self.source} lacks: {', '.join(self.remote_code_missing)} "
                         f"(copy them from the release to load the export with trust_remote_code=True)")
        if self.left_out:
            lines.append("  left out (a plain CLIP has no place for them): " + "; ".join(self.left_out))
        return lines


def export_model(source: Path, out_dir: Path, fmt: str, *, force: bool = False) -> ExportSummary:
    """Load `source` (any layout `FGCLIPVideo.from_pretrained` reads) and write it to `out_dir` as `fmt`."""
    from safetensors.torch import save_file

    from fgclip.models.clip_video import FGCLIPVideo
    from fgclip.models.factory import preprocessor_config

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    source, out_dir = Path(source), Path(out_dir)
    if not run_dir.is_model_dir(source) and run_dir.latest_model_dir(source) is not None:
        source = run_dir.latest_model_dir(source)  # a training run's directory: its newest model
    if out_dir.resolve() == source.resolve():
        raise ModelDirError(f"{out_dir}: the output directory is the source model; give another --out")
    if (out_dir / "config.json").exists() and not force:
        raise ModelDirError(f"{out_dir}: already holds a model (config.json); pass --force to overwrite it")
    family = family_of(source)
    if FORMAT_FAMILIES[fmt] != family:
        fitting = ", ".join(name for name, owner in FORMAT_FAMILIES.items() if owner == family)
        raise ModelDirError(f"{source}: a {family}-family model cannot be written as {fmt!r}; its formats: {fitting}")
    if fmt == "fgclip2":
        return _export_fgclip2(source, out_dir)
    model = FGCLIPVideo.from_pretrained(source)
    aux_files = model.aux_files()
    _require_tokenizer(source, aux_files)
    state = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    config = copy.deepcopy(model.clip.config)
    if fmt == "fgclip":
        weights, beside = model_to_fgclip_v1(state)
        config.architectures = [FGCLIP_V1_ARCHITECTURE]
        left_out = []
    else:
        weights, left_names = model_to_clip(state)
        beside = {}
        config.architectures = ["CLIPModel"]
        if hasattr(config, "auto_map"):  # FG-CLIP's remote-code classes, from a download: not a plain CLIP's
            del config.auto_map
        aux_files = {name: content for name, content in aux_files.items() if not name.endswith(".py")}
        left_out = _describe_parts(left_names)

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (EXTRAS_CONFIG_NAME, EXTRAS_WEIGHTS_NAME):  # of an earlier export into the same place
        (out_dir / stale).unlink(missing_ok=True)
    config.save_pretrained(str(out_dir))
    weight_files = write_safetensors_weights(out_dir, weights, weight_map=model.source_weight_map)
    for name, content in aux_files.items():
        (out_dir / name).write_bytes(content)
    if "preprocessor_config.json" not in aux_files:
        processor = preprocessor_config(model.image_size, mean=model.image_mean.tolist(), std=model.image_std.tolist())
        (out_dir / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    if beside:
        save_file(beside, str(out_dir / EXTRAS_WEIGHTS_NAME))
        extras = {"format_version": EXTRAS_FORMAT_VERSION, "temporal_layers": len(model.temporal.blocks),
                  "temporal_heads": model.temporal.num_heads}
        (out_dir / EXTRAS_CONFIG_NAME).write_text(json.dumps(extras, indent=2) + "\n")
    return ExportSummary(source=source, out_dir=out_dir, format=fmt, tensors=len(weights), beside=len(beside),
                         left_out=left_out, weight_files=weight_files,
                         **_side_file_lists(source, aux_files, with_remote_code=fmt == "fgclip"))


def _export_fgclip2(source: Path, out_dir: Path) -> ExportSummary:
    """FG-CLIP 2's layout is the family's own checkpoint layout (`FGCLIP2Video.save_pretrained`)."""
    from fgclip.models.siglip2_video import FGCLIP2Video

    model = FGCLIP2Video.from_pretrained(source)
    _require_tokenizer(source, model.aux_files())
    weight_files = model.save_pretrained(out_dir)
    scales = "region/hard biases" if model.trainer_scalars else "region/hard scales and biases"
    return ExportSummary(source=source, out_dir=out_dir, format="fgclip2", tensors=len(model.fgclip2_state_dict()),
                         beside=len(model.extra_state_dict()), left_out=[],
                         beside_parts=f"the temporal module, {scales}", weight_files=weight_files,
                         **_side_file_lists(source, model.aux_files()))


def _side_file_lists(source: Path, written: dict[str, bytes], *, with_remote_code: bool = True) -> dict[str, list[str]]:
    """The summary's lists: tokenizer/processor files and remote code written, remote code the source lacks."""
    known = (*TOKENIZER_FILE_NAMES, *PROCESSOR_FILE_NAMES)
    return {"side_files": [name for name in known if name in written],
            "remote_code": sorted(name for name in written if name.endswith(".py")),
            "remote_code_missing": remote_code_files(source)[1] if with_remote_code else []}


def _require_tokenizer(source: Path, aux_files: dict[str, bytes]) -> None:
    """An export is only usable with its tokenizer: refuse a source directory without one."""
    if not any(name in aux_files for name in TOKENIZER_FILES):
        raise ModelDirError(f"{source}: no tokenizer files (tokenizer.json, vocab.json + merges.txt, or "
                            f"tokenizer.model) to export with the model; copy them from the model it was trained from")


def _describe_parts(names: list[str]) -> list[str]:
    """State names -> one description per part, with its tensor count."""
    counts: dict[str, int] = {}
    for name in names:
        part = next((p for p in PART_NAMES if name == p or name.startswith(p + ".")), name)
        counts[part] = counts.get(part, 0) + 1
    return [f"{PART_NAMES.get(part, part)} ({count} tensor{'s' if count > 1 else ''})" for part, count in counts.items()]
