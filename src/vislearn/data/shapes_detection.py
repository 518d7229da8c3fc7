"""``shapes_detection``: procedurally drawn scenes of several objects per image with exact boxes of their
visible pixels (drawing in ``_draw``), deterministic from their arguments and cached in-process.
Also importable from :mod:`vislearn.data.embedded`; batch with :func:`vislearn.data.collate.detection_collate`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from vislearn.data._checks import SPLIT_STREAM, check_int, check_split
from vislearn.errors import UserError

__all__ = ["ShapesDetection", "apply_detection_transform", "shapes_detection"]


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

    check_split("shapes_detection", split)
    check_int("num_images", num_images, 1)
    check_int("image_size", image_size, 16)
    check_int("num_categories", num_categories, 1, len(_draw.SHAPES))
    check_int("max_objects", max_objects, 0)
    streams = [0, 1] if split == "all" else [SPLIT_STREAM[split]]
    parts = [_shapes_detection_cached(st, num_images, image_size, num_categories, max_objects, int(seed))
             for st in streams]
    images = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
    boxes = [b for p in parts for b in p[1]]
    labels = [lb for p in parts for lb in p[2]]
    return ShapesDetection(images, boxes, labels, list(_draw.SHAPES[:num_categories]), transform)
