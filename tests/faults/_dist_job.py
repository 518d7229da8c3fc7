"""The engine job under torchrun, recording the sample indices of every step; SIGTERM to one rank only.

Usage: ``python _dist_job.py OUT TRACE [--resume] [--term-rank1-at STEP]``: TRACE.rank<R> gets one JSON line
``{"step", "idx"}`` per optimizer step of rank R.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import torch.nn.functional as F
from torch.utils.data import Dataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import _engine_job as job  # noqa: E402
from vislearn.train import Task, Trainer  # noqa: E402


class Indexed(Dataset):
    def __init__(self, base) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x, y, i


class Module(job.Module):
    def forward(self, batch):
        x, y, i = batch
        self.last = i.tolist()
        return {"loss": F.cross_entropy(self.model(x), y)}


def main(argv: list[str]) -> None:
    out, trace = argv[0], argv[1]
    term_at = int(argv[argv.index("--term-rank1-at") + 1]) if "--term-rank1-at" in argv else -1
    rank = int(os.environ.get("RANK", "0"))
    job.seed_everything(3)
    module = Module()
    task = Task(module, Indexed(job.digits("train", transform=job.noisy)), model=module.model)

    def record(trainer, step):
        with open(f"{trace}.rank{rank}", "a") as f:
            f.write(json.dumps({"step": step, "idx": module.last}) + "\n")
        if rank == 1 and step == term_at:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = job.config(steps=24, ckpt_every=0, eval_every=0, ckpt_minutes=0, log_every=4, batch_size=40)
    res = Trainer(cfg, task, out, resume="--resume" in argv, progress=False, callbacks=[record]).fit()
    print(json.dumps({"rank": rank, "step": res.step, "interrupted": res.interrupted}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
