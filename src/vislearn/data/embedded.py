"""Embedded datasets that need no download: ``digits``, ``shapes`` and ``photos``.

* ``digits``: scikit-learn's 8×8 handwritten digits.
* ``shapes_classification`` / ``shapes_multilabel`` / ``shapes_detection`` (batch with
  :func:`vislearn.data.collate.detection_collate`):
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

_SPLIT_STREAM = {"train": 0, "test": 1}


def _check_split(name: str, split: str) -> None:
    if split not in ("train", "test", "all"):
        raise UserError(f"{name} split must be train, test or all, got {split!r}")


def _check_int(name: str, value: int, low: int, high: int | None = None) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise UserError(f"{name} must be an integer {bound}, got {value!r}")


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
    _check_split("shapes_classification", split)
    _check_int("num_classes", num_classes, 1, len(SHAPE_CLASSES))
    _check_int("samples_per_class", samples_per_class, 1)
    _check_int("image_size", image_size, 8)
    streams = [0, 1] if split == "all" else [_SPLIT_STREAM[split]]
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
        _check_int("photos size", size, 1)
    return {n: _photo(n, None if size is None else int(size)) for n in names}


def photo_crops(num_crops: int = 256, crop_size: int = 64, names: list[str] | tuple[str, ...] | None = None,
                scale: tuple[float, float] = (0.1, 1.0), seed: int = 0, photo_size: int = 256,
                transform: Callable | None = None) -> TensorImageDataset:
    """Random square crops of the sample photos, resized to ``crop_size`` (e.g. for distortion studies).

    Each crop picks a photo uniformly (target = its index in ``names``), a side of ``sqrt(area)`` of the
    photo's short side with area uniform in ``scale``, and a uniform position; deterministic from ``seed``.
    """
    _check_int("num_crops", num_crops, 1)
    _check_int("crop_size", crop_size, 1)
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
    _check_split("shapes_multilabel", split)
    _check_int("max_labels", max_labels, 1)
    _check_int("num_labels", num_labels, max_labels, len(SHAPE_CLASSES))
    _check_int("num_samples", num_samples, 1)
    _check_int("image_size", image_size, 8 * int(np.ceil(np.sqrt(max_labels))))
    if not zipf_exponent >= 0:
        raise UserError(f"zipf_exponent must be >= 0, got {zipf_exponent!r}")
    streams = [0, 1] if split == "all" else [_SPLIT_STREAM[split]]
    parts = [_shapes_multilabel_arrays(st, num_labels, num_samples, image_size, float(zipf_exponent), max_labels,
                                       int(seed)) for st in streams]
    x = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
    y = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
    return TensorImageDataset(x, y, transform, classes=SHAPE_CLASSES[:num_labels])


# ----------------------------------------------------------------------------------------------------
# shapes_detection: several objects per image with exact boxes of their visible pixels
# ----------------------------------------------------------------------------------------------------

def apply_detection_transform(transform: Callable, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Call a torchvision.transforms.v2 transform on ``(image, target)`` with the boxes wrapped as xyxy
    ``BoundingBoxes`` (so geometric transforms move them), and unwrap them again afterwards."""
    from torchvision import tv_tensors

    h, w = image.shape[-2:]
    target = dict(target)
    target["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
    image, target = transform(tv_tensors.Image(image), target)
    target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
    return image.as_subclass(torch.Tensor), target


class ShapesDetection(Dataset):
    """Detection images in memory: items ``(image 3×H×W in [0, 1], {"boxes": K×4 float xyxy pixels,
    "labels": K long (0-based category), "image_id": long scalar})``.

    ``transform(image, target)`` (e.g. torchvision.transforms.v2) is applied with the boxes wrapped as
    ``BoundingBoxes``. Use :func:`vislearn.data.collate.detection_collate` with a DataLoader.
    """

    def __init__(self, images: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor],
                 classes: list[str], transform: Callable | None = None) -> None:
        if not len(images) == len(boxes) == len(labels):
            raise UserError(f"{len(images)} images, {len(boxes)} box sets and {len(labels)} label sets differ")
        self.images, self.boxes, self.labels, self.classes = images, boxes, labels, classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        target = {"boxes": self.boxes[i], "labels": self.labels[i], "image_id": torch.tensor(i)}
        if self.transform is not None:
            image, target = apply_detection_transform(self.transform, image, target)
        return image, target


def _top_object(pix: torch.Tensor, obj: torch.Tensor, use: torch.Tensor, npix: int) -> torch.Tensor:
    """Per pixel, the index of the top object among those with ``use``, or -1. Objects are numbered by
    image then slot, so within an image the largest index drawn on a pixel is the one on top."""
    sel = use[obj]
    return torch.full((npix,), -1, dtype=torch.long).scatter_reduce(0, pix[sel], obj[sel], "amax")


def _generate_detection(stream: int, num_images: int, image_size: int, num_categories: int, max_objects: int,
                        seed: int, min_visible: float = 0.4, return_masks: bool = False):
    """Draw the detection scenes. Returns images, per-image boxes and labels, and when ``return_masks``
    also the backgrounds and each kept object's visible mask (for tests)."""
    from vislearn.data import _draw

    rng = np.random.default_rng([seed, stream, 0xDE7])
    n, k, s = num_images, max_objects, image_size
    count = rng.integers(0, k + 1, n)
    kind = rng.integers(0, num_categories, (n, k))
    colour = rng.integers(0, len(_draw.COLOURS), (n, k))
    radius = np.exp(rng.uniform(np.log(0.05), np.log(0.3), (n, k))) * s  # small to large objects
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), (n, k)))  # 1:2 .. 2:1 stretch
    angle = rng.uniform(0, 2 * np.pi, (n, k))
    cx = rng.uniform(0, s, (n, k))  # objects may be cut by the image border
    cy = rng.uniform(0, s, (n, k))
    valid = np.arange(k)[None] < count[:, None]
    images = _draw.textured_backgrounds(rng, n, s)
    background = images.clone() if return_masks else None
    cols = _draw.jittered_colours(rng, colour.reshape(-1)).view(n, k, 3)
    boxes: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    ys = torch.arange(s).view(1, s, 1).expand(-1, -1, s).reshape(-1)
    xs = torch.arange(s).view(1, 1, s).expand(-1, s, -1).reshape(-1)
    chunk = max(1, (1 << 22) // (k * s * s // 2 + 1))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        ii, jj = np.nonzero(valid[a:b])  # objects of this chunk, ordered by image then slot
        m = len(ii)
        if m == 0:
            boxes += [torch.zeros(0, 4) for _ in range(b - a)]
            labels += [torch.zeros(0, dtype=torch.long) for _ in range(b - a)]
            masks += [torch.zeros(0, s, s, dtype=torch.bool) for _ in range(b - a)] if return_masks else []
            continue
        drawn = _draw.object_masks(kind[ii + a, jj], cx[ii + a, jj], cy[ii + a, jj], radius[ii + a, jj],
                                   angle[ii + a, jj], aspect[ii + a, jj], s)
        obj_img = torch.from_numpy(ii)
        obj, py, px = drawn.nonzero(as_tuple=True)
        pix = obj_img[obj] * (s * s) + py * s + px
        area = torch.bincount(obj, minlength=m)

        # occlusion: an object is kept when at least ``min_visible`` of it (and 4 pixels) shows; dropped
        # objects are not drawn at all (which only uncovers the others), so every drawn pixel is in a box
        ids = _top_object(pix, obj, torch.ones(m, dtype=torch.bool), (b - a) * s * s)
        nvis = torch.bincount(ids + 1, minlength=m + 1)[1:]
        keep = (nvis >= 4) & (nvis >= min_visible * area)
        ids = _top_object(pix, obj, keep, (b - a) * s * s).view(b - a, -1)
        flat = ids.flatten()
        on = flat >= 0
        obj, py, px = flat[on], ys.repeat(b - a)[on], xs.repeat(b - a)[on]
        y0 = torch.full((m,), s).scatter_reduce(0, obj, py, "amin")
        y1 = torch.full((m,), -1).scatter_reduce(0, obj, py, "amax") + 1
        x0 = torch.full((m,), s).scatter_reduce(0, obj, px, "amin")
        x1 = torch.full((m,), -1).scatter_reduce(0, obj, px, "amax") + 1
        bx = torch.stack([x0, y0, x1, y1], 1).float()
        col = cols[torch.from_numpy(ii + a), torch.from_numpy(jj)]  # (m, 3)
        img = images[a:b].view(b - a, 3, -1)
        img.copy_(torch.where(ids[:, None] >= 0, col[ids.clamp(min=0)].permute(0, 2, 1), img))
        lab = torch.from_numpy(kind[ii + a, jj]).long()
        starts = np.searchsorted(ii, np.arange(b - a + 1))
        for r in range(b - a):
            sl = slice(int(starts[r]), int(starts[r + 1]))
            kr = keep[sl]
            boxes.append(bx[sl][kr].contiguous())
            labels.append(lab[sl][kr].contiguous())
            if return_masks:
                ob = torch.arange(sl.start, sl.stop)[kr]
                masks.append(ids[r].view(1, s, s) == ob[:, None, None])
    if return_masks:
        return images, boxes, labels, background, masks
    return images, boxes, labels


@functools.lru_cache(maxsize=8)
def _shapes_detection_cached(stream: int, num_images: int, image_size: int, num_categories: int, max_objects: int,
                             seed: int):
    return _generate_detection(stream, num_images, image_size, num_categories, max_objects, seed)


def shapes_detection(split: str = "train", num_images: int = 500, image_size: int = 128, num_categories: int = 5,
                     max_objects: int = 10, seed: int = 0, transform: Callable | None = None) -> ShapesDetection:
    """Procedural detection scenes: 0..``max_objects`` solid shapes per image (uniform count), each of a
    category among the first ``num_categories`` of ``_draw.SHAPES`` (circle, triangle, square, …) in a random
    palette colour, with a log-uniform size (half-extent 5–30 % of the side), a 1:2..2:1 stretch, any
    rotation and any position (objects may be cut by the border), on a textured background.

    Later objects occlude earlier ones; an object whose visible part is under 40 % of its area (or under 4
    pixels) is not drawn. Boxes are the exact pixel extents of each object's visible pixels, xyxy with the
    pixel-edge convention (a box ``[x0, y0, x1, y1]`` covers columns x0..x1-1 and rows y0..y1-1).

    Args:
        split: ``"train"``/``"test"`` (independent draws of ``num_images`` each) or ``"all"`` (both).
        num_categories: 1..10.
        seed: same arguments, same scenes (cached in-process: treat the tensors as read-only).
    """
    from vislearn.data import _draw

    _check_split("shapes_detection", split)
    _check_int("num_images", num_images, 1)
    _check_int("image_size", image_size, 16)
    _check_int("num_categories", num_categories, 1, len(_draw.SHAPES))
    _check_int("max_objects", max_objects, 0)
    streams = [0, 1] if split == "all" else [_SPLIT_STREAM[split]]
    parts = [_shapes_detection_cached(st, num_images, image_size, num_categories, max_objects, int(seed))
             for st in streams]
    images = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
    boxes = [b for p in parts for b in p[1]]
    labels = [lb for p in parts for lb in p[2]]
    return ShapesDetection(images, boxes, labels, list(_draw.SHAPES[:num_categories]), transform)
