"""``torchrun`` detection and the few collective helpers the engine needs.

Launch with ``torchrun --nproc_per_node=N -m vislearn.cli train ...``: the environment carries
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the backend is nccl on CUDA and gloo on CPU. Every collective
of the process group gives up after ``timeout_minutes`` (``TrainConfig.dist_timeout_minutes``): a process
left waiting for one that died or hangs fails with an error instead of blocking the job forever (under
``torchrun --max-restarts`` the job is then restarted from its last checkpoint).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str, timeout_minutes: float = 30.0) -> DistInfo:
    """Initialise the process group when launched by torchrun with more than one process (a group that
    is already initialised is kept, with its own timeout)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    warning = restart_store_warning(os.environ)
    if rank == 0 and warning:
        print(f"vislearn: warning: {warning}", file=sys.stderr, flush=True)
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(rank, world, local)


def restart_store_warning(env) -> str | None:
    """What to tell a user whose torchrun may restart workers that share the agent's store (``env``: the
    process environment), or None when that is not the case."""
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0:
        return ("torchrun shares its rendezvous store with the workers, and a restarted worker group can then read "
                "the previous group's addresses and fail to connect (pytorch/pytorch#135712); launch torchrun with "
                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 to restart reliably")
    return None


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over processes (identity on one process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= info.world_size
    return values


def any_of(flags: list, info: DistInfo) -> list[bool]:
    """For each flag (a bool or a 0-d bool tensor), whether it is set on any process (one all-reduce)."""
    if not info.enabled:  # no stacking and copying for one process: this runs every step
        return [bool(f) for f in flags]
    t = torch.stack([f.detach().float().reshape(()).cpu() if isinstance(f, torch.Tensor) else torch.tensor(float(f))
                     for f in flags])
    if info.enabled:
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return (t > 0).tolist()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every process's ``obj`` (the engine gathers RNG states so each rank resumes exactly)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_objects_on_main(obj, info: DistInfo) -> list | None:
    """Every process's ``obj`` on the main process (rank order), ``None`` on the others."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every process (identity on one process)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree_on_main(fn, info: DistInfo):
    """``fn()`` run on the main process; its result, or the ``UserError`` it raised, on every process
    (so a refusal decided by one process never leaves the others waiting in a collective)."""
    from vislearn.errors import UserError

    result, error = None, None
    if info.is_main:
        try:
            result = fn()
        except UserError as e:
            error = str(e)
    result, error = broadcast_object((result, error), info)
    if error is not None:
        raise UserError(error)
    return result


def sync_batch_norm(module: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``sync_bn``: every BatchNorm layer of ``module`` becomes a ``torch.nn.SyncBatchNorm`` with its
    parameters and running statistics, so that N processes normalise over the global batch.

    On one process the module is returned unchanged (the local batch is the global batch). Several
    processes off CUDA are refused: torch's SyncBatchNorm synchronises GPU tensors only (its training
    forward raises on a CPU tensor under a gloo group).
    """
    if not info.enabled:
        return module
    if device.type != "cuda":
        from vislearn.errors import UserError

        raise UserError(f"sync_bn needs CUDA: torch's SyncBatchNorm synchronises GPU tensors only, and this "
                        f"{info.world_size}-process run is on {device.type}; set sync_bn=false (each process "
                        "then normalises over its own batch)")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The rows of ``x`` of every process, concatenated in rank order, and where this process's rows start.

    This process's block is ``x`` itself (its autograd graph kept); the other blocks are copies without
    gradient (pytorch-metric-learning's ``DistributedLossWrapper`` gathers the same way). Processes may hold
    different numbers of rows. Without a process group (or with one process) ``(x, 0)``. Every process
    must call it (a collective).
    """
    rank, size = world()
    if size == 1:
        return x, 0
    counts = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
    counts_list = [int(c) for c in counts]
    longest = max(counts_list)
    padded = x.detach()
    if x.shape[0] < longest:
        padded = torch.cat([padded, padded.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    blocks = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(blocks, padded.contiguous())
    parts = [x if r == rank else blocks[r][:counts_list[r]] for r in range(size)]
    return torch.cat(parts), sum(counts_list[:rank])


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
