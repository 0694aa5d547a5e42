"""Checkpoint selection that never looks at the test set: a validation split of training videos.

`--val-fraction F` holds out a share F of the training *videos* (all records of a held-out
video go, so no window of it is trained on), drawn per anomalous / normal group with the run's
seed, and never a video of any official test split (`test_split_videos`: the splits found for
the shards' annotation file, per dataset, as stage 1's leak check finds them). The trainer
scores the held-out records every `--val-every` steps with evaluation's code and keeps the
best model in `best/` (`fgclip.run_dir`; `run_dir.read_selection` says when and how):

* **frame AUC** when the held-out videos have temporal labels (`--val-annotations FILE`, a
  ground-truth file in any format of `fgclip.eval.ground_truth` that lists them): each stored frame
  scored as evaluation scores test frames (`fgclip.eval.prompts.anomaly_scores`), labelled at its
  source frame number;
* otherwise **video -> caption retrieval accuracy**: the share of held-out records whose video
  embedding is nearest to their own global caption among all held-out captions (an identical
  caption of another record counts as correct: it is the same text);
* or, with `--val-metric video_label_auc`, **frame AUC against the videos' own labels**: scored
  as above, every frame of an anomalous training video counting as anomalous. That is all the
  labels UCF-Crime's training videos have; it asks of the model what the test AUC asks, where
  retrieval over a handful of held-out captions can fall while the test AUC rises.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fgclip.eval.ground_truth import frame_labels, load_ground_truth
from fgclip.eval.ground_truth import video_key as gt_video_key
from fgclip.train.loader_worker import subsample_rows
from fgclip.eval.metrics import roc_auc
from fgclip.eval.prompts import anomaly_scores, prompt_embeddings
from fgclip.models.text import caption_key
from pipeline.datasets import REGISTRY, dataset_of_path
from pipeline.shards import RecordMeta, ShardReader, read_manifest
from pipeline.ucf_split import find_test_split, read_split_list, video_key

log = logging.getLogger(__name__)

RETRIEVAL = "retrieval_top1"
FRAME_AUC = "frame_auc"
VIDEO_LABEL_AUC = "video_label_auc"
METRIC_DOC = {
    RETRIEVAL: "video -> caption retrieval top-1 accuracy over the held-out records",
    FRAME_AUC: "frame ROC AUC of the held-out records' stored frames against their temporal labels",
    VIDEO_LABEL_AUC: "frame ROC AUC of the held-out records' stored frames against their videos' labels "
                     "(every frame of an anomalous video anomalous)",
}
# --val-metric's names -> the metric scored ("auto": frame AUC with temporal labels, else retrieval)
METRIC_CHOICES = {"retrieval": RETRIEVAL, "frame_auc": FRAME_AUC, "video_label_auc": VIDEO_LABEL_AUC}


class ValidationError(ValueError):
    """A validation split that cannot be made (too few videos, bad fraction); the message says what to do."""


def test_split_videos(shard_dir: Path, metas: list[RecordMeta]) -> tuple[set[str], list[str]]:
    """Video keys of every official test split found for the shards' source annotation file
    (one per dataset of the records), and the split files read."""
    try:
        source = read_manifest(shard_dir).get("source") or ""
    except Exception:  # noqa: BLE001 - no manifest: nothing to look next to
        source = ""
    keys: set[str] = set()
    files: list[str] = []
    if not source:
        return keys, files
    for name in sorted({dataset_of_path(m.video).name for m in metas}):
        split = find_test_split(source, REGISTRY[name])
        if split is None or not split.is_file():
            continue
        keys |= {entry.key for entry in read_split_list(split, REGISTRY[name])}
        files.append(str(split))
    return keys, files


def choose_validation_videos(metas: list[RecordMeta], fraction: float, seed: int,
                             excluded: set[str] = frozenset()) -> set[str]:
    """Video keys held out: round(fraction x videos) of the anomalous and of the normal videos
    (at least one of a group of two or more), never one of `excluded` (test-split videos)."""
    if not 0 < fraction < 1:
        raise ValidationError(f"--val-fraction must be between 0 and 1 (exclusive), got {fraction}")
    anomalous_of: dict[str, bool] = {}
    for meta in metas:
        anomalous_of.setdefault(video_key(meta.video), meta.is_anomaly)
    groups: dict[bool, list[str]] = defaultdict(list)
    for key, anomalous in sorted(anomalous_of.items()):
        if key not in excluded:
            groups[anomalous].append(key)
    rng = np.random.default_rng([seed, 0x5A11D])
    chosen: set[str] = set()
    for anomalous in sorted(groups):
        keys = groups[anomalous]
        count = max(1, round(fraction * len(keys))) if len(keys) >= 2 else 0
        chosen |= {keys[i] for i in rng.permutation(len(keys))[:count]}
    if not chosen or len(chosen) >= len(anomalous_of):
        raise ValidationError(f"--val-fraction {fraction}: {len(anomalous_of)} training videos "
                              f"({len(excluded & set(anomalous_of))} of them test videos) leave no validation split "
                              f"and training videos both; train on more videos or drop --val-fraction")
    return chosen


@dataclass
class ValidationSet:
    """The held-out records (metas only; frames are read at each scoring) and how they are scored."""

    metas: list[RecordMeta]
    num_frames: int
    videos: set[str]
    test_split_files: list[str] = field(default_factory=list)
    temporal_labels: dict = field(default_factory=dict)  # video key -> VideoAnnotation, for frame AUC
    class_names: list[str] = field(default_factory=list)
    metric: str = RETRIEVAL

    @classmethod
    def hold_out(cls, metas: list[RecordMeta], shard_dir: Path, *, fraction: float, seed: int, num_frames: int,
                 annotations: Path | None = None, metric: str = "auto") -> "ValidationSet":
        excluded, files = test_split_videos(shard_dir, metas)
        if not files:
            log.warning("%s: no official test split found for the shards' annotation file (see `fgclip-vad validate`); "
                        "the validation split cannot keep test videos out, stage 1's leak check is all there is",
                        shard_dir)
        videos = choose_validation_videos(metas, fraction, seed, excluded)
        held = [m for m in metas if video_key(m.video) in videos]
        labels: dict = {}
        class_names: list[str] = []
        if annotations is not None:
            _, ground_truth = load_ground_truth(annotations)
            labels = {gt_video_key(m.video): ground_truth[gt_video_key(m.video)] for m in held
                      if gt_video_key(m.video) in ground_truth}
            class_names = sorted({a.label for a in ground_truth.values() if a.is_anomaly})
        chosen = METRIC_CHOICES.get(metric) or (FRAME_AUC if labels else RETRIEVAL)
        if chosen == FRAME_AUC and not labels:
            raise ValidationError(f"--val-metric frame_auc: {annotations} labels none of the {len(videos)} held-out "
                                  f"videos; give the temporal labels of the training videos, or another --val-metric")
        if chosen == VIDEO_LABEL_AUC:
            class_names = sorted({m.label for m in metas if m.is_anomaly})
            if len({m.is_anomaly for m in held}) < 2:
                raise ValidationError(f"--val-metric video_label_auc: the {len(videos)} held-out videos are all "
                                      f"{'anomalous' if held[0].is_anomaly else 'normal'}, so no AUC can be taken; "
                                      f"raise --val-fraction or use --val-metric retrieval")
        return cls(held, num_frames, videos, files, labels, class_names, chosen)

    def describe(self) -> str:
        splits = ", ".join(self.test_split_files) or "none found"
        return (f"{len(self.metas)} records of {len(self.videos)} held-out training videos, scored by "
                f"{METRIC_DOC[self.metric]}; test splits kept out: {splits}")

    @torch.inference_mode()
    def score(self, model, tokenizer, device, autocast=None) -> float | None:
        """The validation score of `model` (higher is better); None when undefined (one class of frames)."""
        was_training = model.training
        model.eval()
        context = autocast if autocast is not None else contextlib.nullcontext()
        try:
            with context:
                return self._retrieval(model, tokenizer, device) if self.metric == RETRIEVAL else \
                    self._frame_auc(model, tokenizer, device)
        finally:
            model.train(was_training)

    def _read(self, meta: RecordMeta, rows: np.ndarray | None) -> tuple[torch.Tensor, ...]:
        with ShardReader(meta.shard) as reader:
            record = reader.read_record(meta.local_index)
        keep = rows if rows is not None else np.arange(record.num_frames)
        return (torch.from_numpy(np.ascontiguousarray(record.frames_uint8[keep])),
                torch.from_numpy(record.boxes[:, keep]).float(), torch.from_numpy(record.box_mask[:, keep]),
                record.frame_index[keep])

    def _retrieval(self, model, tokenizer, device) -> float:
        video_embeds = []
        for meta in self.metas:
            frames, boxes, box_mask, _ = self._read(meta, subsample_rows(meta.num_frames, self.num_frames))
            if boxes.shape[0] == 0:  # no regions: the video path needs none
                boxes, box_mask = torch.zeros(1, len(frames), 4), torch.zeros(1, len(frames), dtype=torch.bool)
            pixels = model.preprocess(frames.to(device))
            out = model.encode_video(pixels[None], boxes[None].to(device), box_mask[None].to(device))
            video_embeds.append(out.video_embeds.float())
        captions = [m.global_caption for m in self.metas]
        ids = model.text_rules.ids(tokenizer, captions, "long").to(device)  # the family's long length and rules
        text_embeds = model.encode_text(ids, kind="long").float()
        nearest = (torch.cat(video_embeds) @ text_embeds.t()).argmax(dim=1).cpu().numpy()
        keys = [caption_key(c) for c in captions]
        return float(np.mean([keys[j] == keys[i] for i, j in enumerate(nearest)]))

    def _frame_auc(self, model, tokenizer, device) -> float | None:

        prompts = prompt_embeddings(model, tokenizer, self.class_names, device=torch.device(device))
        temperature = model.temperatures()["global"].float()
        bias = model.logit_biases().get("global")  # the sigmoid family's; None for InfoNCE
        scores, labels = [], []
        for meta in self.metas:
            annotation = self.temporal_labels.get(gt_video_key(meta.video))
            if self.metric == FRAME_AUC and annotation is None:
                continue
            frames, _, _, frame_index = self._read(meta, None)
            frame_embeds = model.encode_frames(model.preprocess(frames.to(device)))
            scores.append(anomaly_scores(frame_embeds, prompts, temperature, objective=model.objective,
                                         bias=bias).cpu().numpy())
            if self.metric == FRAME_AUC:
                labels.append(frame_labels(annotation, meta.num_source_frames)[frame_index])
            else:  # the video's own label, on every frame
                labels.append(np.full(len(frame_index), meta.is_anomaly))
        return roc_auc(np.concatenate(scores), np.concatenate(labels))
