"""Sampling schemes as datasets or samplers, usable by any recipe with the one engine's loader."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

from vislearn.errors import UserError

__all__ = ["ClassGroups", "ShardOrderSampler"]


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


class ShardOrderSampler(Sampler[int]):
    """Per-rank order over a sharded dataset: whole shards per rank, a shuffle buffer inside (WebDataset's
    ``split_by_node`` + ``shuffle(buffer)``, as a map-style sampler so that resume stays exact).

    Each epoch: the shards are permuted (``seed``, ``epoch``); their samples, concatenated in that order,
    are cut into ``num_replicas`` contiguous equal blocks of ``len // num_replicas`` samples (the last
    ``len % num_replicas`` are dropped that epoch, a different few each epoch), so each rank reads its own
    shards (a block boundary shares at most one shard with the neighbouring rank) and every rank has the
    same number of batches however uneven the shards are; a rank's block then goes through a shuffle
    buffer of ``buffer`` samples (seeded by ``seed``, ``epoch``, ``rank``). The order is a pure function of
    ``(seed, epoch, num_replicas, rank)``, which is what the engine's exact mid-epoch resume needs. Resuming
    at another world size continues at the same step and epoch, but the rest of that epoch follows the
    new world size's blocks (some of its samples are seen twice or not at all; later epochs are whole).
    Interface of ``DistributedSampler``: ``set_epoch``, ``len`` (samples per rank), ``iter``.
    """

    def __init__(self, shard_sizes: list[int], num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 buffer: int = 2000) -> None:
        if not shard_sizes or any(int(n) < 0 for n in shard_sizes):
            raise UserError(f"shard_sizes must be a non-empty list of sample counts, got {shard_sizes!r}")
        if not 0 <= rank < num_replicas:
            raise UserError(f"rank must be in [0, {num_replicas}), got {rank}")
        if buffer < 1:
            raise UserError(f"shuffle buffer must be >= 1 sample, got {buffer}")
        self.sizes = [int(n) for n in shard_sizes]
        self.starts = [0]
        for n in self.sizes:
            self.starts.append(self.starts[-1] + n)
        self.num_replicas, self.rank, self.seed, self.buffer = num_replicas, rank, seed, buffer
        self.num_samples = self.starts[-1] // num_replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.sizes), generator=g).tolist()
        seq = torch.cat([torch.arange(self.starts[k], self.starts[k + 1]) for k in order])
        block = seq[self.rank * self.num_samples:(self.rank + 1) * self.num_samples].tolist()
        g.manual_seed((self.seed * 1_000_003 + self.epoch) * 7919 + self.rank + 1)
        # draws for the buffer slots, made in one call (a Python loop over torch.randint is 100× slower)
        picks = (torch.rand(len(block), generator=g, dtype=torch.float64) * self.buffer).long().tolist()
        buf: list[int] = []
        out: list[int] = []
        for i, idx in enumerate(block):
            if len(buf) < self.buffer:
                buf.append(idx)
                continue
            j = picks[i] % len(buf)
            out.append(buf[j])
            buf[j] = idx
        perm = torch.randperm(len(buf), generator=g).tolist()
        out.extend(buf[j] for j in perm)
        return iter(out)
