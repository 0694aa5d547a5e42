"""Generated snippet-feature directories in the files `fgclip-vad features` writes (lists, both
ground truths, manifest), for the heads' tests: anomalous videos carry a signal in the first
dimensions during their event, normal ones only noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fgclip.eval.ground_truth import VideoAnnotation
from fgclip.features.files import (FeatureEntry, SNIPPET_FRAMES, feature_path, save_feature, save_json,
                                   snippet_ground_truth, write_ground_truth, write_lists)

CLASSES = ("Abuse", "Fighting")


def video_features(rng: np.random.Generator, snippets: int, width: int, event: tuple[int, int] | None,
                   signal: float) -> np.ndarray:
    """Noise of norm about sqrt(width) per snippet; the event's snippets moved by `signal` x sqrt(width)
    along one fixed direction (the same for every video: what an anomaly looks like here)."""
    features = rng.normal(0.0, 1.0, (snippets, width)).astype(np.float32)
    if event is not None:
        direction = np.random.default_rng(1234).normal(0.0, 1.0, width).astype(np.float32)
        features[event[0]:event[1]] += signal * direction
    return features


def write_features_dir(root: Path, model_dir: Path, *, width: int, train_videos: int = 24, test_videos: int = 8,
                       crops: int = 2, signal: float = 1.0, seed: int = 0) -> Path:
    """A features directory of a UCF-Crime-like dataset: half the videos normal, half of CLASSES."""
    rng = np.random.default_rng(seed)
    train, test, annotations, keys, lengths, exact = [], [], {}, [], [], {}
    for split, count in (("train", train_videos), ("test", test_videos)):
        for index in range(count):
            anomalous = index % 2 == 1
            label = CLASSES[index // 2 % len(CLASSES)] if anomalous else "Normal"
            folder = label if anomalous else f"{'Training' if split == 'train' else 'Testing'}_Normal_Videos_Anomaly"
            key = f"{label}{index:03d}_{split}_x264" if anomalous else f"Normal_Videos_{index:03d}_{split}_x264"
            snippets = int(rng.integers(20, 60))
            event = (snippets // 3, snippets // 3 + 6) if anomalous else None
            base = video_features(rng, snippets, width, event, signal)
            for crop in range(crops if split == "train" else 1):
                path = feature_path(root, folder, key, crop)
                save_feature(path, base + rng.normal(0, 0.1, base.shape).astype(np.float32))
                (train if split == "train" else test).append(FeatureEntry(path, label, key, crop))
            if split == "test":
                keys.append(key)
                lengths.append(snippets)
                frames = snippets * SNIPPET_FRAMES - 5  # the true length is not a multiple of 16
                gt = np.zeros(frames, dtype=np.uint8)
                if anomalous:
                    start, end = event[0] * SNIPPET_FRAMES, event[1] * SNIPPET_FRAMES
                    annotations[key] = VideoAnnotation(key, label, ((start, end),), index + 1)
                    gt[start:end] = 1
                exact[key] = gt
    write_lists(root, "train", train)
    write_lists(root, "test", test)
    gt = snippet_ground_truth(keys, lengths, annotations, "Normal")
    gt.exact.update(exact)
    files = write_ground_truth(root, "ucf-crime", gt)
    save_json(root / "manifest.json", {
        "model": {"name": "micro", "path": str(Path(model_dir).resolve()), "family": "clip", "embed_dim": width},
        "dataset": "ucf-crime",
        "ground_truth": {"files": {name: str(path.relative_to(root)) for name, path in files.items()}},
    })
    return root
