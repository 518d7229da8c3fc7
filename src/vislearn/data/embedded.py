"""Embedded datasets that need no download: ``digits``, ``shapes`` and ``photos``.

* ``digits``: scikit-learn's 8×8 handwritten digits.
* ``shapes_classification`` / ``shapes_multilabel`` / ``shapes_detection`` (from
  :mod:`vislearn.data.shapes_detection`; batch with :func:`vislearn.data.collate.detection_collate`):
  procedurally drawn scenes of 10 shapes × 8 colours × 2 fills (drawing in ``_draw``), cached in-process.
* ``photos`` / ``photo_crops``: scikit-image's bundled sample photos.

All return images as float tensors in [0, 1], NCHW, and are deterministic from their arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vislearn.data._checks import SPLIT_STREAM, check_int, check_split
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

    def get_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at ``indices`` stacked, equal to collating ``[self[i] for i in indices]``.

        One indexing op instead of a Python call per sample: the engine uses it for in-memory data,
        where the per-sample fetch and collate cost as much as a small model's step. A transform is
        still applied per sample, in the same order (so random augmentations draw the same numbers).
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[idx]
        if self.transform is not None:
            x = torch.stack([self.transform(xi) for xi in x])
        return x, self.targets[idx]


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


# ----------------------------------------------------------------------------------------------------
# shapes: procedurally drawn scenes (see ``_draw``), deterministic from their arguments, cached
# ----------------------------------------------------------------------------------------------------

def _shape_classes() -> list[tuple[int, int, int]]:
    """All (shape, colour, fill) combinations in a fixed shuffled order, so that the first
    ``num_classes`` mix shapes, colours and fills instead of varying only one of them."""
    from vislearn.data import _draw

    combos = [(s, c, f) for f in range(len(_draw.FILLS)) for c in range(len(_draw.COLOURS))
              for s in range(len(_draw.SHAPES))]
    order = np.random.default_rng(20240611).permutation(len(combos))
    return [combos[i] for i in order]


def _class_name(combo: tuple[int, int, int]) -> str:
    from vislearn.data import _draw

    s, c, f = combo
    return f"{_draw.FILLS[f]} {_draw.COLOURS[c]} {_draw.SHAPES[s]}"


SHAPE_CLASSES: list[str] = [_class_name(c) for c in _shape_classes()]
"""Every class ``shapes_classification`` can draw, in index order (160 = 10 shapes × 8 colours × 2 fills)."""

def _render(rng: np.random.Generator, images: torch.Tensor, img_idx: np.ndarray, kind: np.ndarray,
            colour: np.ndarray, outline: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray,
            angle: np.ndarray, aspect: np.ndarray, supersample: int = 2) -> None:
    """Composite objects onto ``images`` in place with anti-aliased edges. An image may receive several
    objects: they are drawn in rounds holding at most one object per image, later objects on top."""
    from vislearn.data import _draw

    size = images.shape[-1]
    cols = _draw.jittered_colours(rng, colour)
    order = np.argsort(img_idx, kind="stable")
    first = np.searchsorted(img_idx[order], img_idx[order])
    rank = np.empty(len(img_idx), dtype=np.int64)
    rank[order] = np.arange(len(img_idx)) - first  # how many earlier objects share the image
    chunk = max(1, (1 << 22) // (size * size * supersample * supersample))
    for r in range(int(rank.max(initial=-1)) + 1):
        sel = np.nonzero(rank == r)[0]
        for a in range(0, len(sel), chunk):
            sl = sel[a:a + chunk]
            cov = _draw.object_masks(kind[sl], cx[sl], cy[sl], radius[sl], angle[sl], aspect[sl], size,
                                     supersample, outline[sl]).unsqueeze(1)
            idx = torch.from_numpy(img_idx[sl])
            images[idx] = images[idx] * (1 - cov) + cols[sl, :, None, None] * cov


@functools.lru_cache(maxsize=16)
def _shapes_classification_arrays(stream: int, num_classes: int, samples_per_class: int, image_size: int,
                                  seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from vislearn.data import _draw

    rng = np.random.default_rng([seed, stream, 0x5A7E])
    n = num_classes * samples_per_class
    y = np.repeat(np.arange(num_classes), samples_per_class)
    combos = np.array(_shape_classes()[:num_classes])[y]
    images = _draw.textured_backgrounds(rng, n, image_size)
    s = float(image_size)
    radius = rng.uniform(0.26, 0.42, n) * s
    cx = rng.uniform(radius, s - radius)
    cy = rng.uniform(radius, s - radius)
    angle = rng.uniform(0, 2 * np.pi, n)
    aspect = np.exp(rng.uniform(-0.15, 0.15, n))
    _render(rng, images, np.arange(n), combos[:, 0], combos[:, 1], combos[:, 2] == 1, cx, cy, radius, angle,
            aspect)
    perm = torch.from_numpy(rng.permutation(n))
    return images[perm].contiguous(), torch.from_numpy(y)[perm].contiguous()


def shapes_classification(split: str = "train", num_classes: int = 10, samples_per_class: int = 100,
                          image_size: int = 32, seed: int = 0, transform: Callable | None = None,
                          ) -> TensorImageDataset:
    """Procedural shape classification: each class is one (fill, colour, shape) combination.

    10 shapes × 8 colours × 2 fills (solid, outline) give ``len(SHAPE_CLASSES) == 160`` classes; the first
    ``num_classes`` of a fixed shuffled order are used. Each image is one shape at a random position,
    scale (26–42 % of the side as half-extent), rotation and slight stretch, with a jittered colour, on a
    textured low-saturation background, anti-aliased (2× supersampling).

    Args:
        split: ``"train"`` and ``"test"`` are independent draws (disjoint samples of the same classes),
            ``samples_per_class`` each; ``"all"`` is train followed by test.
        num_classes: 1..160.
        samples_per_class: images per class in each split.
        image_size: side in pixels (>= 8).
        seed: the same arguments give the same images; the arrays are cached in-process, so treat the
            returned ``.images`` as read-only.

    Returns:
        ``TensorImageDataset`` with images N×3×S×S in [0, 1], long targets and ``.classes`` names.
    """
    check_split("shapes_classification", split)
    check_int("num_classes", num_classes, 1, len(SHAPE_CLASSES))
    check_int("samples_per_class", samples_per_class, 1)
    check_int("image_size", image_size, 8)
    streams = [0, 1] if split == "all" else [SPLIT_STREAM[split]]
    parts = [_shapes_classification_arrays(st, num_classes, samples_per_class, image_size, int(seed))
             for st in streams]
    x = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
    y = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
    return TensorImageDataset(x, y, transform, classes=SHAPE_CLASSES[:num_classes])


# ----------------------------------------------------------------------------------------------------
# photos: scikit-image's bundled sample images (no download)
# ----------------------------------------------------------------------------------------------------

PHOTO_NAMES: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "text", "page", "camera", "coins",
                                "moon", "clock", "immunohistochemistry", "hubble_deep_field", "colorwheel",
                                "grass", "gravel", "brick")
"""Every name ``photos`` accepts (all ship with scikit-image)."""

DEFAULT_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "text", "page", "camera",
                                   "coins", "moon", "clock")
"""What ``photos()`` returns by default: a face (astronaut), objects, a cat, text and grey scenes."""


@functools.lru_cache(maxsize=64)
def _photo(name: str, size: int | None) -> torch.Tensor:
    import warnings

    import skimage.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = np.asarray(getattr(skimage.data, name)())
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    x = torch.from_numpy(np.ascontiguousarray(a)).float() / 255.0
    x = x.unsqueeze(0).expand(3, -1, -1) if x.dim() == 2 else x[..., :3].permute(2, 0, 1)
    if size is not None:
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        hw = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x[None], size=hw, mode="bilinear", antialias=scale < 1, align_corners=False)[0]
    return x.clamp(0, 1).contiguous()


def photos(names: list[str] | tuple[str, ...] | str | None = None, size: int | None = None,
           ) -> dict[str, torch.Tensor]:
    """scikit-image sample photos as 3×H×W float tensors in [0, 1] (grey ones repeated to 3 channels).

    Args:
        names: a name or list from ``PHOTO_NAMES``; ``None`` gives ``DEFAULT_PHOTOS``.
        size: resize so the short side is ``size`` pixels (bilinear, antialiased when shrinking).

    Returns:
        ``{name: image}`` in the order asked; the tensors are cached, treat them as read-only.
    """
    if names is None:
        names = DEFAULT_PHOTOS
    elif isinstance(names, str):
        names = (names,)
    unknown = [n for n in names if n not in PHOTO_NAMES]
    if unknown:
        raise UserError(f"unknown photo(s) {', '.join(map(repr, unknown))}; available: {', '.join(PHOTO_NAMES)}")
    if size is not None:
        check_int("photos size", size, 1)
    return {n: _photo(n, None if size is None else int(size)) for n in names}


def photo_crops(num_crops: int = 256, crop_size: int = 64, names: list[str] | tuple[str, ...] | None = None,
                scale: tuple[float, float] = (0.1, 1.0), seed: int = 0, photo_size: int = 256,
                transform: Callable | None = None) -> TensorImageDataset:
    """Random square crops of the sample photos, resized to ``crop_size`` (e.g. for distortion studies).

    Each crop picks a photo uniformly (target = its index in ``names``), a side of ``sqrt(area)`` of the
    photo's short side with area uniform in ``scale``, and a uniform position; deterministic from ``seed``.
    """
    check_int("num_crops", num_crops, 1)
    check_int("crop_size", crop_size, 1)
    if not 0 < scale[0] <= scale[1] <= 1:
        raise UserError(f"photo_crops scale must satisfy 0 < low <= high <= 1, got {scale}")
    ims = photos(names, size=photo_size)
    keys = list(ims)
    rng = np.random.default_rng([seed, 0xC80B])
    which = rng.integers(0, len(keys), num_crops)
    frac = np.sqrt(rng.uniform(scale[0], scale[1], num_crops))
    out = torch.empty(num_crops, 3, crop_size, crop_size)
    for i in range(num_crops):
        img = ims[keys[which[i]]]
        h, w = img.shape[-2:]
        side = max(1, int(round(frac[i] * min(h, w))))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        crop = img[:, y0:y0 + side, x0:x0 + side]
        out[i] = F.interpolate(crop[None], size=(crop_size, crop_size), mode="bilinear",
                               antialias=side > crop_size, align_corners=False)[0]
    return TensorImageDataset(out.clamp_(0, 1), torch.from_numpy(which), transform, classes=keys)


# ----------------------------------------------------------------------------------------------------
# shapes_multilabel: several shapes per image, Zipf-skewed label frequencies
# ----------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _shapes_multilabel_arrays(stream: int, num_labels: int, num_samples: int, image_size: int,
                              zipf_exponent: float, max_labels: int, seed: int,
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    from vislearn.data import _draw

    rng = np.random.default_rng([seed, stream, 0x3117])
    n, s = num_samples, float(image_size)
    count = rng.integers(1, max_labels + 1, n)
    # k labels without replacement, P(label i) ∝ (i + 1)^-zipf_exponent: Gumbel top-k (vectorised)
    logits = -zipf_exponent * np.log(np.arange(1, num_labels + 1))
    keys = logits[None] + rng.gumbel(size=(n, num_labels))
    labels = np.argsort(-keys, axis=1)[:, :max_labels]
    # each object gets its own grid cell, so no label is hidden by another object
    g = int(np.ceil(np.sqrt(max_labels)))
    cells = np.argsort(rng.random((n, g * g)), axis=1)[:, :max_labels]
    cell = s / g
    radius = rng.uniform(0.3, 0.46, (n, max_labels)) * cell
    cx = (cells % g) * cell + rng.uniform(radius, cell - radius)
    cy = (cells // g) * cell + rng.uniform(radius, cell - radius)
    angle = rng.uniform(0, 2 * np.pi, (n, max_labels))
    aspect = np.exp(rng.uniform(-0.15, 0.15, (n, max_labels)))
    valid = np.arange(max_labels)[None] < count[:, None]
    combos = np.array(_shape_classes()[:num_labels])[labels[valid]]
    images = _draw.textured_backgrounds(rng, n, image_size)
    img_idx = np.nonzero(valid)[0]
    _render(rng, images, img_idx, combos[:, 0], combos[:, 1], combos[:, 2] == 1, cx[valid], cy[valid],
            radius[valid], angle[valid], aspect[valid])
    targets = torch.zeros(n, num_labels)
    targets[torch.from_numpy(img_idx), torch.from_numpy(labels[valid])] = 1.0
    return images, targets


def shapes_multilabel(split: str = "train", num_labels: int = 20, num_samples: int = 2000, image_size: int = 64,
                      zipf_exponent: float = 1.0, max_labels: int = 4, seed: int = 0,
                      transform: Callable | None = None) -> TensorImageDataset:
    """Multi-label scenes: 1..``max_labels`` shapes per image, each a label (a ``SHAPE_CLASSES`` combination).

    Label ``i`` is drawn with weight ``(i + 1) ** -zipf_exponent`` (without replacement within an image),
    so label 0 is the most frequent and the last the rarest, as in long-tailed tag vocabularies (Gong et
    al. 2013, the multilabel paper, uses Flickr tags whose frequency is Zipf-like). The number of labels
    per image is uniform in 1..``max_labels``; objects sit in distinct cells of a ⌈√max_labels⌉² grid so
    none is occluded.

    Args:
        split: ``"train"``/``"test"`` (independent draws, ``num_samples`` each) or ``"all"`` (both).
        num_labels: vocabulary size, ``max_labels``..160.
        zipf_exponent: skew (0 = uniform).

    Returns:
        ``TensorImageDataset`` with targets a float multi-hot N×``num_labels`` matrix, ``.classes`` names.
    """
    check_split("shapes_multilabel", split)
    check_int("max_labels", max_labels, 1)
    check_int("num_labels", num_labels, max_labels, len(SHAPE_CLASSES))
    check_int("num_samples", num_samples, 1)
    check_int("image_size", image_size, 8 * int(np.ceil(np.sqrt(max_labels))))
    if not zipf_exponent >= 0:
        raise UserError(f"zipf_exponent must be >= 0, got {zipf_exponent!r}")
    streams = [0, 1] if split == "all" else [SPLIT_STREAM[split]]
    parts = [_shapes_multilabel_arrays(st, num_labels, num_samples, image_size, float(zipf_exponent), max_labels,
                                       int(seed)) for st in streams]
    x = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
    y = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
    return TensorImageDataset(x, y, transform, classes=SHAPE_CLASSES[:num_labels])


# shapes_detection lives in its own module; these names stay importable from here (README)
from vislearn.data.shapes_detection import ShapesDetection, apply_detection_transform, shapes_detection  # noqa: E402

__all__ = ["DEFAULT_PHOTOS", "PHOTO_NAMES", "SHAPE_CLASSES", "ShapesDetection", "TensorImageDataset",
           "apply_detection_transform", "digits", "photo_crops", "photos", "shapes_classification",
           "shapes_detection", "shapes_multilabel"]
