"""A head run's log files, beside each seed's checkpoints: trainer_log.txt (one line per epoch and
per logged step, for `tail -f` and `grep loss`), metrics.jsonl (the same at full precision) and
TensorBoard scalars (`head/KEY`)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from fgclip.run_dir import METRICS_NAME, TENSORBOARD_DIR, TEXT_LOG_NAME


class HeadLog:
    def __init__(self, seed_dir: Path, *, resume_step: int | None = None) -> None:
        seed_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = seed_dir / METRICS_NAME
        if resume_step is None or not self.metrics_path.is_file():
            self.metrics_path.write_text("")
        else:  # a resumed run redoes the steps after its checkpoint: their old lines go
            kept = [line for line in self.metrics_path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))
        self._text = open(seed_dir / TEXT_LOG_NAME, "a", encoding="utf-8", buffering=1)
        self._writer = SummaryWriter(str(seed_dir / TENSORBOARD_DIR),
                                     purge_step=None if resume_step is None else resume_step + 1)

    def note(self, message: str) -> None:
        self._text.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def record(self, values: dict) -> str:
        """One line: step, epoch and every number of `values` (losses, lr, validation AUC)."""
        line = " | ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                          for key, value in values.items())
        self._text.write(line + "\n")
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(values) + "\n")
        for key, value in values.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(f"head/{key}", value, values["step"])
        return line

    def close(self) -> None:
        self._text.close()
        self._writer.close()
