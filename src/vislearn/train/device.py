"""Devices for the engine: which one, moving batches to it, and autocast for a precision."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from vislearn.errors import UserError
from vislearn.train.distributed import DistInfo


def resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but CUDA is not available")
        if info.enabled:
            return torch.device("cuda", info.local_rank)
    return torch.device(name)


def move_to(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move tensors in nested tuples/lists/dicts to ``device`` (4-D float ones to channels_last if asked)."""
    if isinstance(batch, torch.Tensor):
        t = batch.to(device, non_blocking=True)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(batch, (list, tuple)):
        moved = [move_to(b, device, channels_last) for b in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    if isinstance(batch, dict):
        return {k: move_to(v, device, channels_last) for k, v in batch.items()}
    return batch


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast on CPU or CUDA, fp16 on CUDA, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError("precision fp16 needs CUDA; use bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    raise UserError(f"unknown precision {precision!r}; choose fp32, bf16 or fp16")
