"""A fake process group for testing all-reduce code paths without launching processes.

``ThreadWorld(n).run(fn)`` calls ``fn(rank, all_reduce)`` in ``n`` threads; ``all_reduce(tensor, op)``
is a real collective among them (every rank blocks until all have contributed), with the in-place,
sum-or-max semantics of ``torch.distributed.all_reduce``.
"""

from __future__ import annotations

import threading

import torch


class ThreadWorld:
    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self._barrier = threading.Barrier(world_size, timeout=30)
        self._slots: list[torch.Tensor | None] = [None] * world_size

    def _all_reduce(self, rank: int):
        def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
            self._slots[rank] = tensor.detach().clone()
            self._barrier.wait()
            stacked = torch.stack(self._slots)
            result = stacked.sum(0) if op == "sum" else stacked.amax(0)
            self._barrier.wait()  # nobody overwrites a slot before everyone has read them
            tensor.copy_(result)
            return tensor
        return all_reduce

    def run(self, fn):
        results, errors = [None] * self.world_size, []

        def target(rank: int) -> None:
            try:
                results[rank] = fn(rank, self._all_reduce(rank))
            except BaseException as exc:  # re-raised in the caller
                errors.append(exc)
                self._barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.world_size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results
