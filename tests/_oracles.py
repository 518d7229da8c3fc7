"""Hand counts shared by the recipe tests: what a metric must equal, computed without the recipe's code."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


def top1_by_hand(trainer) -> float:
    """The fraction of ``trainer.task.eval_set`` whose argmax logit is the label, counted one sample at a
    time on the model the engine evaluates (the EMA copy when ``ema_eval``), under its precision."""
    from vislearn.train.device import autocast_context

    model = trainer.inference_model(use_ema=trainer.cfg.ema_eval).eval()
    correct = 0
    with torch.no_grad(), autocast_context(trainer.cfg.precision, trainer.device):
        for x, y in DataLoader(trainer.task.eval_set, batch_size=trainer.cfg.eval_batch_size or 64):
            correct += sum(int(row.argmax()) == int(label) for row, label in zip(model(x).float(), y, strict=True))
    return correct / len(trainer.task.eval_set)
