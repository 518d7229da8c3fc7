"""``metrics.jsonl``: one strict-JSON object per logged step, and the sanitising that keeps it strict.

Python's ``json`` writes ``NaN``/``Infinity`` for non-finite floats, which no strict JSON reader
accepts; :func:`json_safe` turns them into ``null`` (the record's ``nonfinite`` list, where the
engine writes one, names the terms that were not finite). On resume the file is rewritten from the
checkpoint's history, so lines logged after that checkpoint by a killed run are neither kept
twice nor left torn.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vislearn.io import atomic_write_bytes

__all__ = ["MetricsWriter", "dumps_strict", "json_safe"]


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (nested in dicts, lists, tuples) replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kw: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(obj)`` that cannot emit NaN/Infinity."""
    return json.dumps(json_safe(obj), allow_nan=False, default=str, **kw)


class MetricsWriter:
    """Appends metrics to ``metrics.jsonl`` (and TensorBoard when installed) on the main process."""

    def __init__(self, out_dir: Path | None, enabled: bool) -> None:
        self.path = out_dir / "metrics.jsonl" if (out_dir and enabled) else None
        self.tb = None
        if self.path is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the file by ``records`` (a resumed run's history up to its checkpoint)."""
        if self.path is not None:
            atomic_write_bytes(self.path, "".join(dumps_strict(r) + "\n" for r in records).encode())

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(dumps_strict(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{record.get('split', 'train')}/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def progress_line(record: dict[str, Any], keys: list[str], total_steps: int) -> str:
    """The line a run without a terminal prints to stderr every ``log_every`` steps."""
    return (f"step {record['step']}/{total_steps} " + " ".join(f"{k} {record[k]:.4g}" for k in keys)
            + f" ({record['steps_per_s']:.2f} steps/s)")

