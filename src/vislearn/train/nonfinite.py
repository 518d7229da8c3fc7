"""What the engine does with a step whose loss (or gradient norm) is NaN or infinite.

The engine checks every scalar the training module returns (and the clipped gradient norm, except
under fp16 where the GradScaler skips overflowing steps itself) before the update; the processes
agree on the answer, so all of them skip or stop together. Such a step is never applied: no
optimizer step, no EMA or hook update, nothing logged as a mean; the data it drew is consumed and
the step counts. While fewer than ``skip_nonfinite`` steps were skipped it is skipped with a line on
stderr and a ``"split": "skipped"`` record (non-finite values written as ``null``); otherwise the
run stops with :class:`NonFiniteLossError`, one line naming the step and the loss terms. No
checkpoint is written then: the last one (written before, from finite weights) is what
``--resume`` continues from, with ``--set skip_nonfinite=N`` to step over the bad batch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vislearn.errors import UserError
from vislearn.train.checkpoint import latest_checkpoint
from vislearn.train.run_dir import say

__all__ = ["NonFiniteLossError", "skip_or_stop"]


class NonFiniteLossError(UserError, FloatingPointError):
    """A step's loss (or gradient norm) was NaN/inf and ``skip_nonfinite`` steps were already skipped."""


def skip_or_stop(out: dict[str, torch.Tensor], step: int, skipped: int, allowed: int,
                 out_dir: Path | None, announce: bool = True) -> dict[str, Any]:
    """The record of skipped step ``step`` (1-based), or :class:`NonFiniteLossError` when ``skipped >= allowed``."""
    terms = {k: float(v) for k, v in sorted(out.items(), key=lambda kv: (kv[0] != "loss", kv[0])) if k != "lr"}
    shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
    if skipped >= allowed:
        last = latest_checkpoint(out_dir) if out_dir is not None else None
        kept = f"the last checkpoint, {last}, is kept" if last is not None else "no checkpoint was written"
        raise NonFiniteLossError(
            f"non-finite loss at step {step} ({shown}); training stopped, {kept}. Lower lr, set clip_grad, or "
            f"continue with --resume --set skip_nonfinite=N to skip up to N such steps"
            + (f" (skipped so far: {skipped})" if skipped else ""))
    if announce:
        say(f"non-finite loss at step {step} ({shown}); update skipped ({skipped + 1} of "
            f"skip_nonfinite={allowed})")
    return {"step": step, "split": "skipped", **terms,
            "nonfinite": sorted(k for k, v in terms.items() if not math.isfinite(v))}
