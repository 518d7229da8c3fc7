"""The engine's data loaders: one micro-batch list per epoch, batched fetch for in-memory data, workers.

The engine decides which sample indices form each micro-batch (its sampler, its resume position);
this module only turns such index lists into ``DataLoader`` objects with the run's worker settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vislearn.data.collate import BatchedAccess
from vislearn.train.config import TrainConfig


class EpochBatches:
    """A batch sampler over a list the engine refills each epoch (the persistent loader's)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def persistent(cfg: TrainConfig) -> bool:
    """Whether the training loader's worker processes live for the whole run."""
    return cfg.persistent_workers and cfg.num_workers > 0


def loader_options(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The DataLoader settings of both loaders: worker processes, pinned memory (CUDA only)."""
    return {"num_workers": cfg.num_workers, "persistent_workers": persistent(cfg),
            "pin_memory": cfg.pin_memory and device.type == "cuda"}


def train_loader(dataset: Dataset, batches, collate_fn, generator: torch.Generator,
                 options: dict[str, Any]) -> DataLoader:
    """A loader yielding one micro-batch per item of ``batches`` (lists of dataset indices).

    A dataset with ``get_batch(indices)`` and no custom collate (in-memory tensors) is fetched one
    micro-batch per call: the per-sample ``__getitem__`` + collate cost as much as a small model's step.
    """
    if collate_fn is None and callable(getattr(dataset, "get_batch", None)):
        return DataLoader(BatchedAccess(dataset), sampler=batches, batch_size=None, generator=generator, **options)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, generator=generator, **options)


def eval_loader(dataset: Dataset, cfg: TrainConfig, collate_fn, device: torch.device) -> DataLoader:
    """The evaluation loader: in order, the evaluation batch size, workers that end with the pass."""
    return DataLoader(dataset, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False,
                      collate_fn=collate_fn, **{**loader_options(cfg, device), "persistent_workers": False})
