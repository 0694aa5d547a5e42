"""What a training run reports, and where: all written by rank 0 only.

* `trainer_log.txt`: one line per log step, made for `tail -f` and `grep loss`.
* `metrics.jsonl`: the same values at full precision, one JSON object per line (scripts, tests).
* `tensorboard/`: TensorBoard scalars (`tensorboard --logdir <output dir>`).

All three are written from one step record, whose keys `STEP_FIELDS` lists with their meaning.

GPU utilisation comes from NVML (through torch) when available, memory from the allocator.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from fgclip.run_dir import METRICS_NAME, TENSORBOARD_DIR, TEXT_LOG_NAME


def gpu_stats(device: torch.device) -> dict[str, float]:
    """Utilisation (%) and memory (GB) of the training GPU; {} on CPU.

    Peak memory is reset after each reading, so each log line shows the peak of its interval.
    """
    if device.type != "cuda":
        return {}
    stats = {
        "gpu_mem_peak_gb": torch.cuda.max_memory_allocated(device) / 1e9,
        "gpu_mem_reserved_gb": torch.cuda.memory_reserved(device) / 1e9,
        "gpu_mem_total_gb": torch.cuda.get_device_properties(device).total_memory / 1e9,
    }
    torch.cuda.reset_peak_memory_stats(device)
    try:
        stats["gpu_util_pct"] = float(torch.cuda.utilization(device))
    except Exception:  # noqa: BLE001 - NVML (pynvml) missing or not permitted: leave it out
        pass
    return stats


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@dataclass(frozen=True)
class StepField:
    """One value of the step record: its key in metrics.jsonl, what it means, how trainer_log.txt
    shows it (None: not in the line; the text may be None for a record that lacks it) and
    whether it is a TensorBoard scalar (`train/KEY`)."""

    key: str
    meaning: str
    text: Callable[[dict], str | None] | None = None
    scalar: bool = False
    optional: bool = False  # absent on CPU runs (the GPU statistics)


# The step record, in the order of the trainer_log.txt line: the one list the text log,
# metrics.jsonl and TensorBoard are written from.
STEP_FIELDS: tuple[StepField, ...] = (
    StepField("step", "optimizer steps done", lambda r: f"step {r['step']}/{r['total_steps']}"),
    StepField("total_steps", "optimizer steps of the whole run"),
    StepField("epoch", "epochs done, with the fraction of the current one", lambda r: f"epoch {r['epoch']:.2f}"),
    StepField("loss", "weighted sum of the three losses", lambda r: f"loss {r['loss']:.4f}", scalar=True),
    StepField("loss_global", "video-text loss", lambda r: f"global {r['loss_global']:.4f}", scalar=True),
    StepField("loss_region", "region-text loss", lambda r: f"region {r['loss_region']:.4f}", scalar=True),
    StepField("loss_hard", "hard-negative loss", lambda r: f"hard {r['loss_hard']:.4f}", scalar=True),
    StepField("lr", "vision learning rate", lambda r: f"lr {r['lr']:.3e}", scalar=True),
    StepField("text_lr", "text learning rate", lambda r: f"text_lr {r['text_lr']:.3e}", scalar=True),
    StepField("grad_norm", "gradient norm before clipping", lambda r: f"grad_norm {r['grad_norm']:.4f}", scalar=True),
    StepField("frames_per_s", "video frames trained per second, all ranks, since the last line",
              lambda r: f"frames/s {r['frames_per_s']:.1f}", scalar=True),
    StepField("data_wait_share", "share of the time since the last line spent waiting for the loader",
              lambda r: f"data_wait {100 * r['data_wait_share']:.1f}%", scalar=True),
    StepField("gpu_util_pct", "GPU utilisation (NVML)", lambda r: f"gpu {r['gpu_util_pct']:.0f}%", scalar=True,
              optional=True),
    StepField("gpu_mem_peak_gb", "peak allocated GPU memory since the last line",
              lambda r: f"mem {r['gpu_mem_peak_gb']:.1f}/{r['gpu_mem_total_gb']:.1f}GB", scalar=True, optional=True),
    StepField("gpu_mem_reserved_gb", "GPU memory the allocator holds", optional=True),
    StepField("gpu_mem_total_gb", "the GPU's memory", optional=True),
    StepField("skipped_steps", "steps skipped for a non-finite loss or gradient, in all",
              lambda r: f"skipped {r['skipped_steps']}" if r["skipped_steps"] else None, scalar=True),
    StepField("nonfinite", "this step was skipped", lambda r: "NON-FINITE (step skipped)" if r["nonfinite"] else None),
    StepField("eta_s", "seconds left at this session's mean step time", lambda r: f"eta {format_duration(r['eta_s'])}"),
    StepField("temperatures", "each loss's temperature by name (TensorBoard: temperature/NAME)"),
    StepField("logit_biases", "each loss's sigmoid bias by name, empty for InfoNCE (TensorBoard: logit_bias/NAME)",
              optional=True),
)
_STEP_KEYS = {field.key: field for field in STEP_FIELDS}


def step_record(values: dict) -> dict:
    """`values` as a step record: checked against STEP_FIELDS, in their order."""
    unknown = set(values) - set(_STEP_KEYS)
    missing = [f.key for f in STEP_FIELDS if not f.optional and f.key not in values]
    if unknown or missing:
        raise ValueError(f"step record: unknown keys {sorted(unknown)}, missing {missing} (see train_log.STEP_FIELDS)")
    return {f.key: values[f.key] for f in STEP_FIELDS if f.key in values}


def format_line(record: dict) -> str:
    """The trainer_log.txt line of one log step (fields separated by ' | ')."""
    parts = (f.text(record) for f in STEP_FIELDS if f.text is not None and f.key in record)
    return " | ".join(part for part in parts if part is not None)


class TrainLog:
    """The run's log files. `resume_step` drops metrics of steps a resumed run will redo."""

    def __init__(self, output_dir: Path, *, resume_step: int | None = None, tensorboard: bool = True):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.text_path = self.output_dir / TEXT_LOG_NAME
        self.metrics_path = self.output_dir / METRICS_NAME
        if resume_step is None:
            self.metrics_path.write_text("")
        else:
            self._truncate_metrics_after(resume_step)
        self._text = open(self.text_path, "a", encoding="utf-8", buffering=1)
        self._metrics = open(self.metrics_path, "a", encoding="utf-8", buffering=1)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                log_dir=str(self.output_dir / TENSORBOARD_DIR),
                purge_step=None if resume_step is None else resume_step + 1,
            )

    def _truncate_metrics_after(self, step: int) -> None:
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short when the run was killed or the disk filled up
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        self.metrics_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def note(self, message: str) -> None:
        """A comment line in trainer_log.txt (start, resume, checkpoints, stop)."""
        self._write(self._text, self.text_path, f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def step(self, record: dict) -> str:
        """Write one step record (keys: STEP_FIELDS) to all three; returns its text line."""
        record = step_record(record)
        line = format_line(record)
        self._write(self._text, self.text_path, line + "\n")
        self._write(self._metrics, self.metrics_path, json.dumps(record) + "\n")
        if self._writer is not None:
            step = record["step"]
            for field in STEP_FIELDS:
                value = record.get(field.key)
                if field.scalar and value is not None and math.isfinite(value):
                    self._writer.add_scalar(f"train/{field.key}", value, step)
            for key, value in record["temperatures"].items():
                self._writer.add_scalar(f"temperature/{key}", value, step)
            for key, value in record.get("logit_biases", {}).items():
                self._writer.add_scalar(f"logit_bias/{key}", value, step)
        return line

    @staticmethod
    def _write(handle, path: Path, text: str) -> None:
        try:
            handle.write(text)
        except OSError as err:  # the message of a failed write names no file: add it
            raise OSError(err.errno, err.strerror, str(path)) from err

    def close(self) -> None:
        for handle in (self._text, self._metrics):
            try:
                handle.close()
            except OSError:
                pass  # a disk that filled up: the lines already written stay
        if self._writer is not None:
            self._writer.close()
