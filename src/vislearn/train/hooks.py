"""Per-step hooks: how a recipe acts between optimizer steps without touching the loop.

The engine calls every hook of ``Task.hooks`` once per OPTIMIZER step (never per micro-batch of a
gradient-accumulation cycle), after the optimizer and the evaluation EMA have stepped:

1. ``after_optimizer_step(module, step)`` with the unwrapped training module (not the DDP or
   compiled wrapper) and ``step`` = optimizer steps done (1 after the first): update an EMA teacher,
   a temperature, a DINO center, record activations;
2. after logging and any evaluation due at that step, ``should_stop(step, metrics)`` (not asked at
   the last step, which ends training anyway); ``True`` from
   any hook (on any process) ends training cleanly: final evaluation, checkpoint and export as at
   the normal end, and ``TrainResult.stopped_early``. ``metrics`` holds the step's training scalars
   (``"loss"``, ``"lr"``, ...) and, when an evaluation ran at this step, its results as
   ``"eval/<name>"``.

Subclass :class:`Hook` and override either method; both default to doing nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn


class Hook:
    """Base class: no-op ``after_optimizer_step`` and ``should_stop`` (never stops)."""

    def after_optimizer_step(self, module: nn.Module, step: int) -> None:
        return None

    def should_stop(self, step: int, metrics: dict[str, float]) -> bool:
        return False


def overrides_should_stop(hook: Hook) -> bool:
    """Whether ``hook`` can stop training (the engine gathers ``metrics`` only for such hooks)."""
    return type(hook).should_stop is not Hook.should_stop


class CallbackHook(Hook):
    """``fn(trainer, step)`` after each optimizer step: the ``Trainer(callbacks=[...])`` argument."""

    def __init__(self, fn: Callable[[Any, int], None], trainer: Any) -> None:
        self.fn, self.trainer = fn, trainer

    def after_optimizer_step(self, module: nn.Module, step: int) -> None:
        self.fn(self.trainer, step)
