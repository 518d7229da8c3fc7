"""BYOL view augmentation applied to a whole batch of in-memory images at once (DINO, MSN).

The same augmentation as :func:`vislearn.data.multicrop.byol_view_transform` (BYOL, Grill et al.
2020, App. B; DINO's per-view probabilities), but each sample's random parameters are drawn first
(:func:`draw_view_params`, from a per-sample ``random.Random`` seeded by (seed, epoch, index)) and
then every operation runs once on the batch (:func:`apply_view_params`):

* crop + resize + horizontal flip: one :func:`torch.nn.functional.grid_sample` with a per-sample
  affine grid, its coordinates clamped to the crop box (the sampling of a bilinear ``resize`` of
  the crop);
* brightness, contrast, saturation: per-sample scalar blends; hue: a vectorised rgb → hsv → rgb;
* grayscale: ITU-R 601 luma (0.2989, 0.587, 0.114) on 3 channels;
* Gaussian blur: a separable grouped convolution with a per-sample σ (reflect padding);
* solarize (threshold 0.5).

Where it differs from torchvision's per-sample pipeline (made per sample with ``v2`` transforms,
kept for folder data in :class:`~vislearn.data.multicrop.MultiCrop`):

* **bilinear** crops, not bicubic, and **no antialiasing** (at 32 px the crops are upscaled or
  barely downscaled; bicubic cannot be written as one ``grid_sample`` without overshoot clamping);
* a **fixed jitter order** (brightness, contrast, saturation, hue) where ``v2.ColorJitter``
  permutes the four per call;
* the crop box follows the same rule as ``RandomResizedCrop`` (area in ``scale``, log-uniform
  aspect in [3/4, 4/3], 10 tries, then the largest centred box of a clamped aspect), but drawn with
  Python's generator, so a seed gives other views than the torchvision path's.

Per-sample parameters make the output of a sample independent of the batch it is in (up to float
rounding), so DDP and gradient accumulation see the crops one large batch sees. Tested against
torchvision's functional ops applied with the same parameters (``tests/test_data_batch_views.py``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vislearn.errors import UserError

__all__ = ["ViewSpec", "apply_view_params", "draw_view_params", "gaussian_kernels", "hsv_to_rgb", "rgb_to_hsv"]

_LUMA = (0.2989, 0.587, 0.114)
_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ViewSpec:
    """One view's augmentation: output size, crop area range and every probability and strength."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue
    blur_kernel: int = 3
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        for name in ("blur_p", "solarize_p", "color_jitter_p", "grayscale_p"):
            p = getattr(self, name)
            if not 0 <= p <= 1:
                raise UserError(f"{name} must be a probability in [0, 1], got {p!r}")
        b, c, s, h = self.jitter
        if min(b, c, s) < 0 or not 0 <= h <= 0.5:
            raise UserError(f"jitter must be (brightness, contrast, saturation >= 0, hue in [0, 0.5]), got "
                            f"{self.jitter!r}")


def _crop_box(rng: random.Random, height: int, width: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop of area share in ``scale`` and aspect in [3/4, 4/3]."""
    area = height * width
    log_lo, log_hi = math.log(_RATIO[0]), math.log(_RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    aspect = width / height  # fallback: the largest centred box with the aspect clamped into the range
    if aspect < _RATIO[0]:
        w, h = width, round(width / _RATIO[0])
    elif aspect > _RATIO[1]:
        h, w = height, round(height * _RATIO[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def draw_view_params(rng: random.Random, height: int, width: int, spec: ViewSpec) -> dict[str, float]:
    """One sample's parameters of one view; always the same number of draws, in this order."""
    top, left, h, w = _crop_box(rng, height, width, spec.scale)
    b, c, s, hue = spec.jitter
    u = [rng.random() for _ in range(5)]  # flip, jitter, grayscale, blur, solarize
    jitter = u[1] < spec.color_jitter_p
    factors = (rng.uniform(1 - b, 1 + b), rng.uniform(max(0.0, 1 - c), 1 + c), rng.uniform(max(0.0, 1 - s), 1 + s),
               rng.uniform(-hue, hue))
    sigma = rng.uniform(*spec.blur_sigma)
    return {"top": top, "left": left, "height": h, "width": w, "flip": float(u[0] < 0.5),
            "brightness": factors[0] if jitter else 1.0, "contrast": factors[1] if jitter else 1.0,
            "saturation": factors[2] if jitter else 1.0, "hue": factors[3] if jitter else 0.0,
            "grayscale": float(u[2] < spec.grayscale_p), "blur": float(u[3] < spec.blur_p), "sigma": sigma,
            "solarize": float(u[4] < spec.solarize_p)}


def _column(params: Sequence[dict[str, float]], key: str, device: torch.device) -> torch.Tensor:
    return torch.tensor([p[key] for p in params], dtype=torch.float32, device=device)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] * _LUMA[0] + x[:, 1] * _LUMA[1] + x[:, 2] * _LUMA[2]).unsqueeze(1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> HSV, hue in [0, 1)."""
    r, g, b = x.unbind(1)
    v, arg = x.max(1)
    delta = v - x.min(1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(arg == 0, (g - b) / safe, torch.where(arg == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, torch.remainder(h / 6, 1.0), torch.zeros_like(h))
    s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: channel n of (R, G, B) is ``v - v·s·clamp(min(k, 4 - k), 0, 1)``,
    ``k = (n + 6h) mod 6`` with n = 5, 3, 1."""
    h, s, v = x.unbind(1)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6 * h.unsqueeze(1), 6.0)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1)


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` normalised 1-d Gaussian kernels, one per σ."""
    t = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - (size - 1) / 2
    k = torch.exp(-0.5 * (t / sigma[:, None]) ** 2)
    return k / k.sum(1, keepdim=True)


def _blur(x: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    b, c, h, w = x.shape
    k = gaussian_kernels(sigma, size).repeat_interleave(c, 0)  # (B*C, size)
    y = F.pad(x.reshape(1, b * c, h, w), (size // 2,) * 4, mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, size), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, size, 1), groups=b * c)
    return y.view(b, c, h, w)


def _resized_crops(x: torch.Tensor, params: Sequence[dict[str, float]], size: int) -> torch.Tensor:
    """Bilinear crop+resize(+flip) of every sample by one affine ``grid_sample`` (align_corners=False)."""
    _, _, height, width = x.shape
    col = lambda key: _column(params, key, x.device)  # noqa: E731
    sx, sy = col("width") / width, col("height") / height
    tx, ty = (2 * col("left") + col("width")) / width - 1, (2 * col("top") + col("height")) / height - 1
    sx = torch.where(col("flip") > 0, -sx, sx)
    theta = torch.zeros(len(params), 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta, [len(params), x.shape[1], size, size], align_corners=False)
    # a bilinear resize clamps its source coordinates to the crop, not to the whole image
    lo = torch.stack([(2 * col("left") + 1) / width, (2 * col("top") + 1) / height], 1) - 1
    hi = torch.stack([(2 * (col("left") + col("width")) - 1) / width, (2 * (col("top") + col("height")) - 1) / height],
                     1) - 1
    grid = torch.clamp(grid, min=lo.view(-1, 1, 1, 2), max=hi.view(-1, 1, 1, 2))
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def apply_view_params(images: torch.Tensor, params: Sequence[dict[str, float]], spec: ViewSpec) -> torch.Tensor:
    """``(B, 3, size, size)`` float32 views in [0, 1] of ``images`` ``(B, 3, H, W)`` in [0, 1] (or uint8)."""
    if images.dim() != 4 or images.shape[1] != 3 or len(params) != images.shape[0]:
        raise UserError(f"apply_view_params needs (B, 3, H, W) images and B parameter sets, got "
                        f"{tuple(images.shape)} and {len(params)}")
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    x = _resized_crops(x, params, spec.size).clamp(0, 1)
    dev = x.device
    shape = (-1, 1, 1, 1)
    x = (x * _column(params, "brightness", dev).view(shape)).clamp(0, 1)
    c = _column(params, "contrast", dev).view(shape)
    x = (c * x + (1 - c) * _gray(x).mean((1, 2, 3), keepdim=True)).clamp(0, 1)
    s = _column(params, "saturation", dev).view(shape)
    x = (s * x + (1 - s) * _gray(x)).clamp(0, 1)
    hue = _column(params, "hue", dev)
    if bool((hue != 0).any()):
        hsv = rgb_to_hsv(x)
        hsv = torch.cat([torch.remainder(hsv[:, :1] + hue.view(shape), 1.0), hsv[:, 1:]], 1)
        x = torch.where((hue != 0).view(shape), hsv_to_rgb(hsv), x)
    x = torch.where(_column(params, "grayscale", dev).view(shape) > 0, _gray(x).expand_as(x), x)
    blur = _column(params, "blur", dev) > 0
    if bool(blur.any()):
        x = torch.where(blur.view(shape), _blur(x, _column(params, "sigma", dev), spec.blur_kernel), x)
    solar = (_column(params, "solarize", dev) > 0).view(shape)
    x = torch.where(solar & (x >= 0.5), 1 - x, x)
    return x.clamp(0, 1)
