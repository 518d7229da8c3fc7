"""Evaluation on every process: each one predicts its part of the evaluation set, the main process scores the whole.

A :class:`ShardedEvaluation` is a ``Task.evaluate`` split in two: ``predict(model, loader)`` returns the
per-sample results of the samples ``loader`` yields, as *columns* (a dict whose values have one entry per
sample, in loader order: tensors with a leading sample dimension, or lists such as per-image boxes), and
``score(columns) -> {name: float}`` turns the results of the whole set into metrics. Called as
``evaluation(model, loader)`` it is a plain evaluation (one process, :func:`vislearn.recipes.evaluate`).

Under ``torchrun`` the engine (:func:`evaluate_on_every_process`) gives process ``r`` of ``W`` the samples
``r, r + W, r + 2W, ...`` (an unpadded split: unlike ``DistributedSampler``'s, no sample is repeated to
even out the shares), gathers every process's columns with their dataset indices on the main process,
keeps one result per dataset index (so even a padded split would count no sample twice) and scores them
in dataset order: the metrics are those of one process over the whole set, up to float summation order.
A plain ``evaluate`` function (not a :class:`ShardedEvaluation`) still runs on the main process alone while
the others wait (bounded by ``TrainConfig.dist_timeout_minutes``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from vislearn.errors import UserError
from vislearn.train.distributed import DistInfo, gather_objects_on_main

__all__ = ["Columns", "ShardedEvaluation", "evaluate_on_every_process", "merge_columns", "shard_indices"]

Columns = dict[str, "torch.Tensor | list[Any]"]


@dataclass(frozen=True)
class ShardedEvaluation:
    """``predict(model, loader) -> columns`` on each process's share, ``score(columns) -> metrics`` on the whole."""

    predict: Callable[[nn.Module, DataLoader], Columns]
    score: Callable[[Columns], dict[str, float]]

    def __call__(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        return self.score(self.predict(model, loader))


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """The dataset indices process ``rank`` evaluates: every ``world_size``-th one, none repeated."""
    return list(range(rank, n, world_size))


def _rows(column: torch.Tensor | list, where: str) -> int:
    if not isinstance(column, (torch.Tensor, list, tuple)):
        raise UserError(f"ShardedEvaluation.predict: column {where!r} must be a tensor or a list, "
                        f"got {type(column).__name__}")
    return column.shape[0] if isinstance(column, torch.Tensor) else len(column)


def merge_columns(parts: Sequence[tuple[Sequence[int], Columns]], n: int) -> Columns:
    """The columns of dataset samples ``0..n-1`` from ``(indices, columns)`` parts; a repeated index counts once."""
    parts = [part for part in parts if len(part[0])]  # a process with no samples (more processes than samples)
    where: dict[int, tuple[int, int]] = {}  # dataset index -> (part, row); the first occurrence wins
    for p, (indices, columns) in enumerate(parts):
        for key, col in columns.items():
            if _rows(col, key) != len(indices):
                raise UserError(f"ShardedEvaluation.predict returned {_rows(col, key)} rows of {key!r} for "
                                f"{len(indices)} samples")
        for row, i in enumerate(indices):
            where.setdefault(int(i), (p, row))
    missing = sorted(set(range(n)) - where.keys())
    if missing:
        raise UserError(f"distributed evaluation: no result for samples {missing[:5]} of {n}")
    keys = list(parts[0][1]) if parts else []
    out: Columns = {}
    for key in keys:
        cols = [c[key] for _, c in parts]
        if all(isinstance(c, torch.Tensor) for c in cols):
            offsets = [0]
            for c in cols:
                offsets.append(offsets[-1] + c.shape[0])
            rows = torch.tensor([offsets[p] + r for p, r in (where[i] for i in range(n))], dtype=torch.long)
            out[key] = torch.cat(cols)[rows]
        else:
            out[key] = [cols[p][r] for p, r in (where[i] for i in range(n))]
    return out


def evaluate_on_every_process(evaluation: ShardedEvaluation, model: nn.Module, dataset: Dataset,
                              make_loader: Callable[[Dataset], DataLoader], info: DistInfo) -> dict[str, float]:
    """Run ``evaluation`` over ``dataset`` split across the processes; the metrics on the main process, ``{}``
    on the others (every process must call it: it gathers)."""
    indices = shard_indices(len(dataset), info.rank, info.world_size)
    columns = evaluation.predict(model, make_loader(Subset(dataset, indices))) if indices else {}
    columns = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else list(v) for k, v in columns.items()}
    parts = gather_objects_on_main((indices, columns), info)
    if not info.is_main:
        return {}
    return evaluation.score(merge_columns(parts, len(dataset)))
