"""Learning-rate schedules as pure functions of the step: resuming needs no scheduler state.

``lr(step) = base_lr × warmup(step) × decay(step)``:

* ``constant``;
* ``cosine``: cosine decay to ``min_lr_ratio × base_lr`` at ``total_steps`` (SWYCC: warm-up + cosine);
* ``staircase``: ``decay_rate ** (step // decay_every)``, e.g. Inception's 0.94 every 2 epochs
  (Inception-v3 Sec. 8) with ``decay_every`` = steps per 2 epochs;
* ``exponential``: the same without the staircase;
* ``linear``: linear decay to ``min_lr_ratio``.

Warm-up is linear from 0 over ``warmup_steps``.
"""

from __future__ import annotations

import math

from vislearn.errors import UserError

SCHEDULES = ("constant", "cosine", "staircase", "exponential", "linear")


def lr_factor(step: int, *, schedule: str = "constant", total_steps: int = 1, warmup_steps: int = 0,
              decay_every: int = 1, decay_rate: float = 1.0, min_lr_ratio: float = 0.0) -> float:
    """The multiplier on the base learning rate at ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        decay = 1.0
    elif schedule == "cosine":
        t = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
        decay = min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    elif schedule == "linear":
        t = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
        decay = 1 - (1 - min_lr_ratio) * t
    elif schedule == "staircase":
        decay = decay_rate ** (step // max(decay_every, 1))
    else:
        decay = decay_rate ** (step / max(decay_every, 1))
    return warm * decay
