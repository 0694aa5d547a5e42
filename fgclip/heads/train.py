"""`train-head`: a VadCLIP-style or MIL-ranking head on the snippet features of every training
video, one run per seed, chosen without the test set.

    RUN/
        run_config.json           the resolved settings, the list, the text tower, the classes
        seed-N/
            trainer_log.txt, metrics.jsonl, tensorboard/
            checkpoint-STEP/head.pt   head, optimizer, RNG and epoch (the last `keep_checkpoints` kept)
            final/head.pt             the end of the fixed schedule
            best/head.pt              with --val-fraction: the epoch of the best held-out video AUC
            summary.json              what was chosen and why

Selection: a fixed schedule (final/) by default; with `val_fraction` a share of the TRAINING videos
is held out and scored after each epoch by video-level AUC (each video's top-k mean snippet score
against its label); best/ is that epoch. Test videos are never read here.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fgclip.eval.ground_truth import camel_case_to_words
from fgclip.features.files import FeatureEntry, load_feature, read_feature_list, read_features_dir
from fgclip.heads import losses
from fgclip.heads.data import HeadDataError, TrainingSet, class_of_label, feature_width, read_entries, split_held_out
from fgclip.heads.log import HeadLog
from fgclip.heads.mil import MILConfig, MILHead
from fgclip.heads.prompt_context import LearnablePromptText
from fgclip.heads.vadclip import VadCLIPConfig, VadCLIPHead
from fgclip.models.families import load_model_and_tokenizer
from fgclip.run_dir import RUN_CONFIG_NAME
from pipeline.datasets import Dataset, dataset_of_path, get_dataset

METHODS = ("vadclip", "mil")
HEAD_FILE = "head.pt"
WINDOW_BY_DATASET = {"xd-violence": 64}  # VadCLIP's local window; 8 elsewhere (UCF-Crime)
DEFAULT_WINDOW = 8


@dataclass
class HeadSettings:
    method: str
    output_dir: Path
    train_list: Path  # a features directory's lists/vadclip_train.csv or a released list
    dataset: str
    features_dir: Path | None = None
    path_map: Sequence[tuple[str, str]] = ()
    text_model: Path | None = None  # vadclip: the frozen text tower (from the features' manifest by default)
    crop: str = "all"  # "all": every crop file a sample; "N": only crop N
    clip_snippets: int = 256
    window: int | None = None  # None: the dataset's (8; 64 for XD-Violence)
    epochs: int = 10
    lr: float | None = None  # None: 2e-5 (VadCLIP, AdamW) / 1e-3 (MIL, Adagrad as Sultani)
    batch_size: int = 64  # per kind: a step takes this many normal and this many anomalous samples
    prompt_prefix: int = 10
    prompt_postfix: int = 10
    separation_weight: float = 1e-4
    local_layers: int = 2
    seeds: Sequence[int] = (0,)
    val_fraction: float = 0.0
    device: str = "cpu"
    keep_checkpoints: int = 2
    log_every: int = 10  # steps

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (2e-5 if self.method == "vadclip" else 1e-3)

    def resolved_window(self) -> int:
        return self.window if self.window is not None else WINDOW_BY_DATASET.get(self.dataset, DEFAULT_WINDOW)

    def to_dict(self) -> dict:
        values = asdict(self)
        values.update(output_dir=str(self.output_dir), train_list=str(self.train_list),
                      features_dir=str(self.features_dir) if self.features_dir else None,
                      text_model=str(self.text_model) if self.text_model else None,
                      path_map=[list(pair) for pair in self.path_map], seeds=list(self.seeds),
                      lr=self.resolved_lr(), window=self.resolved_window())
        return values


def settings_from_features(method: str, output_dir: Path, *, features_dir: Path | None = None,
                           train_list: Path | None = None, dataset: str | None = None,
                           text_model: Path | None = None, **options) -> HeadSettings:
    """Settings for a features directory (its train list, dataset and model: the text tower) or a
    released list (`--dataset` or the list's paths say the dataset; `--text-model` for vadclip)."""
    if method not in METHODS:
        raise HeadDataError(f"unknown head method {method!r}; one of {', '.join(METHODS)}")
    if features_dir is not None:
        features = read_features_dir(features_dir)
        train_list = train_list or features.root / "lists" / "vadclip_train.csv"
        dataset = dataset or features.dataset
        text_model = text_model or features.model_dir
    if train_list is None:
        raise HeadDataError("give a features directory (--features DIR) or a training list (--train-list FILE)")
    if dataset is None:
        first = Path(train_list).read_text(encoding="utf-8").splitlines()[1:2] or [""]
        dataset = dataset_of_path(first[0]).name
    if method == "vadclip" and text_model is None:
        raise HeadDataError("--method vadclip needs the text tower of the features' model: --text-model DIR "
                            "(for VadCLIP's released features, a local copy of openai/clip-vit-base-patch16)")
    return HeadSettings(method=method, output_dir=Path(output_dir), train_list=Path(train_list),
                        dataset=get_dataset(dataset).name, features_dir=features_dir, text_model=text_model, **options)


def class_phrases(dataset: Dataset) -> list[str]:
    """The prompt words of each class, normal first ("road accidents", "car accident")."""
    return [camel_case_to_words(name).replace("_", " ").lower() for name in dataset.classes]


def select_crops(entries: Sequence[FeatureEntry], crop: str) -> list[FeatureEntry]:
    if crop == "all":
        return list(entries)
    chosen = [e for e in entries if e.crop == int(crop) or e.crop is None]
    if not chosen:
        raise HeadDataError(f"no training file of crop __{crop} in the list (crops there: "
                            f"{sorted({e.crop for e in entries if e.crop is not None})})")
    return chosen


# --- the heads ------------------------------------------------------------------------------------


def build_head(method: str, config: dict, prompt_text=None) -> torch.nn.Module:
    if method == "vadclip":
        return VadCLIPHead(VadCLIPConfig(**config), prompt_text)
    return MILHead(MILConfig(**config))


def head_config(settings: HeadSettings, width: int, dataset: Dataset) -> dict:
    if settings.method == "mil":
        return MILConfig(feature_dim=width).to_dict()
    return VadCLIPConfig(feature_dim=width, num_classes=len(dataset.classes), max_snippets=settings.clip_snippets,
                         window=settings.resolved_window(), local_layers=settings.local_layers,
                         heads=max(1, width // 64), prompt_prefix=settings.prompt_prefix,
                         prompt_postfix=settings.prompt_postfix).to_dict()


def load_head(path: os.PathLike | str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """A saved head for scoring (VadCLIP's classification branch: no text tower needed) and its record."""
    path = Path(path)
    file = path / HEAD_FILE if path.is_dir() else path
    if not file.is_file():
        raise HeadDataError(f"{path}: no {HEAD_FILE} (a head run's seed-N/final or best, or a checkpoint-STEP)")
    record = torch.load(file, map_location="cpu", weights_only=False)
    head = build_head(record["method"], record["config"])
    state = {k: v for k, v in record["state_dict"].items() if not k.startswith("prompt_text.")}
    head.load_state_dict(state)
    return head.to(device).eval(), record


def save_head(target: Path, head: torch.nn.Module, record: dict) -> Path:
    """head.pt into `target`, written in a temp folder renamed when complete."""
    temporary = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    torch.save({**record, "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()}},
               temporary / HEAD_FILE)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(temporary, target)
    return target


# --- one step -------------------------------------------------------------------------------------


def step_loss(head: torch.nn.Module, method: str, batch: TrainingSet, separation_weight: float) -> dict[str, torch.Tensor]:
    """The method's losses of one batch (normal and anomalous rows)."""
    if method == "mil":
        scores = head(batch.features)  # (B, 32)
        anomalous, normal = scores[batch.is_anomaly > 0], scores[batch.is_anomaly == 0]
        pairs = min(len(anomalous), len(normal))
        loss = losses.ranking_loss(anomalous[:pairs], normal[:pairs])
        return {"loss": loss, "ranking": loss}
    output = head(batch.features, batch.lengths)
    bce = losses.topk_mil_bce(output.probabilities, batch.lengths, batch.is_anomaly)
    align = losses.mil_align(output.class_logits, batch.lengths, batch.class_index)
    separation = losses.text_separation(output.text_embeds)
    return {"loss": bce + align + separation_weight * separation, "bce": bce, "mil_align": align,
            "separation": separation}


def batches(samples: TrainingSet, batch_size: int, generator: torch.Generator):
    """One epoch: each batch `batch_size` normal and `batch_size` anomalous rows (fewer when a kind has
    fewer), as many batches as the smaller kind fills; rows shuffled by `generator`."""
    normal = (samples.is_anomaly == 0).nonzero().flatten()
    anomalous = (samples.is_anomaly > 0).nonzero().flatten()
    if not len(normal) or not len(anomalous):
        raise HeadDataError(f"training needs normal and anomalous videos; the list has {len(normal)} normal and "
                            f"{len(anomalous)} anomalous rows")
    normal = normal[torch.randperm(len(normal), generator=generator)]
    anomalous = anomalous[torch.randperm(len(anomalous), generator=generator)]
    per_kind = min(batch_size, len(normal), len(anomalous))
    for start in range(0, min(len(normal), len(anomalous)) - per_kind + 1, per_kind):
        rows = torch.cat([normal[start:start + per_kind], anomalous[start:start + per_kind]])
        yield TrainingSet(samples.features[rows], samples.lengths[rows], samples.is_anomaly[rows],
                          samples.class_index[rows], [samples.videos[i] for i in rows.tolist()])


def steps_per_epoch(samples: TrainingSet, batch_size: int) -> int:
    normal = int((samples.is_anomaly == 0).sum())
    anomalous = int((samples.is_anomaly > 0).sum())
    per_kind = max(1, min(batch_size, normal, anomalous))
    return max(1, min(normal, anomalous) // per_kind)


# --- selection on held-out training videos --------------------------------------------------------


def video_scores(head: torch.nn.Module, entries: Sequence[FeatureEntry], width: int,
                 device: torch.device) -> dict[str, float]:
    """Each video's top-k mean snippet score (k = T // 16 + 1), averaged over its crop files."""
    per_video: dict[str, list[float]] = {}
    head.eval()
    for entry in entries:
        features = torch.from_numpy(load_feature(entry.path, width=width)).to(device)
        snippets = head.score(features)
        top = losses.topk_mean(snippets[None], torch.tensor([len(snippets)], device=device))[0]
        per_video.setdefault(entry.video, []).append(float(top))
    head.train()
    return {video: float(np.mean(values)) for video, values in per_video.items()}


def video_auc(scores: dict[str, float], labels: dict[str, int]) -> float | None:
    truth = [labels[v] for v in scores]
    if len(set(truth)) < 2:
        return None
    return float(roc_auc_score(truth, [scores[v] for v in scores]))


# --- a run ----------------------------------------------------------------------------------------


def rng_state() -> dict:
    """The global generators a head's step draws from (dropout: torch; CUDA when in use). The batch
    order has its own generator, saved beside. (Not training's checkpoint module: evaluation reads
    heads, and evaluation imports nothing of training.)"""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class PreparedData:
    dataset: Dataset
    width: int
    train: TrainingSet
    held_out: list[FeatureEntry]
    held_out_labels: dict[str, int]
    skipped: list[str] = field(default_factory=list)


def prepare_data(settings: HeadSettings, seed: int, echo: Callable[[str], None]) -> PreparedData:
    dataset = get_dataset(settings.dataset)
    entries = select_crops(read_feature_list(settings.train_list, path_map=settings.path_map, dataset=dataset.name),
                           settings.crop)
    for entry in entries:  # every label known before anything is read
        class_of_label(entry.label, dataset)
    train, held_out = split_held_out(entries, settings.val_fraction, seed, dataset)
    width = feature_width(train)
    segments = MILConfig(feature_dim=width).segments if settings.method == "mil" else None
    samples = read_entries(train, dataset, width=width, clip_snippets=settings.clip_snippets, segments=segments)
    labels = {e.video: int(class_of_label(e.label, dataset) != dataset.normal_label) for e in held_out}
    echo(f"seed {seed}: {len(samples.videos)} training samples ({len(set(samples.videos))} videos), "
         f"{len(labels)} held-out videos, feature width {width}")
    return PreparedData(dataset, width, samples, held_out, labels)


def latest_checkpoint(seed_dir: Path) -> Path | None:
    steps = sorted((int(p.name.partition("-")[2]), p) for p in seed_dir.glob("checkpoint-*")
                   if p.name.partition("-")[2].isdigit() and (p / HEAD_FILE).is_file())
    return steps[-1][1] if steps else None


def train_seed(settings: HeadSettings, seed: int, *, resume: bool = True,
               echo: Callable[[str], None] = print) -> dict:
    """One seed's head: the fixed schedule, validation each epoch when a share is held out; resumes
    from the seed's last checkpoint. Returns its summary (also written as summary.json)."""
    seed_dir = Path(settings.output_dir) / f"seed-{seed}"
    summary_file = seed_dir / "summary.json"
    if resume and summary_file.is_file():
        echo(f"seed {seed}: finished earlier ({summary_file})")
        return json.loads(summary_file.read_text())
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = torch.device(settings.device)
    data = prepare_data(settings, seed, echo)
    config = head_config(settings, data.width, data.dataset)
    prompt_text = None
    if settings.method == "vadclip":
        tower, tokenizer = load_model_and_tokenizer(settings.text_model)
        if tower.embed_dim != data.width:
            raise HeadDataError(f"{settings.train_list}: features of width {data.width}, the text tower "
                                f"{settings.text_model} embeds {tower.embed_dim}: give the features' own model (--text-model)")
        prompt_text = LearnablePromptText(tower, tokenizer, class_phrases(data.dataset), prefix=settings.prompt_prefix,
                                          postfix=settings.prompt_postfix)
    head = build_head(settings.method, config, prompt_text).to(device)
    trainable = [p for p in head.parameters() if p.requires_grad]
    optimizer = (torch.optim.AdamW(trainable, lr=settings.resolved_lr()) if settings.method == "vadclip"
                 else torch.optim.Adagrad(trainable, lr=settings.resolved_lr()))
    generator = torch.Generator().manual_seed(seed)
    per_epoch = steps_per_epoch(data.train, settings.batch_size)
    epoch, step, history, best = 0, 0, [], None
    checkpoint = latest_checkpoint(seed_dir) if resume else None
    if checkpoint is not None:
        state = torch.load(checkpoint / HEAD_FILE, map_location="cpu", weights_only=False)
        head.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        generator.set_state(state["generator"])
        epoch, step, history, best = state["epoch"], state["step"], state["history"], state["best"]
    log = HeadLog(seed_dir, resume_step=step if checkpoint is not None else None)
    log.note(f"{'resumed from ' + str(checkpoint) if checkpoint else 'started'}: {settings.method}, seed {seed}, "
             f"{per_epoch} steps per epoch, {settings.epochs} epochs")
    record = {"method": settings.method, "config": config, "dataset": data.dataset.name,
              "classes": list(data.dataset.classes), "feature_width": data.width, "seed": seed,
              "train_list": str(settings.train_list), "text_model": str(settings.text_model) if settings.text_model else None}
    started = time.perf_counter()
    head.train()
    while epoch < settings.epochs:
        totals: dict[str, float] = {}
        for batch in batches(data.train, settings.batch_size, generator):
            batch = TrainingSet(batch.features.to(device), batch.lengths.to(device), batch.is_anomaly.to(device),
                                batch.class_index.to(device), batch.videos)
            values = step_loss(head, settings.method, batch, settings.separation_weight)
            if not torch.isfinite(values["loss"]):
                raise HeadDataError(f"seed {seed}, step {step}: the loss is not finite ({values['loss'].item()}); "
                                    f"lower --lr")
            optimizer.zero_grad(set_to_none=True)
            values["loss"].backward()
            optimizer.step()
            step += 1
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach())
            if step % settings.log_every == 0:
                log.record({"step": step, "epoch": epoch + 1, **{k: float(v.detach()) for k, v in values.items()}})
        epoch += 1
        summary_values = {"step": step, "epoch": epoch, **{f"epoch_{k}": v / per_epoch for k, v in totals.items()},
                          "seconds": time.perf_counter() - started}
        if data.held_out:
            auc = video_auc(video_scores(head, data.held_out, data.width, device), data.held_out_labels)
            summary_values["val_video_auc"] = auc if auc is not None else float("nan")
            # ties go to the later epoch: a saturated held-out AUC (small splits) says nothing against more training
            if auc is not None and (best is None or auc >= best["val_video_auc"]):
                best = {"epoch": epoch, "step": step, "val_video_auc": auc}
                save_head(seed_dir / "best", head, {**record, "epoch": epoch, "selection": best})
        history.append(summary_values)
        echo(log.record(summary_values))
        target = seed_dir / f"checkpoint-{step}"
        save_head(target, head, {**record, "epoch": epoch, "step": step, "optimizer": optimizer.state_dict(),
                                 "rng": rng_state(), "generator": generator.get_state(),
                                 "history": history, "best": best})
        for old in sorted(seed_dir.glob("checkpoint-*"), key=lambda p: int(p.name.partition("-")[2]))[:-settings.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    save_head(seed_dir / "final", head, {**record, "epoch": epoch})
    chosen = "best" if best is not None else "final"
    summary = {"seed": seed, "chosen": chosen, "epochs": epoch, "steps": step, "best": best,
               "selection": (f"epoch {best['epoch']} of {epoch}: best video-level AUC {best['val_video_auc']:.4f} on "
                             f"{len(data.held_out_labels)} held-out training videos" if best else
                             f"fixed schedule: the end of {epoch} epochs (no test video read)"),
               "history": history, "train_seconds": time.perf_counter() - started}
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    log.note(f"finished: {summary['selection']}")
    log.close()
    return summary


RESUME_FREE_KEYS = ("seeds", "device", "output_dir", "epochs")  # may change when a run is resumed (a longer schedule)


def features_fingerprint(settings: HeadSettings) -> dict:
    """What identifies the training features: the list file's size and time, and with a features
    directory its manifest's model digest and creation time (features extracted again change it)."""
    stat = Path(settings.train_list).stat()
    fingerprint = {"train_list_bytes": stat.st_size, "train_list_mtime": stat.st_mtime}
    if settings.features_dir is not None:
        manifest = read_features_dir(settings.features_dir).manifest
        fingerprint.update(weights_sha256=manifest.get("model", {}).get("weights_sha256"), created=manifest.get("created"))
    return fingerprint


def check_resumable(config_file: Path, config: dict) -> None:
    """A run directory resumed with other settings or other features would mix two heads: refused."""
    old = json.loads(config_file.read_text(encoding="utf-8"))
    changed = sorted(key for key in set(old) | set(config)
                     if key not in RESUME_FREE_KEYS and old.get(key) != config.get(key))
    if changed:
        raise HeadDataError(f"{config_file.parent}: trained with other settings or features ({', '.join(changed)} differ); "
                            f"use another --out, or --no-resume to train it again")


def train_heads(settings: HeadSettings, *, resume: bool = True, echo: Callable[[str], None] = print) -> list[dict]:
    """Every seed of `settings`, one after the other; run_config.json first."""
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps({"kind": "head", **settings.to_dict(), "features": features_fingerprint(settings)}))
    config_file = out / RUN_CONFIG_NAME
    if resume and config_file.is_file():
        check_resumable(config_file, config)
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    return [train_seed(settings, seed, resume=resume, echo=echo) for seed in settings.seeds]


def chosen_heads(run_dir: os.PathLike | str) -> list[Path]:
    """Each seed's chosen head of a run (best/ with held-out selection, else final/), in seed order."""
    run_dir = Path(run_dir)
    if (run_dir / HEAD_FILE).is_file():
        return [run_dir]
    chosen = []
    for seed_dir in sorted(run_dir.glob("seed-*"), key=lambda p: int(p.name.partition("-")[2])):
        summary = seed_dir / "summary.json"
        if summary.is_file():
            chosen.append(seed_dir / json.loads(summary.read_text())["chosen"])
    if not chosen:
        raise HeadDataError(f"{run_dir}: no finished seed (seed-N/summary.json): not a head run, or it has not finished "
                            f"(run the same train-head command again to resume)")
    return chosen
