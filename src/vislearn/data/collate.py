"""Collate functions: how a list of dataset items becomes one batch."""

from __future__ import annotations

import torch

from vislearn.errors import UserError

__all__ = ["BatchedAccess", "detection_collate", "group_collate"]


def detection_collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack same-sized images into N×3×H×W and keep the per-image target dicts in a list."""
    if not batch:
        raise UserError("detection_collate got an empty batch")
    return torch.stack([im for im, _ in batch]), [t for _, t in batch]


def group_collate(batch):
    """Flatten a list of ``(images k×C×H×W, labels k)`` groups into one batch.

    Single ``(image C×H×W, label)`` items (the evaluation loader's) are stacked as usual.
    """
    xs, ys = [x for x, _ in batch], [torch.as_tensor(y) for _, y in batch]
    if xs[0].dim() == 4:
        return torch.cat(xs), torch.cat(ys)
    return torch.stack(xs), torch.stack(ys)


class BatchedAccess(torch.utils.data.Dataset):
    """A view of a dataset with ``get_batch(indices)`` indexed by a whole list of indices at once.

    Given to a ``DataLoader`` with ``sampler=`` a list of index lists and ``batch_size=None``, each
    loader item is one ``get_batch`` call: the same batch as the per-sample fetch + default collate.
    """

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]):
        return self.dataset.get_batch(indices)
