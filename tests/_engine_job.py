"""A small but complete training job for the engine tests, runnable as a script.

It exercises every piece of state that resumption must restore: momentum SGD state, a cosine
schedule with warm-up, gradient clipping, an EMA of weights, dropout and a random augmentation
(both drawing from the global RNG), shuffled data order over several epochs.

Usage: ``python tests/_engine_job.py OUT_DIR [--resume] [--kill-at STEP] [--term-at STEP] [--record FILE]``
(``--record``: append each optimizer step this process completes to FILE, one per line).
"""

from __future__ import annotations

import os
import signal
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from vislearn.data.embedded import digits  # noqa: E402
from vislearn.train import Task, TrainConfig, Trainer, seed_everything  # noqa: E402


def noisy(x: torch.Tensor) -> torch.Tensor:
    return (x + 0.05 * torch.randn_like(x)).clamp(0, 1)


class Module(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, batch):
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        return {"loss": loss}


def evaluate(model, loader):
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return {"top1": correct / total}


def config(steps: int = 120, **kw) -> TrainConfig:
    base = dict(steps=steps, batch_size=50, lr=0.2, momentum=0.9, schedule="cosine", warmup_steps=10,
                clip_grad=1.0, ema_decay=0.9, ckpt_every=25, log_every=10, eval_every=40, seed=3,
                ckpt_at_eval=False)  # checkpoints every 25 steps only (the tests count on where they are)
    base.update(kw)
    return TrainConfig(**base)


def task() -> Task:
    seed_everything(3)
    module = Module()
    return Task(module, digits("train", transform=noisy), digits("test"), evaluate=evaluate, model=module.model)


def main(argv: list[str]) -> None:
    out = argv[0]
    kill_at = int(argv[argv.index("--kill-at") + 1]) if "--kill-at" in argv else -1
    term_at = int(argv[argv.index("--term-at") + 1]) if "--term-at" in argv else -1
    record = argv[argv.index("--record") + 1] if "--record" in argv else None

    def bomb(trainer, step):
        if record is not None:
            with open(record, "a") as f:
                f.write(f"{step}\n")
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == term_at:
            os.kill(os.getpid(), signal.SIGTERM)

    Trainer(config(), task(), out, resume="--resume" in argv, progress=False, callbacks=[bomb]).fit()


if __name__ == "__main__":
    main(sys.argv[1:])
