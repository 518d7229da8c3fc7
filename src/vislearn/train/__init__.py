"""Training: the one engine, optimizers, schedules, checkpoints and distributed helpers."""

from vislearn.train.engine import (
    Task,
    TrainConfig,
    Trainer,
    TrainResult,
    autocast_context,
    move_to,
    seed_everything,
)

__all__ = ["Task", "TrainConfig", "Trainer", "TrainResult", "autocast_context", "move_to", "seed_everything"]
