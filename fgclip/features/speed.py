"""How fast `fgclip-vad features` runs, against its two bounds (`make bench`'s features row):

* bare inference: the model's `frame_features` on frames already on the device, batched as the
  extractor batches them (the ceiling of the model side);
* decoding: the extractor's own decode path alone (stage 1's decoder, the same threads), in
  snippet frames per second and in model frames per second (x crops): the machine's decode rate;
* extraction: the real path, end to end (decode threads ahead of the model, crops, inference,
  atomic .npy writes), with the model already loaded.

Frames per second count model inputs: snippets x crops.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch

from fgclip.features.extract import (
    CropRule,
    ExtractionSettings,
    FeatureModel,
    VideoItem,
    decode_video,
    default_decode_workers,
    extract,
    snippet_features,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_features(model_dir: Path, videos: Sequence[Path], *, crops: int, size: int, device: torch.device,
                  batch_frames: int = 256, decode_workers: int | None = None) -> dict:
    """One features row: extraction, decoding alone and bare inference on the same videos and model."""
    decode_workers = decode_workers or default_decode_workers()
    items = [VideoItem(path=Path(p), folder="bench", key=f"{Path(p).stem}_{i}", label="Normal", split="train")
             for i, p in enumerate(videos)]
    settings = ExtractionSettings(crop=CropRule(crops=crops, size=size), batch_frames=batch_frames,
                                  decode_workers=decode_workers, annotations=None)
    with tempfile.TemporaryDirectory() as scratch:
        model = FeatureModel("bench", Path(model_dir), Path(scratch) / "warmup")
        model.load(device)

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=decode_workers) as pool:
            decoded = list(pool.map(lambda item: decode_video(item, settings), items))
        decode_s = time.perf_counter() - start
        failed = [d.skip_reason for d in decoded if d.skip_reason]
        if failed:
            raise RuntimeError(f"features bench: a generated video did not decode: {failed[0]}")
        snippets = sum(len(d.frame_numbers) for d in decoded)

        # Bare inference: the same number of model frames, already cropped and on the device.
        sample = settings.crop.apply(torch.from_numpy(decoded[0].frames_uint8))
        on_device = sample.to(device)
        snippet_features(model.model, on_device, device=device, batch_frames=batch_frames)  # warm-up
        repeats = max(1, -(-snippets // sample.shape[1]))
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            snippet_features(model.model, on_device, device=device, batch_frames=batch_frames)
        _sync(device)
        bare_fps = repeats * sample.shape[0] * sample.shape[1] / (time.perf_counter() - start)

        model.out_dir = Path(scratch) / "timed"
        extract(items[:1], [model], settings, device=device, progress=False, echo=lambda _: None)  # warm-up
        model.out_dir = Path(scratch) / "timed-run"
        _sync(device)
        start = time.perf_counter()
        extract(items, [model], settings, device=device, progress=False, echo=lambda _: None)
        _sync(device)
        extract_s = time.perf_counter() - start
    model_frames = snippets * crops
    result = {
        "crops": crops, "videos": len(items), "snippets": snippets, "model_frames": model_frames,
        "decode_workers": decode_workers, "batch_frames": batch_frames,
        "extraction_frames_per_s": model_frames / extract_s, "extraction_s": extract_s,
        "bare_inference_frames_per_s": bare_fps,
        "decode_snippets_per_s": snippets / decode_s, "decode_model_frames_per_s": model_frames / decode_s,
        "decode_s": decode_s,
    }
    result["of_bare_inference"] = result["extraction_frames_per_s"] / bare_fps
    result["of_decode"] = result["extraction_frames_per_s"] / result["decode_model_frames_per_s"]
    result["bound"] = "decoding" if result["decode_model_frames_per_s"] < bare_fps else "inference"
    return result
