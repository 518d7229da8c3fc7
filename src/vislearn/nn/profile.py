"""Profiling utilities that work on any ``nn.Module``."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["count_macs"]


def count_macs(model: nn.Module, image_size: int = 299, batch: int = 1) -> int:
    """Multiply-adds of one eval-mode forward pass per image, counted by ``torch.utils.flop_counter``
    (convolutions and matrix products; FLOPs / 2).

    A model built on the ``meta`` device (``with torch.device("meta"): model = ...``) is counted
    without computing anything; input validation is skipped for it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    was, validate = model.training, getattr(model, "validate_inputs", None)
    model.eval()
    if validate is not None and device.type == "meta":
        model.validate_inputs = False
    x = torch.rand(batch, getattr(model, "in_chans", 3), image_size, image_size, device=device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was)
        if validate is not None:
            model.validate_inputs = validate
    return counter.get_total_flops() // (2 * batch)
