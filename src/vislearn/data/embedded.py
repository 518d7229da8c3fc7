"""Embedded datasets that need no download: ``digits``, ``shapes`` and ``photos``.

All return images as float tensors in [0, 1], NCHW, and are deterministic from their arguments.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vislearn.errors import UserError


class TensorImageDataset(Dataset):
    """Images (N×C×H×W float in [0, 1]) and targets held in memory, with an optional transform.

    ``targets`` may be class indices (N), multi-hot rows (N×C) or any per-sample tensor.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 classes: list[str] | None = None) -> None:
        if len(images) != len(targets):
            raise UserError(f"{len(images)} images but {len(targets)} targets")
        self.images, self.targets, self.transform = images, targets, transform
        self.classes = classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[i]


def digits(split: str = "train", size: int | None = None, test_fraction: float = 0.25, seed: int = 0,
           channels: int = 1, transform: Callable | None = None) -> TensorImageDataset:
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes), stratified split.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        size: resize to ``size``×``size`` (bilinear) when given, e.g. 75 for Inception-v3's minimum.
        test_fraction: share of each class held out for ``"test"``.
        seed: the split's seed (the same seed gives the same split).
        channels: 1, or 3 to repeat the grey channel for RGB models.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test", "all"):
        raise UserError(f"digits split must be train, test or all, got {split!r}")
    if channels not in (1, 3):
        raise UserError(f"digits channels must be 1 or 3, got {channels}")
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    if split != "all":
        idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed,
                                          stratify=d.target)
        idx = torch.as_tensor(idx_tr if split == "train" else idx_te)
        x, y = x[idx], y[idx]
    if size is not None and size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    if channels == 3:
        x = x.expand(-1, 3, -1, -1).contiguous()
    return TensorImageDataset(x, y, transform, classes=[str(i) for i in range(10)])
