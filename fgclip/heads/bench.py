"""One epoch of `train-head --method vadclip` on UCF-Crime-sized generated features, timed
(docs/PERFORMANCE.md): 1,610 videos x 10 crops = 16,100 training samples, 800 normal and 810
anomalous videos as the official split, lengths drawn around UCF-Crime's, each reduced to the
256-snippet training clip as training does. The features are generated in memory (random, on the
training device), so the time is the head's (forward, losses, backward, optimizer) and the text
tower's, not the disk's. `steps` times a part of the epoch and scales it to the whole, said so."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fgclip.heads.data import TrainingSet
from fgclip.heads.prompt_context import LearnablePromptText
from fgclip.heads.train import batches, build_head, class_phrases, step_loss, steps_per_epoch
from fgclip.heads.vadclip import VadCLIPConfig
from fgclip.models.families import load_model_and_tokenizer
from pipeline.datasets import get_dataset

UCF_NORMAL_VIDEOS, UCF_ANOMALOUS_VIDEOS = 800, 810


def generated_samples(rows_normal: int, rows_anomalous: int, width: int, clip: int, num_classes: int,
                      device: torch.device, seed: int = 0) -> TrainingSet:
    generator = torch.Generator(device="cpu").manual_seed(seed)
    rows = rows_normal + rows_anomalous
    lengths = torch.randint(clip // 4, clip + 1, (rows,), generator=generator)  # many UCF videos fill all 256
    lengths[torch.rand(rows, generator=generator) < 0.6] = clip
    features = torch.randn(rows, clip, width, device=device)
    is_anomaly = torch.cat([torch.zeros(rows_normal), torch.ones(rows_anomalous)])
    class_index = torch.cat([torch.zeros(rows_normal, dtype=torch.long),
                             torch.randint(1, num_classes, (rows_anomalous,), generator=generator)])
    return TrainingSet(features, lengths.to(device), is_anomaly.to(device), class_index.to(device), [""] * rows)


def bench_epoch(text_model: Path, *, videos_normal: int = UCF_NORMAL_VIDEOS, videos_anomalous: int = UCF_ANOMALOUS_VIDEOS,
                crops: int = 10, batch_size: int = 64, clip: int = 256, window: int = 8, steps: int | None = None,
                device: str = "cpu", echo=print) -> dict:
    device_ = torch.device(device)
    dataset = get_dataset("ucf-crime")
    tower, tokenizer = load_model_and_tokenizer(text_model)
    width = tower.embed_dim
    prompt = LearnablePromptText(tower, tokenizer, class_phrases(dataset))
    config = VadCLIPConfig(feature_dim=width, num_classes=len(dataset.classes), max_snippets=clip, window=window,
                           heads=max(1, width // 64)).to_dict()
    head = build_head("vadclip", config, prompt).to(device_).train()
    optimizer = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=2e-5)
    full = TrainingSet(torch.empty(0), torch.empty(0), torch.cat([torch.zeros(videos_normal * crops),
                                                                  torch.ones(videos_anomalous * crops)]),
                       torch.empty(0), [])
    epoch_steps = steps_per_epoch(full, batch_size)
    timed = min(steps or epoch_steps, epoch_steps)
    # with a part of the epoch timed, only the rows those steps draw are generated
    per_kind = batch_size * (timed + 1)
    samples = generated_samples(min(per_kind, videos_normal * crops), min(per_kind, videos_anomalous * crops), width,
                                clip, len(dataset.classes), device_)
    generator = torch.Generator().manual_seed(0)

    def run(count: int) -> None:
        done = 0
        while done < count:
            for batch in batches(samples, batch_size, generator):
                loss = step_loss(head, "vadclip", batch, 1e-4)["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done += 1
                if done == count:
                    break
        if device_.type == "cuda":
            torch.cuda.synchronize(device_)

    run(2)  # warm-up: allocations, kernels
    started = time.perf_counter()
    run(timed)
    seconds = time.perf_counter() - started
    result = {"device": torch.cuda.get_device_name(device_) if device_.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
              "samples": (videos_normal + videos_anomalous) * crops, "batch": f"{batch_size} normal + {batch_size} anomalous",
              "feature_width": width, "text_model": str(text_model), "steps_per_epoch": epoch_steps, "steps_timed": timed,
              "seconds_timed": seconds, "epoch_seconds": seconds / timed * epoch_steps,
              "extrapolated": timed < epoch_steps}
    echo(f"vadclip head, {result['samples']} samples ({epoch_steps} steps of {result['batch']}), width {width}, "
         f"{result['device']}: {timed} steps in {seconds:.2f} s -> one epoch "
         f"{result['epoch_seconds']:.1f} s{' (extrapolated)' if result['extrapolated'] else ''}")
    return result
