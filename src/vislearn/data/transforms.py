"""Standard image pipelines built from torchvision.transforms.v2.

They accept PIL images, uint8 tensors or float tensors in [0, 1] (3×H×W, or with detection targets when
the pipeline is geometric-only) and return float32 tensors in [0, 1]; models normalise inside
(``VisionModel.prepare_input``), so no ``Normalize`` step here.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from vislearn.errors import UserError

__all__ = ["train_transform", "eval_transform", "inception_eval_transform"]


def _size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def train_transform(image_size: int, scale: tuple[float, float] = (0.08, 1.0), flip: bool = True,
                    color_jitter: float = 0.0) -> v2.Compose:
    """Inception-style training augmentation: a random resized crop covering ``scale`` of the image area
    with aspect ratio in [3/4, 4/3] (Szegedy et al. 2015, §6; the torchvision ImageNet reference), then an
    optional horizontal flip and brightness/contrast/saturation jitter of strength ``color_jitter``."""
    _size("image_size", image_size)
    if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
        raise UserError(f"scale must be (low, high) with 0 < low <= high <= 1, got {scale!r}")
    if not 0 <= color_jitter < 1:
        raise UserError(f"color_jitter must be in [0, 1), got {color_jitter!r}")
    steps: list = [v2.ToImage(), v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose(steps)


def eval_transform(image_size: int, resize: int | None = None) -> v2.Compose:
    """Resize the short side to ``resize`` (default ``round(image_size / 0.875)``, the usual 87.5 % centre
    crop ratio, e.g. 256 → 224) and take the central ``image_size`` square."""
    _size("image_size", image_size)
    resize = round(image_size / 0.875) if resize is None else _size("resize", resize)
    if resize < image_size:
        raise UserError(f"resize ({resize}) must be >= image_size ({image_size})")
    return v2.Compose([v2.ToImage(), v2.Resize(resize, antialias=True), v2.CenterCrop(image_size),
                       v2.ToDtype(torch.float32, scale=True)])


def inception_eval_transform() -> v2.Compose:
    """Inception-v3 evaluation: resize the short side to 342, centre crop 299 (torchvision's reference)."""
    return eval_transform(299, resize=342)
