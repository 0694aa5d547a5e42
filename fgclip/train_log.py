"""What a training run reports, and where: all written by rank 0 only.

* `trainer_log.txt`: one line per log step, made for `tail -f` and `grep loss`.
* `metrics.jsonl`: the same values at full precision, one JSON object per line (scripts, tests).
* `tensorboard/`: TensorBoard scalars (`tensorboard --logdir <output dir>`).

GPU utilisation comes from NVML (through torch) when available, memory from the allocator.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

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


def format_line(record: dict) -> str:
    """The trainer_log.txt line of one log step (fields separated by ' | ')."""
    parts = [
        f"step {record['step']}/{record['total_steps']}",
        f"epoch {record['epoch']:.2f}",
        f"loss {record['loss']:.4f}",
        f"global {record['loss_global']:.4f}",
        f"region {record['loss_region']:.4f}",
        f"hard {record['loss_hard']:.4f}",
        f"lr {record['lr']:.3e}",
        f"text_lr {record['text_lr']:.3e}",
        f"grad_norm {record['grad_norm']:.4f}",
        f"frames/s {record['frames_per_s']:.1f}",
        f"data_wait {100 * record['data_wait_share']:.1f}%",
    ]
    if "gpu_util_pct" in record:
        parts.append(f"gpu {record['gpu_util_pct']:.0f}%")
    if "gpu_mem_peak_gb" in record:
        parts.append(f"mem {record['gpu_mem_peak_gb']:.1f}/{record['gpu_mem_total_gb']:.1f}GB")
    if record.get("skipped_steps"):
        parts.append(f"skipped {record['skipped_steps']}")
    if record.get("nonfinite"):
        parts.append("NON-FINITE (step skipped)")
    parts.append(f"eta {format_duration(record['eta_s'])}")
    return " | ".join(parts)


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
        line = format_line(record)
        self._write(self._text, self.text_path, line + "\n")
        self._write(self._metrics, self.metrics_path, json.dumps(record) + "\n")
        if self._writer is not None:
            step = record["step"]
            for key in ("loss", "loss_global", "loss_region", "loss_hard", "grad_norm", "lr", "text_lr",
                        "frames_per_s", "data_wait_share", "gpu_util_pct", "gpu_mem_peak_gb", "skipped_steps"):
                if key in record and record[key] is not None and math.isfinite(record[key]):
                    self._writer.add_scalar(f"train/{key}", record[key], step)
            for key, value in record.get("temperatures", {}).items():
                self._writer.add_scalar(f"temperature/{key}", value, step)
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
