"""Small real inputs for the loader, trainer and checkpoint tests.

* `write_square_shards`: real HDF5 shards (through `pipeline.shards.write_shard`) of videos in
  which a coloured square moves over a grey background; the caption names the colour and the
  direction, the region box tracks the square. Pixels also encode (record, stored frame) in
  the top-left corner so a test can tell exactly which stored frame it got.
* `write_micro_model`: a real HF CLIP directory built with `fgclip.models.factory`'s own pieces
  (BPE tokenizer trained on the captions, CLIPConfig, preprocessor config), only smaller than
  the `tiny` preset (32 px frames) so CPU tests run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.shards import SCHEMA_VERSION, ShardAttrs, ShardRecord, shard_name, write_manifest, write_shard

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 220, 40),
    "purple": (150, 50, 190),
    "orange": (240, 140, 30),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
}
BACKGROUND = 120
SQUARE_FRACTION = 0.35


def square_box(record: int, frame: int, num_frames: int) -> tuple[float, float, float, float]:
    """Where record `record`'s square is on stored frame `frame` (x1, y1, x2, y2 in 0..1)."""
    moving_right = record % 2 == 0
    progress = frame / max(1, num_frames - 1)
    x1 = 0.05 + 0.55 * (progress if moving_right else 1.0 - progress)
    y1 = 0.15 + 0.4 * ((record * 0.37) % 1.0)
    return (x1, y1, x1 + SQUARE_FRACTION, y1 + SQUARE_FRACTION)


def caption_of(record: int) -> tuple[str, str]:
    colour = list(COLOURS)[record % len(COLOURS)]
    direction = "right" if record % 2 == 0 else "left"
    return f"a {colour} square moves to the {direction}", f"the {colour} square"


def square_record(record: int, num_frames: int, size: int, *, hard_negatives: bool = True) -> ShardRecord:
    colour = np.array(list(COLOURS.values())[record % len(COLOURS)], dtype=np.uint8)
    frames = np.full((num_frames, size, size, 3), BACKGROUND, dtype=np.uint8)
    boxes = np.zeros((1, num_frames, 4), dtype=np.float32)
    for t in range(num_frames):
        box = square_box(record, t, num_frames)
        boxes[0, t] = box
        x1, y1, x2, y2 = (int(round(v * size)) for v in box)
        frames[t, y1:y2, x1:x2] = colour
        frames[t, 0, 0] = (record, t % 256, 7)  # identity of (record, stored frame)
    global_caption, region_caption = caption_of(record)
    other = list(COLOURS)[(record + 3) % len(COLOURS)]
    negatives = [[f"the {other} square"]] if hard_negatives and record % 3 == 0 else [[]]
    return ShardRecord(
        frames_uint8=frames,
        frame_index=np.arange(num_frames, dtype=np.int64) * 5,
        boxes=boxes,
        box_mask=np.ones((1, num_frames), dtype=bool),
        global_caption=global_caption,
        region_captions=[region_caption],
        hard_negatives=negatives,
        video=f"videos/square_{record:03d}.mp4",
        label="Normal",
        is_anomaly=False,
        window_s=(0.0, num_frames / 6.0),
        fps=30.0,
        num_source_frames=num_frames * 5,
        record_index=record,
    )


def write_square_shards(out_dir: Path, *, num_records: int, num_frames: int, size: int = 32,
                        records_per_shard: int = 4) -> Path:
    """A complete uniform shard directory (shards + manifest) of `num_records` square videos."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    attrs = ShardAttrs(sampling="uniform", num_frames=num_frames, stride=0, height=size, width=size, resize_mode="squash")
    entries = []
    for shard_id, start in enumerate(range(0, num_records, records_per_shard)):
        indices = list(range(start, min(start + records_per_shard, num_records)))
        write_shard(out_dir / shard_name(shard_id), [square_record(i, num_frames, size) for i in indices], attrs)
        entries.append({"file": shard_name(shard_id), "records": indices, "num_frames": num_frames})
    write_manifest(out_dir, {"schema_version": SCHEMA_VERSION, "sampling": "uniform", "num_frames": num_frames,
                             "size": size, "shards": entries, "skipped": []})
    return out_dir


def all_captions(num_records: int) -> list[str]:
    return [text for i in range(num_records) for text in caption_of(i)] + [f"the {c} square" for c in COLOURS]


def session_micro_model(tmp_path_factory) -> Path:
    """One micro model per test session, shared by the test modules that need it."""
    path = tmp_path_factory.getbasetemp() / "micro_model"
    if not (path / "config.json").is_file():
        write_micro_model(path)
    return path


def write_micro_model(out_dir: Path, *, image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    """A small random CLIP directory, written the way `init_model` writes the tiny preset."""
    import torch
    from transformers import CLIPModel

    from fgclip.models.factory import Preset, clip_config, preprocessor_config, train_tokenizer

    spec = Preset(vision_width=32, vision_layers=2, vision_heads=2, patch_size=patch_size, image_size=image_size,
                  text_width=32, text_layers=2, text_heads=2, projection_dim=32, vocab_size=300)
    tokenizer = train_tokenizer(all_captions(len(COLOURS) * 2) * 4, spec.vocab_size)
    config = clip_config(spec, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(image_size), indent=2) + "\n")
    return out_dir
