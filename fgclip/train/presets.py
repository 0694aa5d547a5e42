"""Training presets: the one place their values live.

`debug` and `full` are the two configurations of the group's training handbook, `demo` is
sized so the embedded default's tiny model learns on 2 CPU cores in a few minutes, and
`demo-siglip2` is the same for FG-CLIP 2's family (`make demo MODEL_FAMILY=siglip2`). Every field
can be overridden on the command line (`fgclip-vad train --preset full --num-frames 128`) and
through the Makefile (`make train-full NUM_FRAMES=128 BATCH_SIZE=1 GRAD_ACCUM=16`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from fgclip import run_dir
from pipeline import embedded


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved as run_config.json in the output directory."""

    preset: str
    # data and model
    shards: str  # directory of uniformly sampled training shards (stage 1 output)
    model: str  # model directory to start from (HF CLIP dir or one of our checkpoints)
    output_dir: str
    max_records: int | None  # first N records of the shards (None = all)
    num_frames: int  # frames per video (a uniform subset when the shards store more)
    # batch
    batch_size: int  # micro-batch per device (with auto_batch: times grad_accum gives the contrastive batch kept)
    grad_accum: int  # micro-batches per optimizer step; the loss sees all of them (gradient caching)
    epochs: int
    # optimisation
    lr: float  # vision tower, temporal module, temperatures
    text_lr: float  # text tower (and the long position table)
    scale_lr: float | None = None  # loss temperatures and sigmoid biases; None: with their tower (lr)
    weight_decay: float = 0.01  # not applied to biases, norms, embeddings tables, temperatures
    warmup_ratio: float = 0.05  # share of all steps spent warming up linearly, then cosine to 0
    max_grad_norm: float = 1.0
    bf16: bool | None = None  # None: on when training on a GPU
    gradient_checkpointing: bool | None = None  # None: chosen with auto_batch, else on
    auto_batch: bool | None = None  # pick micro-batch and checkpointing for the GPU's memory (fgclip.train.step_fit); None: on with a GPU
    compile: bool | None = None  # torch.compile the transformer blocks; None: on when training on a GPU (1.3x faster steps on an H100)
    global_weight: float = 1.0
    region_weight: float = 0.1
    hard_weight: float = 0.5
    # loader
    workers: int = 4
    prefetch: int = 3
    cpu_threads: int | None = None  # CPU training only: torch threads (None: cores left beside the workers)
    augment: bool = False
    frame_selection: str = "uniform"  # uniform subset of the stored frames, or a random clip each epoch (loader_worker)
    skip_damaged: bool = False
    # run control
    seed: int = 42
    save_every: int = 100  # optimizer steps between checkpoints
    keep_last: int = 3
    log_every: int = 1  # optimizer steps between trainer_log.txt lines
    max_nonfinite: int = 5  # consecutive skipped (non-finite) steps before the run stops
    # checkpoint selection without the test set (`fgclip.train.validation`)
    val_fraction: float = 0.0  # share of the training videos held out (0 = no validation, no best/)
    val_every: int = 0  # optimizer steps between validations (0 = at every checkpoint)
    val_annotations: str | None = None  # temporal labels of training videos: frame AUC instead of retrieval
    val_metric: str = "auto"  # one of VAL_METRICS; auto: frame AUC with val_annotations, else retrieval
    extra: dict = field(default_factory=dict)  # free-form notes (e.g. the command line)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def effective_batch_per_rank(self) -> int:
        return self.batch_size * self.grad_accum


def _debug() -> TrainConfig:
    return TrainConfig(
        preset="debug",
        shards=str(embedded.train_shard_dir(64)),
        model=str(embedded.MODEL_DIR),
        output_dir=run_dir.DEBUG_RUN_DIR,
        max_records=10,
        num_frames=64,
        batch_size=1,
        grad_accum=4,
        epochs=2,
        lr=1e-5,
        text_lr=5e-6,
        save_every=5,
        keep_last=3,
    )


def _full() -> TrainConfig:
    return TrainConfig(
        preset="full",
        shards=str(embedded.train_shard_dir(256)),
        model=str(embedded.MODEL_DIR),
        output_dir="checkpoints/fgclip_ucf_full",
        max_records=None,
        num_frames=256,
        batch_size=2,
        grad_accum=8,
        epochs=10,
        lr=1e-5,
        text_lr=5e-6,
        save_every=100,
        keep_last=3,
    )


def _demo() -> TrainConfig:
    # The tiny model starts from random weights, so it needs a far higher learning rate than
    # CLIP fine-tuning, and few frames per video keep a step cheap on 2 CPU cores.
    # Augmentation (random crops and flips) keeps it from memorising the 56 training clips;
    # 8 frames per clip suffice to see each clip's event (values tuned with the evaluation's AUC).
    return TrainConfig(
        preset="demo",
        shards=str(embedded.train_shard_dir(64)),
        model=str(embedded.MODEL_DIR),
        output_dir="checkpoints/fgclip_demo",
        max_records=None,
        num_frames=8,
        batch_size=4,
        grad_accum=4,
        epochs=40,
        lr=1e-3,
        text_lr=1e-3,
        weight_decay=0.05,
        warmup_ratio=0.1,
        gradient_checkpointing=False,
        augment=True,
        workers=1,
        save_every=50,
        keep_last=1,
        log_every=1,
    )


def _demo_siglip2() -> TrainConfig:
    # The demo for FG-CLIP 2's family (`make demo MODEL_FAMILY=siglip2`). The sigmoid loss's
    # scale and bias start far from where a 16-sample window needs them, and at lr 1e-3 they
    # move ~1e-3 per step, so they get a learning rate of their own.
    return dataclasses.replace(_demo(), preset="demo-siglip2", model=str(embedded.model_dir("tiny-siglip2")),
                               output_dir="checkpoints/fgclip_demo_siglip2", scale_lr=1e-2)


# What validation can score (fgclip.train.validation says how each is computed).
VAL_METRICS = ("auto", "retrieval", "video_label_auc", "frame_auc")
# How a record's training frames are chosen from the stored ones (`fgclip.train.loader_worker`).
FRAME_SELECTIONS = ("uniform", "random-clip")

PRESETS = {"debug": _debug, "full": _full, "demo": _demo, "demo-siglip2": _demo_siglip2}


def preset_config(name: str) -> TrainConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def preset_defaults(name: str, none_means: str = "auto") -> str:
    """The presets' values of one setting, for --help: "[debug 64, full 256, demo 8]", or "[42]"
    when they agree. None reads `none_means`, booleans on/off."""

    def shown(value) -> str:
        if value is None:
            return none_means
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    values = {preset: shown(getattr(factory(), name)) for preset, factory in PRESETS.items()}
    if len(set(values.values())) == 1:
        return f"[{next(iter(values.values()))}]"
    return "[" + ", ".join(f"{preset} {value}" for preset, value in values.items()) + "]"


def preset_summary(name: str) -> str:
    """One preset in a few words, for --help: "debug: 10 videos, 64 frames, 2 epochs"."""
    config = preset_config(name)
    videos = "all videos" if config.max_records is None else f"{config.max_records} videos"
    return f"{name}: {videos}, {config.num_frames} frames, {config.epochs} epochs"


def resolve_config(preset: str, overrides: dict) -> TrainConfig:
    """The preset with every non-None override applied (unknown keys are an error)."""
    config = preset_config(preset)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"unknown training setting {key!r}")
        if value is not None:
            setattr(config, key, value)
    check_config(config)
    return config


def check_config(config: TrainConfig) -> None:
    """Reject values that cannot work, with the setting named."""
    positive = ("num_frames", "batch_size", "grad_accum", "epochs", "save_every", "log_every", "max_nonfinite", "prefetch")
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.workers < 0 or config.keep_last < 0:
        raise ValueError("workers and keep_last must be >= 0")
    if config.cpu_threads is not None and config.cpu_threads < 1:
        raise ValueError(f"cpu_threads must be >= 1, got {config.cpu_threads}")
    if config.max_records is not None and config.max_records < 1:
        raise ValueError(f"max_records must be >= 1, got {config.max_records}")
    if config.scale_lr is not None and config.scale_lr < 0:
        raise ValueError(f"scale_lr must be at least 0 or unset, not {config.scale_lr}")
    if config.lr <= 0 or config.text_lr < 0:
        raise ValueError(f"learning rates must be positive (lr {config.lr}, text_lr {config.text_lr})")
    if not 0 <= config.warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {config.warmup_ratio}")
    if config.max_grad_norm <= 0:
        raise ValueError(f"max_grad_norm must be > 0, got {config.max_grad_norm}")
    if config.frame_selection not in FRAME_SELECTIONS:
        raise ValueError(f"frame_selection must be one of {', '.join(FRAME_SELECTIONS)}, not {config.frame_selection!r}")
    if config.val_metric not in VAL_METRICS:
        raise ValueError(f"val_metric must be one of {', '.join(VAL_METRICS)}, not {config.val_metric!r}")
    if config.val_metric == "frame_auc" and not config.val_annotations:
        raise ValueError("val_metric frame_auc needs val_annotations (--val-annotations FILE: temporal labels "
                         "of the training videos)")
    if not 0 <= config.val_fraction < 1 or config.val_every < 0:
        raise ValueError(f"val_fraction must be in [0, 1) and val_every >= 0, got {config.val_fraction}, {config.val_every}")


def resolve_path(path: str) -> Path:
    """Relative paths are relative to the working directory (the repo root under make)."""
    return Path(os.path.expanduser(path))
