"""The training loop of `fgclip-vad train`.

One optimizer step = one window of `grad_accum` micro-batches per rank. The contrastive loss
sees every sample of the window on every rank as negatives (`grad_cached_window`), the ranks'
gradients are summed (`distributed.all_reduce_gradients`), clipped, and AdamW steps with
separate vision and text learning rates on a warmup + cosine schedule.

A step whose loss or gradient norm is not finite is skipped (no update) and counted; after
`max_nonfinite` of them in a row the run stops with advice. Checkpoints are written every
`save_every` steps (atomically, last `keep_last` kept) and at the end, with everything needed
to continue exactly (`--resume auto`). With `val_fraction`, held-out training videos are scored
every `val_every` steps (`fgclip.train.validation`) and the best model so far is kept in `best/`.
SIGINT/SIGTERM end the current step, write a checkpoint and stop, so `kill` on a background
run loses nothing.

Only rank 0 writes files. The host waits for the GPU once per optimizer step (to read the
losses and the gradient norm that decide whether the step is kept), never per micro-batch.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import signal
import time
import dataclasses
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fgclip import distributed
from fgclip.train.batch import MicroBatch, window_frames
from fgclip.train.checkpoint import (
    capture_rng_state,
    load_trainer_state,
    non_finite_tensors,
    optimizer_tensors,
    restore_rng_state,
    save_checkpoint,
    write_model_dir,
)
from fgclip.train.grad_cache import grad_cached_window
from fgclip.models.families import load_model_and_tokenizer
from fgclip.train.loader import ShardLoader, read_training_metas
from fgclip.train.losses import LossWeights
from fgclip.train.presets import TrainConfig
from fgclip.run_dir import (
    BEST_DIR_NAME,
    FINAL_DIR_NAME,
    checkpoint_dir,
    read_run_config,
    read_selection,
    resolve_resume,
    write_run_config,
)
from fgclip.train.step_fit import choose_step_fit
from fgclip.train.log import TrainLog, gpu_stats
from fgclip.train.validation import ValidationError, ValidationSet
from pipeline.run_lock import RunLock, RunLockError

log = logging.getLogger(__name__)

STATE_FORMAT_VERSION = 1

# Settings that fix which samples form which step; resuming with other values cannot continue
# the same run exactly, so it is refused.
_RESUME_FIXED = ("shards", "max_records", "num_frames", "batch_size", "grad_accum", "epochs", "seed", "augment",
                 "val_fraction")

# Parameters trained at the text learning rate (CLIP family, then FG-CLIP 2 family names).
_TEXT_PREFIXES = ("clip.text_model.", "clip.text_projection.", "long_positions.", "long_text_projection.",
                  "text_model.", "longtext_head.", "boxtext_head.")
# Parameters without weight decay besides biases and norms (ndim < 2): lookup tables, the
# temporal pooling query, SigLIP's pooling probes, and the temperatures and biases.
_NO_DECAY_NAMES = ("position_embedding", "long_positions.", "token_embedding", "class_embedding", "position_table",
                   "temporal.query", "probe", "logit_scale", "logit_bias", "term_scales.", "term_biases.")
# The loss terms' temperatures and sigmoid biases: scalars that may need a learning rate of their
# own (TrainConfig.scale_lr); at a tower's rate a scalar moves ~lr per step, too slow for a short run.
_SCALE_NAMES = ("logit_scale", "logit_bias", "term_scales.", "term_biases.")


class TrainingError(RuntimeError):
    """A run that cannot go on (diverged, incompatible resume, ...); the message says what to do."""


@dataclass
class RunState:
    """How far a run is in optimizer steps; where it is in the data is `ShardLoader.state_dict()`.

    Saved in every checkpoint's trainer state (beside the loader's position) and loaded again
    on resume, so a resumed run counts on exactly where the stopped one left off.
    """

    step: int = 0  # optimizer steps done (applied or skipped)
    skipped_steps: int = 0  # steps not applied: their loss or gradient norm was not finite
    consecutive_nonfinite: int = 0  # skipped steps in a row up to now

    def count_step(self, finite: bool) -> None:
        self.step += 1
        if finite:
            self.consecutive_nonfinite = 0
        else:
            self.skipped_steps += 1
            self.consecutive_nonfinite += 1

    def state_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name in self.state_dict():
            setattr(self, name, int(state[name]))


@dataclass
class StepOutcome:
    losses: dict[str, float]
    grad_norm: float
    finite: bool
    frames: int


def parameter_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups: vision/text learning rate x with/without weight decay, and the loss scales.

    The scales and biases form a group of their own only when `config.scale_lr` is set, so
    optimizer states of runs without it keep their groups.
    """
    groups: dict[tuple[str, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if config.scale_lr is not None and any(token in name for token in _SCALE_NAMES):
            tower = "scale"
        else:
            tower = "text" if name.startswith(_TEXT_PREFIXES) else "vision"
        decay = param.ndim >= 2 and not any(token in name for token in _NO_DECAY_NAMES)
        groups.setdefault((tower, decay), []).append(param)
    lr_of = {"vision": config.lr, "text": config.text_lr, "scale": config.scale_lr}
    out = []
    for (tower, decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": lr_of[tower],
            "weight_decay": config.weight_decay if decay else 0.0,
            "name": f"{tower}{'' if decay else '_no_decay'}",
        })
    return out


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR factor for optimizer step s (0-based): linear warmup to 1, then cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def cpu_threads(config: TrainConfig) -> int:
    """Torch threads for CPU training: by default the cores this process may use minus one per
    loader worker (and per other local rank). OpenMP threads that share a core with another busy
    process wait for each other at every barrier; on a loaded 2-core machine two threads ran
    20x slower than one."""
    if config.cpu_threads is not None:
        return config.cpu_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // processes - config.workers)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Build everything a run needs from a `TrainConfig`, then `run()` it.

    `resume`: None (start fresh), "auto" (newest checkpoint of the output directory, if any) or
    a checkpoint path. `stop_after_step` ends the run early at that step with a checkpoint (the
    schedule still spans all epochs), e.g. to split a long run into sessions.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: str | None = None,
        stop_after_step: int | None = None,
        dist_info: distributed.DistInfo | None = None,
        show_progress: bool = True,
    ):
        self.config = config
        self.dist = dist_info if dist_info is not None else distributed.init_from_env()
        self.device = self.dist.device
        self.is_main = self.dist.is_main
        self.output_dir = Path(config.output_dir)
        self.stop_after_step = stop_after_step
        self.show_progress = show_progress and self.is_main
        self._stop_signal: int | None = None
        # The output directory is this run's alone (rank 0 writes it): a second trainer pointed
        # there stops here, naming this one. Released when run() ends.
        self._lock: RunLock | None = None
        if self.is_main:
            try:
                self._lock = RunLock(self.output_dir, what="fgclip-vad train", hint="choose another --output-dir").acquire()
            except RunLockError as err:
                raise TrainingError(str(err)) from None
        try:
            self._build(config, resume)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give up the output directory (run() does this when it ends)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _build(self, config: TrainConfig, resume: str | None) -> None:
        seed_everything(config.seed)
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads(config))
        self.resume_from = resolve_resume(resume, self.output_dir)
        model_dir = self.resume_from if self.resume_from is not None else Path(config.model)
        self.model, self.tokenizer = load_model_and_tokenizer(model_dir)
        self.model.to(self.device)
        use_bf16 = config.bf16 if config.bf16 is not None else self.device.type == "cuda"
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if use_bf16 else None
        self._fit_step_to_memory(config)
        self.model.set_gradient_checkpointing(config.gradient_checkpointing)
        self.compiled = config.compile if config.compile is not None else self.device.type == "cuda"
        if self.compiled:
            self.model.compile_blocks()
        self.model.train()

        self.loss_weights = LossWeights(config.global_weight, config.region_weight, config.hard_weight)

        self.validation: ValidationSet | None = None
        if config.val_fraction > 0:
            metas, _ = read_training_metas(config.shards, config.max_records, skip_damaged=config.skip_damaged)
            try:
                self.validation = ValidationSet.hold_out(
                    metas, Path(config.shards), fraction=config.val_fraction, seed=config.seed,
                    num_frames=config.num_frames,
                    annotations=Path(config.val_annotations) if config.val_annotations else None,
                    metric=config.val_metric)
            except ValidationError as err:
                raise TrainingError(str(err)) from None
        self.loader = ShardLoader(
            config.shards,
            model=self.model,
            tokenizer=self.tokenizer,
            batch_size=config.batch_size,
            num_frames=config.num_frames,
            num_workers=config.workers,
            device=self.device,
            seed=config.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            augment=config.augment,
            frame_selection=config.frame_selection,
            prefetch=config.prefetch,
            drop_last=True,
            max_records=config.max_records,
            skip_damaged=config.skip_damaged,
            exclude_videos=self.validation.videos if self.validation is not None else frozenset(),
        )
        # An epoch's last window holds the micro-batches left (ShardLoader.windows).
        self.steps_per_epoch = -(-len(self.loader) // config.grad_accum)
        self.total_steps = self.steps_per_epoch * config.epochs
        warmup_steps = max(1, round(config.warmup_ratio * self.total_steps))

        # Fused on every device: it takes the skip of a non-finite step as a device flag
        # (`found_inf`, see optimizer_step), so the host need not wait for the gradients first.
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, config), betas=(0.9, 0.98), eps=1e-6, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(self.total_steps, warmup_steps))
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]

        self.state = RunState()
        self.start_model = str(config.model)
        if self.resume_from is not None:
            self._load_state(self.resume_from)
        self.log: TrainLog | None = None

    def _fit_step_to_memory(self, config: TrainConfig) -> None:
        """--batch-size auto (the default on a GPU): micro-batch and checkpointing for this card,
        the contrastive batch (batch_size x grad_accum) kept. A resumed run keeps its settings."""
        self.step_fit = None
        auto = config.auto_batch if config.auto_batch is not None else self.device.type == "cuda"
        if not auto or self.device.type != "cuda":
            if config.gradient_checkpointing is None:
                config.gradient_checkpointing = True
            return
        if self.resume_from is not None:
            saved = read_run_config(self.resume_from) or load_trainer_state(self.resume_from)["config"]
            config.batch_size, config.grad_accum = saved["batch_size"], saved["grad_accum"]
            config.gradient_checkpointing = bool(saved.get("gradient_checkpointing", True))
            return
        fit = choose_step_fit(self.model, contrastive_batch=config.batch_size * config.grad_accum,
                              num_frames=config.num_frames, frame_bytes=3 * self.model.image_size**2,
                              prefetch=config.prefetch, autocast=self.autocast, checkpointing=config.gradient_checkpointing)
        batch_size, checkpointing = fit.batch_size, fit.gradient_checkpointing
        if distributed.is_distributed():
            # One setting for all ranks: the smallest micro-batch, checkpointing if any rank needs it.
            values = torch.tensor([-batch_size, int(checkpointing)], device=self.device)
            torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
            batch_size, checkpointing = int(-values[0]), bool(values[1])
        contrastive = config.batch_size * config.grad_accum
        config.batch_size, config.grad_accum, config.gradient_checkpointing = batch_size, contrastive // batch_size, checkpointing
        self.step_fit = fit
        log.info("--batch-size auto: %s", fit.describe() if fit.batch_size == batch_size else
                 f"{batch_size} videos per micro-batch (the smallest of all ranks)")

    # --- resume -------------------------------------------------------------------------------

    def _load_state(self, path: Path) -> None:
        state = load_trainer_state(path)
        saved = state["config"]
        changed = [f"{key}: {saved.get(key)!r} -> {getattr(self.config, key)!r}"
                   for key in _RESUME_FIXED if saved.get(key) != getattr(self.config, key)]
        if state["world_size"] != self.dist.world_size:
            changed.append(f"processes: {state['world_size']} -> {self.dist.world_size}")
        if saved.get("frame_selection", "uniform") != self.config.frame_selection:  # runs before it existed: uniform
            changed.append(f"frame_selection: {saved.get('frame_selection', 'uniform')} -> {self.config.frame_selection}")
        if (saved.get("scale_lr") is None) != (self.config.scale_lr is None):  # the optimizer's groups differ
            changed.append(f"scale_lr: {saved.get('scale_lr')!r} -> {self.config.scale_lr!r}")
        if changed:
            raise TrainingError(
                f"{path}: cannot continue this run exactly with other settings ({'; '.join(changed)}). "
                f"Use the original settings, or start a new run in another --output-dir with --model {path}"
            )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as err:  # other parameters, e.g. a run of a version before FG-CLIP's long projection
            raise TrainingError(f"{path}: its optimizer state does not fit this model's parameters ({err}); it was "
                                f"written by another version: start a new run with --model {path}") from err
        for group in self.optimizer.param_groups:  # states saved by CPU runs before fused AdamW everywhere
            group.update(fused=True, foreach=None)
        self.scheduler.load_state_dict(state["scheduler"])
        self.state.load_state_dict(state)
        self.loader.load_state_dict(state)
        self.start_model = saved.get("model", self.start_model)
        rng_states = state["rng"]
        restore_rng_state(rng_states[self.dist.rank] if self.dist.rank < len(rng_states) else rng_states[0])

    @property
    def step(self) -> int:
        """Optimizer steps done."""
        return self.state.step

    def _trainer_state(self) -> dict:
        rng = capture_rng_state()
        if distributed.is_distributed():
            gathered: list = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng_states = gathered
        else:
            rng_states = [rng]
        return {
            "format_version": STATE_FORMAT_VERSION,
            **self.state.state_dict(),  # step, skipped_steps, consecutive_nonfinite
            **self.loader.state_dict(),  # epoch, batch_in_epoch
            "world_size": self.dist.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states,
            "config": self.run_config(),
        }

    def run_config(self) -> dict:
        """The resolved configuration as saved (run_config.json, also in checkpoints): `model` is the model
        the run started from (evaluation's baseline), also after resuming."""
        values = self.config.to_dict()
        values["model"] = self.start_model
        values["world_size"] = self.dist.world_size
        values["effective_batch"] = self.config.batch_size * self.config.grad_accum * self.dist.world_size
        values["total_steps"] = self.total_steps
        values["steps_per_epoch"] = self.steps_per_epoch
        values["records"] = len(self.loader.metas)
        return values

    # --- the loop -----------------------------------------------------------------------------

    def run(self, *, handle_signals: bool = False) -> dict:
        """Train to the end (or `stop_after_step`, or a signal). Returns a summary dict."""
        if self.step >= self.total_steps:
            self.loader.close()
            self.release()
            return self._summary("already complete")
        previous_handlers = self._install_signal_handlers() if handle_signals else {}
        progress = None
        try:
            if self.is_main:
                self._open_log()
                progress = self._progress_bar()
            reason = self._loop(progress)
            return self._summary(reason)
        finally:
            if progress is not None:
                progress.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            self.loader.close()
            if self.log is not None:
                self.log.close()
                self.log = None
            self.release()

    def _loop(self, progress) -> str:
        config = self.config
        throughput = _Throughput(self.loader, self.step)
        with closing(self.loader.windows(config.grad_accum)) as windows:
            for window in windows:
                outcome = self.optimizer_step(window)
                self.state.count_step(outcome.finite)
                throughput.add(outcome.frames)
                last = self.step == self.total_steps
                if self.step % config.log_every == 0 or not outcome.finite or last:
                    self._log_step(outcome, *throughput.since_last(self.step))
                if not outcome.finite:
                    self._warn_nonfinite()  # raises after max_nonfinite in a row
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{outcome.losses.get('total', float('nan')):.3f}", refresh=False)
                if self.validation is not None and (self.step % (config.val_every or config.save_every) == 0 or last):
                    self._validate()
                stop = self._stop_reason()
                if self.step % config.save_every == 0 or stop or last:
                    self._save_checkpoint()
                if stop:
                    return stop
                if last:
                    break
        self._save_final()
        return "complete"

    def optimizer_step(self, window: list[MicroBatch]) -> StepOutcome:
        losses = grad_cached_window(self.model, window, self.loss_weights, autocast=self.autocast)
        distributed.all_reduce_gradients(self.model)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm, foreach=True)
        # A non-finite loss or gradient skips the update: fused AdamW reads the flag on the device
        # (and leaves parameters, moments and step counts as they were), so the whole step is
        # queued before the host reads any number of it.
        finite = torch.isfinite(torch.stack([grad_norm.float(), *(v.float() for v in losses.values())])).all()
        self.optimizer.found_inf = (~finite).float()
        self.optimizer.step()
        # The schedule follows the data (one entry per window), skipped or not.
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutcome(losses={name: float(value) for name, value in losses.items()}, grad_norm=float(grad_norm),
                           finite=bool(finite), frames=window_frames(window, self.dist.world_size))

    def _warn_nonfinite(self) -> None:
        state = self.state
        message = (
            f"step {state.step}: non-finite loss or gradient, step skipped "
            f"({state.consecutive_nonfinite} in a row, {state.skipped_steps} in all)"
        )
        log.warning(message)
        if self.log is not None:
            self.log.note(message)
        if state.consecutive_nonfinite >= self.config.max_nonfinite:
            raise TrainingError(
                f"training diverged: {state.consecutive_nonfinite} steps in a row up to step {self.step} had a "
                f"non-finite loss or gradient. Try a lower learning rate (--lr, e.g. 5e-6) and text learning "
                f"rate (--text-lr, e.g. 2e-6), a lower --max-grad-norm, fp32 instead of bf16 (--no-bf16), and "
                f"check the data; then resume from the last checkpoint with --resume auto"
            )

    def _stop_reason(self) -> str | None:
        local = 0
        if self._stop_signal is not None:
            local = 1
        elif self.stop_after_step is not None and self.step >= self.stop_after_step:
            local = 1
        if distributed.is_distributed():
            # A signal may reach one rank only; all ranks must stop at the same step.
            flag = torch.tensor([local], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            local = int(flag.item())
        if not local:
            return None
        if self._stop_signal is not None:
            return f"stopped by signal {signal.Signals(self._stop_signal).name}"
        return f"stopped after step {self.step} as asked"

    # --- files --------------------------------------------------------------------------------

    def _open_log(self) -> None:
        resuming = self.resume_from is not None
        self.log = TrainLog(self.output_dir, resume_step=self.step if resuming else None)
        write_run_config(self.output_dir, self.run_config())
        if resuming:
            self.log.note(f"resumed from {self.resume_from} at step {self.step}/{self.total_steps}")
        else:
            self.log.note(
                f"start: preset {self.config.preset}, {len(self.loader.metas)} records, {self.total_steps} steps "
                f"({self.steps_per_epoch} per epoch), effective batch {self.run_config()['effective_batch']}, "
                f"model {self.config.model}, device {self.device}, {self.dist.world_size} process(es)"
            )
        if self.validation is not None:
            if not resuming:  # a fresh run competes with itself only
                shutil.rmtree(self.output_dir / BEST_DIR_NAME, ignore_errors=True)
            self.log.note(f"validation: {self.validation.describe()}; best model kept in {BEST_DIR_NAME}/")

    def _log_step(self, outcome: StepOutcome, frames_per_s: float, wait_share: float, step_time_s: float) -> None:
        if not self.is_main or self.log is None:
            return
        lrs = {group["name"]: group["lr"] for group in self.optimizer.param_groups}
        losses = outcome.losses
        record = {
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.loader.epochs_done(),
            "loss": losses.get("total", float("nan")),
            "loss_global": losses.get("global", float("nan")),
            "loss_region": losses.get("region", float("nan")),
            "loss_hard": losses.get("hard", float("nan")),
            "lr": lrs.get("vision", lrs.get("vision_no_decay", 0.0)),
            "text_lr": lrs.get("text", lrs.get("text_no_decay", 0.0)),
            "grad_norm": outcome.grad_norm,
            "frames_per_s": frames_per_s,
            "data_wait_share": wait_share,
            "skipped_steps": self.state.skipped_steps,
            "nonfinite": not outcome.finite,
            "eta_s": step_time_s * (self.total_steps - self.step),
            "temperatures": {name: float(value.detach()) for name, value in self.model.temperatures().items()},
            "logit_biases": {name: float(value.detach()) for name, value in self.model.logit_biases().items()},
        }
        record.update(gpu_stats(self.device))
        self.log.step(record)

    def _check_finite_model(self) -> None:
        bad = non_finite_tensors(list(self.model.named_parameters()) + list(optimizer_tensors(self.optimizer)))
        if bad:
            raise TrainingError(
                f"step {self.step}: refusing to save a checkpoint with non-finite values in {bad[:5]}; the run "
                f"diverged. Resume from the last checkpoint (--resume auto) with a lower --lr / --text-lr"
            )

    def _save_checkpoint(self) -> None:
        state = self._trainer_state()  # every rank takes part (RNG states are gathered)
        if not self.is_main:
            return
        self._check_finite_model()
        path = save_checkpoint(self.output_dir, self.step, model=self.model, state=state,
                               config=self.run_config(), keep_last=self.config.keep_last)
        if self.log is not None:
            self.log.note(f"checkpoint {path}")

    def _validate(self) -> None:
        """Score the held-out videos; keep the model in best/ when it scores at least the best so far
        (ties go to the later step: it has trained longer)."""
        if not self.is_main:
            return
        value = self.validation.score(self.model, self.tokenizer, self.device, self.autocast)
        best = read_selection(self.output_dir)
        best_value = best["value"] if best else None
        shown = "n/a" if value is None else f"{value:.4f}"
        if value is not None and (best_value is None or value >= best_value):
            self._check_finite_model()
            selection = {"step": self.step, "total_steps": self.total_steps, "metric": self.validation.metric,
                         "value": value, "validation": self.validation.describe(),
                         "videos": sorted(self.validation.videos)}
            path = write_model_dir(self.output_dir / BEST_DIR_NAME, self.model, {**self.run_config(), "selection": selection})
            message = f"validation at step {self.step}: {self.validation.metric} {shown}, best so far: {path}"
        else:
            message = (f"validation at step {self.step}: {self.validation.metric} {shown} "
                       f"(best {best_value:.4f} at step {best['step']})")
        if self.log is not None:
            self.log.note(message)

    def _save_final(self) -> None:
        if not self.is_main:
            return
        self._check_finite_model()
        path = write_model_dir(self.output_dir / FINAL_DIR_NAME, self.model, self.run_config())
        if self.log is not None:
            self.log.note(f"final model {path} ({self.state.skipped_steps} skipped steps)")

    # --- run control --------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict:
        def request_stop(signum, _frame):
            if self._stop_signal is not None:
                raise KeyboardInterrupt  # a second signal: stop now, without a checkpoint
            self._stop_signal = signum
            log.warning("signal %s: finishing the current step, then writing a checkpoint", signal.Signals(signum).name)

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
        return previous

    def _progress_bar(self):
        if not self.show_progress:
            return None
        from tqdm import tqdm

        return tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True, mininterval=2.0)

    def _summary(self, reason: str) -> dict:
        return {
            "reason": reason,
            "step": self.step,
            "total_steps": self.total_steps,
            "skipped_steps": self.state.skipped_steps,
            "output_dir": str(self.output_dir),
            "last_checkpoint": str(checkpoint_dir(self.output_dir, self.step)),
            "final": str(self.output_dir / FINAL_DIR_NAME) if reason == "complete" else None,
            "signal": self._stop_signal,
        }


class _Throughput:
    """Frames/s and the share of time spent waiting for data since the last log line, and the
    mean step time since this session started (for the ETA)."""

    def __init__(self, loader: ShardLoader, step: int):
        self.loader = loader
        self.first_step = step
        self.session_start = self.last_time = time.perf_counter()
        self.last_wait = loader.data_wait_s
        self.frames = 0

    def add(self, frames: int) -> None:
        self.frames += frames

    def since_last(self, step: int) -> tuple[float, float, float]:
        """(frames/s, data-wait share) since the last call, and seconds per step of the session."""
        now, waited = time.perf_counter(), self.loader.data_wait_s
        elapsed = now - self.last_time
        measured = (self.frames / elapsed, (waited - self.last_wait) / elapsed,
                    (now - self.session_start) / (step - self.first_step))
        self.last_time, self.last_wait, self.frames = now, waited, 0
        return measured
