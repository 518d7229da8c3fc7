"""Frozen features of a trained backbone, the input of :mod:`vislearn.metrics.fewshot`.

Ruan et al. (ICLR 2023, App. B.3) evaluate every encoder on *frozen* features: one centre crop, no
augmentation, the ViT's [CLS] token. :func:`backbone_features` turns any registry model into one
vector per image by the same rule for every family:

* a model with an ``embed(x)`` method gives its own representation ``(N, D)`` (vislearn's ViTs: the
  final-norm [CLS] token, the paper's feature);
* otherwise the model's ``forward_features(x)[-1]`` (its last stage; ``x`` in [0, 1], the model
  normalises):
  a map ``(N, C, H, W)`` (convnets) is global-average pooled to ``(N, C)``; a token sequence
  ``(N, T, D)`` gives its first token (the [CLS] position); a vector ``(N, D)`` is used as is.

A model without ``forward_features`` is called directly and must return ``(N, D)``. Heads, codebooks
and classifiers are never used: what is scored is the backbone alone (the paper discards the
ensembled heads, Sec. 3.1).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from vislearn.errors import UserError

__all__ = ["backbone_features", "extract_features"]


def backbone_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """One feature vector per image, ``(N, D)``, by the module docstring's rule (no grad handling here)."""
    if callable(getattr(model, "embed", None)):
        out = model.embed(images)
    elif hasattr(model, "forward_features"):
        out = model.forward_features(images)
        out = out[-1] if isinstance(out, (list, tuple)) else out
    else:
        out = model(images)
    if out.dim() == 4:
        return out.mean((2, 3))
    if out.dim() == 3:
        return out[:, 0]
    if out.dim() == 2:
        return out
    raise UserError(f"{type(model).__name__} returned features of shape {tuple(out.shape)}; "
                    "expected (N, C, H, W), (N, tokens, D) or (N, D)")


@torch.no_grad()
def extract_features(model: nn.Module, dataset: Dataset, batch_size: int = 128, device: str | torch.device = "cpu",
                     log: Callable[[str], None] | None = None, log_every_s: float = 10.0) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    """``(features float32 (N, D), labels int64 (N,))`` of a dataset of ``(image, label)`` items, in
    dataset order, with the model in eval mode under ``no_grad`` (its training mode is restored after).

    ``log`` receives a progress line about every ``log_every_s`` seconds on long runs.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if len(dataset) == 0:
        raise UserError("the dataset is empty")
    was_training = model.training
    model.eval()
    feats, labels = [], []
    done, t0, last = 0, time.time(), time.time()
    try:
        for images, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            feats.append(backbone_features(model, images.to(device)).float().cpu())
            labels.append(torch.as_tensor(y, dtype=torch.int64))
            done += len(images)
            if log is not None and time.time() - last > log_every_s:
                last = time.time()
                log(f"  features: {done}/{len(dataset)} images ({done / (last - t0):.0f} img/s)")
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(labels)
