"""Training metrics: one JSON object per logged step (metrics.jsonl) and TensorBoard event files."""

from __future__ import annotations

import json
import math
from pathlib import Path

from genie_jax.io_utils import atomic_write_text


class MetricsLog:
    """Appends metrics; on resume from ``start_step`` it first drops lines from steps after that checkpoint,
    so a killed-and-resumed run has one continuous curve."""

    def __init__(self, stage_dir: Path, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(stage_dir) / "metrics.jsonl"
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) is not None
                    and _step_of(line) <= start_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._file = open(self.path, "a")
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(Path(stage_dir) / "tensorboard"), purge_step=start_step or None)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, **clean}, sort_keys=True) + "\n")
        self._file.flush()
        for name, value in metrics.items():
            self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._tb.close()
            self._file = self._tb = None


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if _step_of(line) is not None]
