"""Standard image pipelines built from torchvision.transforms.v2.

They accept PIL images, uint8 tensors or float tensors in [0, 1] (3×H×W, or with detection targets when
the pipeline is geometric-only) and return float32 tensors in [0, 1]; models normalise inside
(``VisionModel.prepare_input``), so no ``Normalize`` step here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from vislearn.errors import UserError

__all__ = ["DataConfig", "INTERPOLATIONS", "train_transform", "eval_transform", "inception_eval_transform"]

INTERPOLATIONS = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR,
                  "bicubic": v2.InterpolationMode.BICUBIC}


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


def _interpolation(name: str) -> v2.InterpolationMode:
    if name not in INTERPOLATIONS:
        raise UserError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {name!r}")
    return INTERPOLATIONS[name]


def eval_transform(image_size: int, resize: int | None = None, interpolation: str = "bilinear") -> v2.Compose:
    """Resize the short side to ``resize`` (default ``round(image_size / 0.875)``, the usual 87.5 % centre
    crop ratio, e.g. 256 → 224) with ``interpolation`` (antialiased) and take the central ``image_size``
    square. Bicubic results are clamped to [0, 1] (as PIL's 8-bit resize saturates)."""
    _size("image_size", image_size)
    resize = round(image_size / 0.875) if resize is None else _size("resize", resize)
    if resize < image_size:
        raise UserError(f"resize ({resize}) must be >= image_size ({image_size})")
    steps = [v2.ToImage(), v2.Resize(resize, interpolation=_interpolation(interpolation), antialias=True),
             v2.CenterCrop(image_size), v2.ToDtype(torch.float32, scale=True)]
    if interpolation == "bicubic":  # cubic weights overshoot on float images; PIL and uint8 saturate
        steps.append(v2.Lambda(_clamp_unit))
    return v2.Compose(steps)


def _clamp_unit(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0)


@dataclass(frozen=True)
class DataConfig:
    """How the images a set of weights was trained on are prepared for evaluation (timm's
    ``pretrained_cfg`` / torchvision's ``weights.transforms()``, in one record).

    ``mean``/``std`` are on the [0, 1] scale and are what the model's first layer expects; models apply
    them inside ``forward`` (``model.normalization``), so :meth:`transform` does not normalise.
    ``resize`` is the short side before the central ``crop_size`` square.
    """

    crop_size: int
    resize: int
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    in_chans: int = 3

    def __post_init__(self) -> None:
        _size("crop_size", self.crop_size)
        _size("resize", self.resize)
        _interpolation(self.interpolation)
        if self.resize < self.crop_size:
            raise UserError(f"resize ({self.resize}) must be >= crop_size ({self.crop_size})")

    @classmethod
    def from_crop_pct(cls, crop_size: int, crop_pct: float, **kwargs) -> DataConfig:
        """The resize of a ``crop_pct`` centre crop as timm computes it: ``floor(crop_size / crop_pct)``."""
        if not 0 < crop_pct <= 1:
            raise UserError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
        return cls(crop_size, math.floor(crop_size / crop_pct), **kwargs)

    @property
    def crop_pct(self) -> float:
        return self.crop_size / self.resize

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(self.mean), tuple(self.std)

    def transform(self) -> v2.Compose:
        """The evaluation pipeline: resize, centre crop, float in [0, 1]."""
        return eval_transform(self.crop_size, resize=self.resize, interpolation=self.interpolation)


def inception_eval_transform() -> v2.Compose:
    """Inception-v3 evaluation: resize the short side to 342, centre crop 299 (torchvision's reference)."""
    return eval_transform(299, resize=342)
