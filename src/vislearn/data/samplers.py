"""Sampling schemes as datasets or samplers, usable by any recipe with the one engine's loader."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from vislearn.errors import UserError

__all__ = ["ClassGroups"]


class ClassGroups(Dataset):
    """Items are groups of ``k`` distinct images of one class (P×K sampling through any sampler).

    Each class contributes ``count // k`` groups; the ``k`` images of a group are drawn at random
    (torch's global generator, which the engine seeds and checkpoints) from that class every time the
    item is read. Use :func:`vislearn.data.collate.group_collate` to flatten a batch of groups.
    """

    def __init__(self, base: Dataset, k: int, targets: torch.Tensor | None = None) -> None:
        if not isinstance(k, int) or k < 2:
            raise UserError(f"samples_per_class must be an int >= 2 for grouped sampling, got {k!r}")
        t = torch.as_tensor(targets if targets is not None else base.targets)
        self.base, self.k = base, k
        self.members: list[torch.Tensor] = []
        group_class: list[int] = []
        for c in torch.unique(t).tolist():
            idx = (t == c).nonzero().squeeze(1)
            if len(idx) >= k:
                self.members.append(idx)
                group_class += [len(self.members) - 1] * (len(idx) // k)
        if not group_class:
            raise UserError(f"no class has {k} samples for grouped sampling")
        self.group_class = group_class

    def __len__(self) -> int:
        return len(self.group_class)

    def __getitem__(self, i: int):
        idx = self.members[self.group_class[i]]
        pick = idx[torch.randperm(len(idx))[: self.k]]
        items = [self.base[int(j)] for j in pick]
        return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])
