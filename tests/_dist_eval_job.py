"""The engine's evaluation under torchrun (or alone), for tests/test_train_evaluation.py.

``python _dist_eval_job.py eval`` prints one JSON line (on the main process) with the metrics of
``Trainer.evaluate()`` for three tasks: the ``classify`` recipe (top-1 ...), the ``proxy_nca`` recipe
(Recall@K over the gathered embeddings) and a detection task scored by COCO mAP over the gathered detections.
``python _dist_eval_job.py timeout`` (2 processes): the main process evaluates alone with a plain ``evaluate``
that returns only once the other process has given up waiting: that one's barrier fails after
``dist_timeout_minutes`` (3 s) and it prints ``{"timed_out": seconds}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from vislearn import recipes
from vislearn.metrics.detection import coco_map
from vislearn.train import Task, TrainConfig, Trainer
from vislearn.train.evaluation import ShardedEvaluation

TINY = {"steps": 1, "log_every": 0, "eval_every": 0, "ckpt_minutes": 0, "device": "cpu"}


class Scenes(Dataset):
    """Image ``i``: 1-3 ground-truth boxes of 2 classes, drawn from a generator seeded by ``i``."""

    def __len__(self) -> int:
        return 11  # odd: a padded split (DistributedSampler's) would score one image twice

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        n = 1 + i % 3
        xy = torch.rand(n, 2, generator=g) * 40
        boxes = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 16], 1)
        return torch.full((1,), float(i)), {"boxes": boxes, "labels": torch.randint(0, 2, (n,), generator=g),
                                            "index": i}


def _detect(model: nn.Module, loader) -> dict[str, list]:
    """Detections: each ground-truth box jittered (by ``model``'s weight and a per-image generator) plus a stray
    box, with scores that rank some strays above true boxes; and the ground truth."""
    out: dict[str, list] = {"boxes": [], "scores": [], "labels": [], "gt_boxes": [], "gt_labels": []}
    shift = float(model.weight.sum())
    for _, targets in loader:
        for t in targets:
            g = torch.Generator().manual_seed(1000 + t["index"])
            gt = t["boxes"]
            det = torch.cat([gt + torch.randn(gt.shape, generator=g) * 2 + shift, torch.tensor([[0., 0, 10, 10]])])
            out["boxes"].append(det)
            out["scores"].append(torch.rand(len(det), generator=g))
            out["labels"].append(torch.cat([t["labels"], torch.tensor([t["index"] % 2])]))
            out["gt_boxes"].append(gt)
            out["gt_labels"].append(t["labels"])
    return out


def _coco(c: dict[str, list]) -> dict[str, float]:
    return {"coco_map": coco_map(c["boxes"], c["scores"], c["labels"], c["gt_boxes"], c["gt_labels"], num_classes=2)}


class Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        return {"loss": (self.weight * batch[0]).sum()}


def _collate(items):
    return torch.stack([x for x, _ in items]), [t for _, t in items]


def detection_task() -> Task:
    probe = Probe()
    return Task(probe, Scenes(), Scenes(), evaluate=ShardedEvaluation(_detect, _coco), collate_fn=_collate)


def evaluations() -> dict[str, dict[str, float]]:
    out = {}
    for name, over in (("classify", {"batch_size": 16, "eval_batch_size": 64}),
                       ("proxy_nca", {"batch_size": 8, "num_classes": 10, "shapes_per_class": 7, "image_size": 16,
                                      "embedding_dim": 8, "eval_batch_size": 8})):
        cfg, task = recipes.build(name, "quick", {**TINY, **over})
        out[name] = Trainer(cfg, task, progress=False).evaluate()
    out["detection"] = Trainer(TrainConfig(**TINY, batch_size=2, eval_batch_size=3), detection_task(),
                               progress=False).evaluate()
    return out


def timeout(flag: Path) -> None:
    def evaluate(model, loader):  # the main process returns only once the other one has given up waiting
        while not flag.exists():
            time.sleep(0.05)
        return {}

    task = Task(Probe(), Scenes(), evaluate=evaluate, collate_fn=_collate)
    trainer = Trainer(TrainConfig(**TINY, batch_size=2, dist_timeout_minutes=0.05), task, progress=False)
    t0 = time.monotonic()
    try:
        trainer.evaluate()
    except Exception as e:  # noqa: BLE001 - the collective's timeout error is the result
        if trainer.dist.rank == 1:
            print(json.dumps({"timed_out": time.monotonic() - t0, "error": str(e)[:200]}), flush=True)
            flag.write_text("1")
        os._exit(0)  # the process group is broken: leave without tearing it down


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "timeout":
        timeout(Path(sys.argv[2]))
    else:
        result = evaluations()
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(result), flush=True)
