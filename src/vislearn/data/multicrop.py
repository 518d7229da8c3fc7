"""Multi-crop views with BYOL augmentation (DINO, MSN) and MSN's random patch masking.

Ruan et al., ICLR 2023, App. B.1: 2 global views of 224 px covering [0.25, 1] of the image area
and 10 local views of 96 px covering [0.08, 0.25], "BYOL augmentations"; every size, scale and count
is an argument here (a 32 px quick run uses, say, 32 and 16 px).

BYOL's augmentation (Grill et al. 2020, App. B), as DINO's ``DataAugmentationDINO``
applies it per view:

* random resized crop (bicubic), horizontal flip with p = 0.5, colour jitter (brightness 0.4,
  contrast 0.4, saturation 0.2, hue 0.1) with p = 0.8 and grayscale with p = 0.2 on every view;
* Gaussian blur, σ ∈ [0.1, 2]: p = 1.0 on global view 1, 0.1 on global view 2, 0.5 on local views;
* solarize (threshold 0.5): p = 0.2 on global view 2 only.

Choices of ours: the blur kernel is the odd size nearest 10% of the crop (BYOL's 23 px at 224;
DINO uses PIL's radius-based blur instead), at least 3; views beyond the second global one reuse
the second's settings; crops are bicubic (DINO), with antialiasing. There is no ``Normalize``: views
are float32 in [0, 1] and models normalise inside (DESIGN.md).

The transforms draw from torch's global generator (torchvision's v2 transforms take no generator);
``MultiCrop(...)(image, seed=s)`` reseeds it inside ``torch.random.fork_rng``, so a seed gives the
same views and the caller's generator state is restored afterwards. :class:`MultiCropDataset`
wraps a labelled dataset and seeds every sample's views from ``(seed, epoch, index)``: the views do
not depend on the process, the worker or the batch split (so several DDP processes, or gradient
accumulation, see exactly the crops one process with one large batch sees), and change from epoch
to epoch through a shared :class:`EpochClock` that the training loop advances.

:class:`TensorMultiCrop` makes the same kind of views for a whole batch of same-sized in-memory
images in one call (:mod:`vislearn.data.batch_views`: bilinear crops, a fixed jitter order,
parameters from Python's generator seeded per sample); :class:`MultiCropDataset` hands it the
DataLoader's batch through ``__getitems__``. At 32 px it costs about a tenth of the per-sample
torchvision path's CPU; the recipes use it for embedded data and keep torchvision for folders.

MSN masking (Assran et al. 2022, Sec. 3): the anchor view's patch tokens are randomly dropped
before the encoder; :func:`random_patch_mask` gives the boolean mask (``True`` = dropped) with
exactly ``N - int(N · (1 - ratio))`` dropped patches per sample (MSN's ``num_keep`` rule), and
:func:`keep_patches` gathers the kept tokens in their original order. MSN* drops 0.2 of the patches
(0.15 for ViT-B/8).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from vislearn.data.batch_views import ViewSpec, apply_view_params, draw_view_params
from vislearn.errors import UserError

__all__ = ["EpochClock", "MultiCrop", "MultiCropDataset", "TensorMultiCrop", "byol_view_transform", "collate_views",
           "keep_patches", "random_patch_mask", "view_seed"]


def _check_scale(name: str, scale: Sequence[float]) -> tuple[float, float]:
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise UserError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {tuple(scale)!r}")
    return float(scale[0]), float(scale[1])


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def _blur_kernel(size: int) -> int:
    k = max(3, int(round(size * 0.1)))
    return k if k % 2 else k + 1


def _clamp01(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0)


def byol_view_transform(size: int, scale: tuple[float, float], blur_p: float, solarize_p: float,
                        color_jitter_p: float = 0.8, grayscale_p: float = 0.2) -> v2.Compose:
    """One view's BYOL augmentation: crop, flip, jitter, grayscale, blur, solarize -> float32 [0, 1]."""
    _check_size("size", size)
    scale = _check_scale("scale", scale)
    for name, p in (("blur_p", blur_p), ("solarize_p", solarize_p), ("color_jitter_p", color_jitter_p),
                    ("grayscale_p", grayscale_p)):
        if not 0 <= p <= 1:
            raise UserError(f"{name} must be a probability in [0, 1], got {p!r}")
    return v2.Compose([
        v2.ToImage(),
        v2.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.ToDtype(torch.float32, scale=True),
        v2.Lambda(_clamp01),  # bicubic overshoot on float input: hue jitter turns values < 0 into NaN
        v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=color_jitter_p),
        v2.RandomGrayscale(grayscale_p),
        v2.RandomApply([v2.GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0))], p=blur_p),
        v2.RandomSolarize(0.5, p=solarize_p),
        v2.Lambda(_clamp01),  # bicubic overshoot on float input; a named function so workers can pickle it
        v2.ToPureTensor(),
    ])


class MultiCrop:
    """``num_global`` global and ``num_local`` local BYOL-augmented views of one image.

    Args:
        global_size, local_size: view sizes in pixels (paper 224 and 96).
        global_scale, local_scale: crop area ranges (paper (0.25, 1) and (0.08, 0.25)).
        num_global: global views (2; the teacher sees these).
        num_local: local views (paper 10; 0 disables multi-crop).

    ``__call__(image, seed=None) -> list`` of ``num_global + num_local`` float32 ``3×S×S`` tensors in
    [0, 1], global views first. ``image``: a PIL image, a uint8 tensor or a float tensor in [0, 1]
    (``C×H×W``).
    """

    def __init__(self, global_size: int = 224, local_size: int = 96, global_scale: tuple[float, float] = (0.25, 1.0),
                 local_scale: tuple[float, float] = (0.08, 0.25), num_global: int = 2, num_local: int = 10) -> None:
        self.global_size, self.local_size = _check_size("global_size", global_size), _check_size("local_size",
                                                                                                  local_size)
        self.global_scale = _check_scale("global_scale", global_scale)
        self.local_scale = _check_scale("local_scale", local_scale)
        if isinstance(num_global, bool) or not isinstance(num_global, int) or num_global < 1:
            raise UserError(f"num_global must be an int >= 1, got {num_global!r}")
        if isinstance(num_local, bool) or not isinstance(num_local, int) or num_local < 0:
            raise UserError(f"num_local must be an int >= 0, got {num_local!r}")
        self.num_global, self.num_local = num_global, num_local
        first = byol_view_transform(global_size, self.global_scale, blur_p=1.0, solarize_p=0.0)
        second = byol_view_transform(global_size, self.global_scale, blur_p=0.1, solarize_p=0.2)
        self.global_transforms = [first] + [second] * (num_global - 1)
        self.local_transform = byol_view_transform(local_size, self.local_scale, blur_p=0.5, solarize_p=0.0)

    def __repr__(self) -> str:
        return (f"MultiCrop(global={self.num_global}×{self.global_size}px {self.global_scale}, "
                f"local={self.num_local}×{self.local_size}px {self.local_scale})")

    def _views(self, image: Any) -> list[torch.Tensor]:
        if isinstance(image, torch.Tensor):
            if image.dim() != 3:
                raise UserError(f"MultiCrop expects one C×H×W image, got shape {tuple(image.shape)}")
            if torch.is_floating_point(image):
                lo, hi = float(image.min()), float(image.max())
                if lo < -1e-3 or hi > 1 + 1e-3:
                    raise UserError(f"float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        views = [t(image) for t in self.global_transforms]
        views += [self.local_transform(image) for _ in range(self.num_local)]
        return views

    def __call__(self, image: Any, seed: int | None = None) -> list[torch.Tensor]:
        if seed is None:
            return self._views(image)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed also seeds every accelerator's generator (which
            # fork_rng(devices=[]) would not restore) and costs ~10 ms a call in stack capture; this
            # runs once per sample
            torch.random.default_generator.manual_seed(seed)
            return self._views(image)


class TensorMultiCrop(MultiCrop):
    """:class:`MultiCrop` made for a whole batch of same-sized in-memory images at once.

    The views of :mod:`vislearn.data.batch_views` (bilinear crops, a fixed jitter order; see there
    for every difference from the per-sample torchvision path, which folder data keep). Each sample's
    parameters come from ``random.Random(seed)``, so a sample's views depend on its seed only, not on
    the batch. Extra knobs: ``color_jitter_p``, ``grayscale_p`` and ``jitter`` (brightness, contrast,
    saturation, hue strengths; BYOL's (0.4, 0.4, 0.2, 0.1)).

    ``batch_views(images (B, 3, H, W), seeds) -> list`` of ``(B, 3, S, S)`` views, global first;
    ``__call__(image, seed=None)`` is the one-sample case (``seed=None``: drawn from torch's generator).
    """

    def __init__(self, global_size: int = 224, local_size: int = 96, global_scale: tuple[float, float] = (0.25, 1.0),
                 local_scale: tuple[float, float] = (0.08, 0.25), num_global: int = 2, num_local: int = 10,
                 color_jitter_p: float = 0.8, grayscale_p: float = 0.2,
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)) -> None:
        super().__init__(global_size, local_size, global_scale, local_scale, num_global, num_local)
        kw = dict(color_jitter_p=color_jitter_p, grayscale_p=grayscale_p, jitter=tuple(jitter))
        first = ViewSpec(global_size, self.global_scale, 1.0, 0.0, blur_kernel=_blur_kernel(global_size), **kw)
        second = ViewSpec(global_size, self.global_scale, 0.1, 0.2, blur_kernel=_blur_kernel(global_size), **kw)
        local = ViewSpec(local_size, self.local_scale, 0.5, 0.0, blur_kernel=_blur_kernel(local_size), **kw)
        self.specs = [first] + [second] * (num_global - 1) + [local] * num_local

    def __repr__(self) -> str:
        return "Tensor" + super().__repr__()

    def batch_views(self, images: torch.Tensor, seeds: Sequence[int]) -> list[torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise UserError(f"TensorMultiCrop expects (B, 3, H, W) images, got shape {tuple(images.shape)}")
        if torch.is_floating_point(images):
            lo, hi = float(images.min()), float(images.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise UserError(f"float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        rngs = [random.Random(int(s)) for s in seeds]
        h, w = images.shape[-2:]
        return [apply_view_params(images, [draw_view_params(r, h, w, spec) for r in rngs], spec)
                for spec in self.specs]

    def __call__(self, image: Any, seed: int | None = None) -> list[torch.Tensor]:
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            raise UserError("TensorMultiCrop expects one C×H×W tensor image")
        seed = int(torch.randint(0, 2 ** 62, ())) if seed is None else seed
        return [v[0] for v in self.batch_views(image[None], [seed])]


class EpochClock:
    """The epoch whose views a :class:`MultiCropDataset` draws; the training loop sets ``epoch``.

    A plain object, picklable for DataLoader workers (created per epoch, so they see its value then).
    """

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        return f"EpochClock(epoch={self.epoch})"


def view_seed(seed: int, epoch: int, index: int) -> int:
    """The generator seed of sample ``index``'s views at ``epoch`` (distinct for distinct triples in range)."""
    return ((int(seed) * 1_000_003 + int(epoch)) * 1_000_000_007 + int(index)) % (2 ** 63)


class MultiCropDataset(Dataset):
    """``(views, label)`` of every ``(image, label)`` of ``base``, views seeded by (seed, epoch, index).

    Args:
        base: a map-style dataset of ``(image, label)`` pairs (or bare images: label -1).
        multicrop: the :class:`MultiCrop` that makes the views.
        seed: the run's seed.
        clock: the :class:`EpochClock` giving the epoch (default: a fresh one at epoch 0).

    Batch with :func:`collate_views`.
    """

    def __init__(self, base: Dataset, multicrop: MultiCrop, seed: int = 0, clock: EpochClock | None = None) -> None:
        if not isinstance(multicrop, MultiCrop):
            raise UserError(f"multicrop must be a MultiCrop, got {type(multicrop).__name__}")
        self.base, self.multicrop, self.seed = base, multicrop, int(seed)
        if hasattr(base, "distributed_sampler"):  # a packed dataset's shard order (vislearn.data.shards)
            self.distributed_sampler = base.distributed_sampler
        self.clock = clock if clock is not None else EpochClock()

    def __len__(self) -> int:
        return len(self.base)

    def _item(self, i: int) -> tuple[Any, int]:
        item = self.base[i]
        image, label = item if isinstance(item, tuple) else (item, -1)
        return image, int(label)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], int]:
        image, label = self._item(i)
        return self.multicrop(image, seed=view_seed(self.seed, self.clock.epoch, i)), label

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[list[torch.Tensor], int]]:
        """A DataLoader batch: one batched call of a :class:`TensorMultiCrop`, else sample by sample."""
        if not isinstance(self.multicrop, TensorMultiCrop):
            return [self[i] for i in indices]
        images, labels = zip(*(self._item(i) for i in indices), strict=True)
        seeds = [view_seed(self.seed, self.clock.epoch, i) for i in indices]
        views = self.multicrop.batch_views(torch.stack(images), seeds)
        return [([v[k] for v in views], labels[k]) for k in range(len(indices))]


def collate_views(batch: Sequence[Any]) -> Any:
    """Stack a batch of multi-crop samples view by view.

    Items are lists of views, or ``(views, label)`` pairs; returns a list of ``(B, 3, S, S)`` tensors
    (one per view), with a ``(B,)`` label tensor beside it for pairs.
    """
    if not batch:
        raise UserError("collate_views: empty batch")
    if isinstance(batch[0], tuple):
        views, labels = zip(*batch, strict=True)
        return collate_views(list(views)), torch.as_tensor(labels)
    n = len(batch[0])
    if any(len(item) != n for item in batch):
        raise UserError(f"collate_views: samples have different view counts {sorted({len(i) for i in batch})}")
    return [torch.stack([item[v] for item in batch]) for v in range(n)]


def random_patch_mask(num_patches: int | tuple[int, int], mask_ratio: float, batch_size: int = 1,
                      generator: torch.Generator | None = None, device: torch.device | str | None = None
                      ) -> torch.Tensor:
    """``(batch, N)`` boolean mask, ``True`` for the dropped patches, the same count in every row.

    ``num_patches``: ``N`` or a ``(rows, cols)`` patch grid (flattened row-major, as a ViT orders
    its tokens). ``mask_ratio`` in [0, 1): ``N - int(N · (1 - ratio))`` patches are dropped per
    sample, chosen uniformly without replacement with ``generator``.
    """
    n = math.prod(num_patches) if isinstance(num_patches, tuple) else num_patches
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"num_patches must be a positive int or (rows, cols), got {num_patches!r}")
    if not isinstance(mask_ratio, (int, float)) or not 0 <= mask_ratio < 1:
        raise UserError(f"mask_ratio must be in [0, 1), got {mask_ratio!r}")
    _check_size("batch_size", batch_size)
    num_keep = max(1, int(n * (1 - mask_ratio)))
    gen_device = generator.device if generator is not None else "cpu"
    scores = torch.rand(batch_size, n, generator=generator, device=gen_device)
    order = scores.argsort(dim=1)
    mask = torch.ones(batch_size, n, dtype=torch.bool, device=gen_device)
    mask.scatter_(1, order[:, :num_keep], False)
    return mask.to(device) if device is not None else mask


def keep_patches(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The kept tokens ``(B, N_keep, D)`` of ``tokens`` ``(B, N, D)``, in their original order."""
    if tokens.dim() != 3 or mask.shape != tokens.shape[:2] or mask.dtype != torch.bool:
        raise UserError(f"keep_patches needs tokens (B, N, D) and a boolean mask (B, N), got "
                        f"{tuple(tokens.shape)} and {tuple(mask.shape)} {mask.dtype}")
    keep = (~mask).sum(1)
    if not bool((keep == keep[0]).all()):
        raise UserError("keep_patches: every row of the mask must keep the same number of patches")
    idx = (~mask).nonzero()[:, 1].reshape(tokens.shape[0], -1)  # row-major: sorted within each row
    return tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[2]))
