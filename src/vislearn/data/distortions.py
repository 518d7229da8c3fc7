"""Image distortions at five severity levels, for robustness and image-quality experiments.

``distort(image, kind, level, seed)`` applies one of ``DISTORTIONS`` to a 3×H×W or N×3×H×W float image in
[0, 1] and returns the same shape in [0, 1]. Level 1 is mild and level 5 severe; the parameters in
``LEVELS`` move monotonically, so the distance to the original grows with the level (the tests check the
MSE on photos and on shapes). Everything is deterministic: only ``"noise"`` is random, drawn from a
``torch.Generator`` seeded with ``seed``. ``distort_region`` applies a distortion inside a mask or box only.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vislearn.errors import UserError

__all__ = ["DISTORTIONS", "LEVELS", "distort", "distort_region"]

DISTORTIONS: tuple[str, ...] = ("noise", "blur", "jpeg", "contrast", "color", "block")

LEVELS: dict[str, tuple] = {
    "noise": (0.02, 0.05, 0.09, 0.15, 0.25),  # std of additive Gaussian noise (image range 1)
    "blur": (0.6, 1.2, 2.0, 3.0, 4.5),  # Gaussian blur sigma in pixels (radius round(3 sigma))
    "jpeg": (75, 45, 25, 12, 4),  # JPEG quality (PIL, 4:2:0 chroma subsampling)
    "contrast": (0.75, 0.55, 0.38, 0.24, 0.12),  # factor towards the image's mean grey level
    "color": ((0.70, 0.04), (0.50, 0.08), (0.30, 0.13), (0.15, 0.20), (0.00, 0.30)),  # (saturation, cast)
    "block": (2, 4, 8, 16, 32),  # side of the constant blocks (nested grids, so the error only grows)
}


def _check(image: torch.Tensor, kind: str, level: int) -> None:
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise UserError(f"distort expects a float image tensor in [0, 1], got {type(image).__name__}"
                        f"{'' if not isinstance(image, torch.Tensor) else ' of dtype ' + str(image.dtype)}")
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise UserError(f"distort expects a 3×H×W or N×3×H×W image, got shape {tuple(image.shape)}")
    if kind not in DISTORTIONS:
        raise UserError(f"unknown distortion {kind!r}; expected one of {', '.join(DISTORTIONS)}")
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= 5:
        raise UserError(f"distortion level must be an integer in 1..5, got {level!r}")


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with edge replication (scipy's ``mode='nearest'``, ``truncate=3``)."""
    radius = int(3 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a, "RGB").save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    y = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)
    return y.to(device=x.device, dtype=x.dtype) / 255.0


def _luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _block(x: torch.Tensor, b: int) -> torch.Tensor:
    """Replace each b×b block by its mean (ragged blocks at the right/bottom edge average what they have)."""
    n, c, h, w = x.shape
    hp, wp = math.ceil(h / b) * b, math.ceil(w / b) * b
    ones = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
    s = F.avg_pool2d(F.pad(x, (0, wp - w, 0, hp - h)), b, divisor_override=1)
    cnt = F.avg_pool2d(F.pad(ones, (0, wp - w, 0, hp - h)), b, divisor_override=1)
    means = s / cnt
    return means.repeat_interleave(b, 2).repeat_interleave(b, 3)[..., :h, :w]


def distort(image: torch.Tensor, kind: str, level: int, seed: int = 0) -> torch.Tensor:
    """Apply distortion ``kind`` at severity ``level`` (1 mild … 5 severe).

    Args:
        image: 3×H×W or N×3×H×W float in [0, 1].
        kind: one of ``DISTORTIONS``: ``noise`` (additive Gaussian), ``blur`` (Gaussian), ``jpeg``
            (PIL re-encoding in memory), ``contrast`` (towards the mean grey), ``color`` (desaturation
            plus a warm colour cast) or ``block`` (b×b block means, i.e. blocking/pixelation).
        level: 1..5, parameters in ``LEVELS[kind]``.
        seed: seeds the noise (the only random distortion).

    Returns:
        The distorted image, same shape, dtype and device, clamped to [0, 1].
    """
    _check(image, kind, level)
    single = image.dim() == 3
    x = image.unsqueeze(0) if single else image
    p = LEVELS[kind][level - 1]
    if kind == "noise":
        g = torch.Generator().manual_seed(int(seed))
        y = x + p * torch.randn(x.shape, generator=g, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    elif kind == "blur":
        y = _gaussian_blur(x, p)
    elif kind == "jpeg":
        y = _jpeg(x, p)
    elif kind == "contrast":
        m = _luma(x).mean(dim=(2, 3), keepdim=True)
        y = m + p * (x - m)
    elif kind == "color":
        sat, cast = p
        grey = _luma(x)
        gain = torch.tensor([1 + cast, 1.0, 1 - cast], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        y = (grey + sat * (x - grey)) * gain
    else:
        y = _block(x, p)
    y = y.clamp(0, 1)
    return y[0] if single else y


def _region_mask(image: torch.Tensor, mask_or_box) -> torch.Tensor:
    """A float mask broadcastable to ``image`` (…×1×H×W) from a mask or an xyxy box (or N×4 boxes)."""
    h, w = image.shape[-2:]
    m = torch.as_tensor(mask_or_box) if not isinstance(mask_or_box, torch.Tensor) else mask_or_box
    if m.dim() >= 1 and m.shape[-1] == 4 and m.dim() <= 2 and tuple(m.shape[-2:]) != (h, w):
        boxes = m.to(torch.float64).reshape(-1, 4)
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise UserError(f"distort_region box must be x0, y0, x1, y1 with x1 >= x0 and y1 >= y0, "
                            f"got {boxes.tolist()}")
        xs = torch.arange(w, dtype=torch.float64) + 0.5
        ys = torch.arange(h, dtype=torch.float64) + 0.5
        inx = (xs[None] >= boxes[:, :1]) & (xs[None] < boxes[:, 2:3])  # pixel centre inside the box
        iny = (ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])
        m = (iny[:, :, None] & inx[:, None, :]).to(image.dtype)  # (B, H, W)
        if image.dim() == 3:
            if len(m) != 1:
                raise UserError(f"one image needs one box, got {len(m)}")
            return m.to(image.device)
        if len(m) not in (1, len(image)):
            raise UserError(f"{len(image)} images need 1 or {len(image)} boxes, got {len(m)}")
        return m[:, None].to(image.device)
    if tuple(m.shape[-2:]) != (h, w):
        raise UserError(f"distort_region mask must be H×W = {h}×{w} (or N×H×W), or an xyxy box, "
                        f"got shape {tuple(m.shape)}")
    m = m.to(device=image.device, dtype=image.dtype)
    if m.min() < 0 or m.max() > 1:
        raise UserError("distort_region mask values must lie in [0, 1]")
    if image.dim() == 4 and m.dim() == 3:
        if len(m) not in (1, len(image)):
            raise UserError(f"{len(image)} images need 1 or {len(image)} masks, got {len(m)}")
        m = m[:, None]
    return m


def distort_region(image: torch.Tensor, kind: str, level: int,
                   mask_or_box: torch.Tensor | np.ndarray | Sequence[float], seed: int = 0) -> torch.Tensor:
    """Distort only a region: ``image·(1−m) + distort(image)·m``.

    ``mask_or_box`` is an H×W (or N×H×W) mask, boolean or soft in [0, 1], or a box ``(x0, y0, x1, y1)`` in
    pixels (or N×4 boxes for a batch) covering the pixels whose centres fall inside it. The distortion is
    computed on the whole image first, so a blur inside the region uses its true surroundings.
    """
    _check(image, kind, level)
    m = _region_mask(image, mask_or_box)
    return image * (1 - m) + distort(image, kind, level, seed) * m
