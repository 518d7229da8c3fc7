"""Training: the one engine, hooks, the EMA, optimizers, schedules, checkpoints and distributed helpers."""

from vislearn.train.ema import ModelEMA
from vislearn.train.engine import (
    NonFiniteLossError,
    Task,
    TrainConfig,
    Trainer,
    TrainResult,
    autocast_context,
    move_to,
    seed_everything,
)
from vislearn.train.hooks import Hook

__all__ = ["Hook", "ModelEMA", "NonFiniteLossError", "Task", "TrainConfig", "Trainer", "TrainResult",
           "autocast_context", "move_to", "seed_everything"]
