"""On-disk datasets: image files, ImageFolder trees, COCO-json detection and a multi-label CSV.

Every reader returns images as float tensors 3×H×W in [0, 1] (RGB). The data path keeps 8-bit images
as ``uint8`` until the transform has cropped and resized them (:func:`read_transformed`): a reader's
``transform`` receives a ``uint8`` tensor for an 8-bit file (a float one for 16-bit/float files) and
its output is converted to float last, so a full-resolution image is never turned into float32. The
readers report user mistakes as one
``UserError`` naming the file: a corrupt or unreadable image, an empty or missing dataset path, a malformed
annotation file. Individually bad COCO annotations are skipped, counted in ``.skipped`` and reported in
one warning.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vislearn.data._checks import path_inside
from vislearn.errors import UserError

__all__ = ["IMAGE_EXTENSIONS", "load_image", "read_transformed", "apply_image_transform", "ImageFolderDataset",
           "image_folder_splits", "CocoDetection", "MultilabelCSV"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file (any format PIL reads) as an RGB float tensor 3×H×W in [0, 1].

    8-bit images are divided by 255; 16-bit, 32-bit integer and float images keep their precision
    (:mod:`vislearn.data.decode`). More pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` is refused before
    decoding.

    Raises:
        UserError: naming the path, when it is missing, not a file, truncated, not an image, too large,
            or holds samples outside the [0, 1] scale.
    """
    from vislearn.data.decode import read_image, to_float_image

    return to_float_image(read_image(path))


def apply_image_transform(image: torch.Tensor, transform: Callable | None, to_float: bool = True) -> torch.Tensor:
    """``transform(image)`` (skipped when None), then a ``uint8`` result converted to float in [0, 1]
    (``to_float=False``: left as it is, for a later step that crops it, e.g. multi-crop views)."""
    from vislearn.data.decode import to_float_image

    if transform is not None:
        image = transform(image)
    return to_float_image(image) if to_float and isinstance(image, torch.Tensor) else image


def read_transformed(path: str | os.PathLike, transform: Callable | None, to_float: bool = True) -> torch.Tensor:
    """The image at ``path`` decoded to ``uint8`` (8-bit files), through ``transform``, then as float in
    [0, 1]: the crop and resize run on ``uint8`` and the conversion to float comes last."""
    from vislearn.data.decode import read_image

    return apply_image_transform(read_image(path), transform, to_float)


# --------------------------------------------------------------------------------------- ImageFolder

def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


class ImageFolderDataset(Dataset):
    """``root/CLASS/IMAGE`` trees (torchvision's ImageFolder layout) read with ``load_image``.

    Items are ``(transform(image), class index)``; ``.classes`` (sorted folder names unless ``classes`` is
    given, e.g. a training split's classes for its validation split), ``.class_to_idx``, ``.samples``
    (path, index) and ``.targets``. Setting ``float_output = False`` leaves a ``uint8`` result of the
    transform as it is (for a wrapper that crops it and converts last, e.g. multi-crop views).
    """

    float_output = True

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None,
                 classes: Sequence[str] | None = None) -> None:
        from torchvision.datasets.folder import make_dataset

        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"dataset path {self.root} does not exist or is not a folder "
                            f"(expected {self.root}/CLASS/IMAGE files)")
        found = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        if classes is None:
            classes = found
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        present = {c: i for c, i in self.class_to_idx.items() if c in found}
        self.samples = make_dataset(str(self.root), present, is_valid_file=_is_image, allow_empty=True) \
            if present else []
        if not self.samples:
            raise UserError(f"dataset path {self.root} holds no images: expected {self.root}/CLASS/IMAGE with "
                            f"extensions {', '.join(IMAGE_EXTENSIONS)}"
                            + (f" (class folders found: {', '.join(found[:5])})" if found else
                               " (no class folders found)"))
        self.targets = [t for _, t in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        return read_transformed(path, self.transform, self.float_output), target


def image_folder_splits(root: str | os.PathLike, image_size: int, train_tf: Callable | None = None,
                        eval_tf: Callable | None = None) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """``(train, val)`` from ``root/train/CLASS/*`` and ``root/val/CLASS/*``, the val split indexed with the
    train split's classes. Transforms default to ``train_transform(image_size)`` and
    ``eval_transform(image_size)``. A packed imagefolder dataset (:mod:`vislearn.data.shards`: a folder
    with a shard ``index.json`` or a ``.tar`` pattern) gives its ``train`` and ``val`` splits.
    """
    from vislearn.data.shards import is_packed, packed_splits
    from vislearn.data.transforms import eval_transform, train_transform

    if is_packed(root):
        return packed_splits(root, "train", "val", train_tf or train_transform(image_size),
                             eval_tf or eval_transform(image_size), fmt="imagefolder")
    root = Path(root)
    missing = [d for d in ("train", "val") if not (root / d).is_dir()]
    if missing:
        raise UserError(f"dataset path {root} must contain train/ and val/ folders of class sub-folders; "
                        f"{'it does not exist' if not root.exists() else 'missing: ' + ', '.join(missing)}")
    train = ImageFolderDataset(root / "train", train_tf or train_transform(image_size))
    val = ImageFolderDataset(root / "val", eval_tf or eval_transform(image_size), classes=train.classes)
    extra = sorted({e.name for e in os.scandir(root / "val") if e.is_dir()} - set(train.classes))
    if extra:
        raise UserError(f"{root}/val has classes absent from {root}/train: {', '.join(extra[:5])}")
    return train, val


# ----------------------------------------------------------------------------------------------- COCO

class CocoDetection(Dataset):
    """COCO-format detection: ``annotation_json`` (images, annotations, categories) and the image files
    under ``image_root``.

    Items are ``(image 3×H×W in [0, 1], {"boxes": K×4 float xyxy pixels, "labels": K long, "image_id":
    the COCO image id, "iscrowd": K bool, "area": K float64})`` like ``shapes_detection``; labels are
    0-based indices into ``.classes`` (categories sorted by id; ``.category_ids[label]`` maps back to the
    COCO id). COCO boxes ``[x, y, w, h]`` become ``[x, y, x + w, y + h]``, clipped to the image when its
    width/height are given. ``area`` is the annotation's ``area`` (for COCO the segment's area, which
    COCO evaluation's small/medium/large ranges use), or the clipped box's ``w·h`` where the annotation
    has none; transforms do not change it.

    Crowd regions (``iscrowd: 1``) are kept and flagged in ``iscrowd`` so that evaluation can ignore
    detections on them (:func:`vislearn.metrics.evaluate_detections` ``gt_iscrowd``/``gt_areas``);
    training code must leave them out of its targets. ``include_crowd=False`` drops them (counted under
    ``crowd`` in ``.skipped``). Annotations that cannot be used — a missing or malformed field, an
    unknown image or category id, an empty box — are skipped, counted in ``.skipped`` and reported in one
    warning (left-out crowds are counted under ``crowd`` without a warning). A file that is not COCO json
    (no ``images`` or ``categories`` list, images without ``id``/``file_name``, duplicate ids) is a
    ``UserError``.
    """

    def __init__(self, annotation_json: str | os.PathLike, image_root: str | os.PathLike,
                 transform: Callable | None = None, include_crowd: bool = True) -> None:
        self.annotation_json, self.image_root = Path(annotation_json), Path(image_root)
        self.transform = transform
        src = self.annotation_json
        if not src.is_file():
            raise UserError(f"COCO annotation file not found: {src}")
        if not self.image_root.is_dir():
            raise UserError(f"COCO image folder not found: {self.image_root}")
        try:
            with open(src, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read COCO json {src}: {e}") from None
        if not isinstance(data, dict):
            raise UserError(f"{src}: expected a JSON object with images, annotations and categories")
        for key in ("images", "categories"):
            if not isinstance(data.get(key), list):
                raise UserError(f"{src}: missing the {key!r} list of a COCO annotation file")
        anns = data.get("annotations", [])
        if not isinstance(anns, list):
            raise UserError(f"{src}: 'annotations' must be a list")

        self.images: list[dict] = []
        index: dict[int, int] = {}
        for n, im in enumerate(data["images"]):
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                raise UserError(f"{src}: images[{n}] lacks 'id' or 'file_name'")
            if not isinstance(im["file_name"], str):
                raise UserError(f"{src}: images[{n}]['file_name'] must be a string, got {im['file_name']!r}")
            try:
                hash(im["id"])
            except TypeError:
                raise UserError(f"{src}: images[{n}]['id'] must be a number or string, got {im['id']!r}") from None
            path_inside(self.image_root, im["file_name"], f"{src}: images[{n}]")
            if im["id"] in index:
                raise UserError(f"{src}: duplicate image id {im['id']!r}")
            index[im["id"]] = len(self.images)
            self.images.append(im)
        cats = []
        for n, c in enumerate(data["categories"]):
            if not isinstance(c, dict) or "id" not in c or "name" not in c:
                raise UserError(f"{src}: categories[{n}] lacks 'id' or 'name'")
            cats.append(c)
        cats.sort(key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in cats]
        if len(set(self.category_ids)) != len(cats):
            raise UserError(f"{src}: duplicate category ids")
        self.classes = [str(c["name"]) for c in cats]
        cat_index = {cid: i for i, cid in enumerate(self.category_ids)}
        self.ids = [im["id"] for im in self.images]

        skipped: Counter = Counter()
        per_image: list[list[tuple[list[float], int, bool, float]]] = [[] for _ in self.images]
        for ann in anns:
            try:
                image_id, cat, bbox = ann["image_id"], ann["category_id"], ann["bbox"]
                x, y, w, h = (float(v) for v in bbox)
                crowd = bool(ann.get("iscrowd", 0))
            except (KeyError, TypeError, ValueError):
                skipped["malformed"] += 1
                continue
            if image_id not in index:
                skipped["unknown_image"] += 1
                continue
            if cat not in cat_index:
                skipped["unknown_category"] += 1
                continue
            if crowd and not include_crowd:
                skipped["crowd"] += 1
                continue
            im = self.images[index[image_id]]
            x0, y0, x1, y1 = x, y, x + w, y + h
            if isinstance(im.get("width"), (int, float)) and isinstance(im.get("height"), (int, float)):
                x0, x1 = min(max(x0, 0.0), im["width"]), min(max(x1, 0.0), im["width"])
                y0, y1 = min(max(y0, 0.0), im["height"]), min(max(y1, 0.0), im["height"])
            if not (x1 > x0 and y1 > y0) or not all(np.isfinite([x0, y0, x1, y1])):
                skipped["empty_box"] += 1
                continue
            area = ann.get("area")
            if not isinstance(area, (int, float)) or not np.isfinite(area) or area < 0:
                area = (x1 - x0) * (y1 - y0)  # no usable annotation area: the box's
            per_image[index[image_id]].append(([x0, y0, x1, y1], cat_index[cat], crowd, area))
        self.skipped = dict(skipped)
        problems = {k: v for k, v in skipped.items() if k != "crowd"}  # leaving out crowds is expected
        if problems:
            warnings.warn(f"{src}: skipped {sum(problems.values())} unusable annotation(s): "
                          + ", ".join(f"{k} {v}" for k, v in sorted(problems.items())), stacklevel=2)
        self._targets = []
        for rows in per_image:
            self._targets.append({
                "boxes": torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([r[1] for r in rows], dtype=torch.long),
                "iscrowd": torch.tensor([r[2] for r in rows], dtype=torch.bool),
                "area": torch.tensor([r[3] for r in rows], dtype=torch.float64),
            })

    def __len__(self) -> int:
        return len(self.images)

    def target(self, i: int) -> dict:
        """The annotations of item ``i`` without reading its image."""
        t = dict(self._targets[i])
        t["image_id"] = torch.tensor(self.ids[i]) if isinstance(self.ids[i], int) else self.ids[i]
        return t

    def __getitem__(self, i: int):
        image = load_image(self.image_root / self.images[i]["file_name"])
        target = self.target(i)
        if self.transform is not None:
            from vislearn.data.shapes_detection import apply_detection_transform
            image, target = apply_detection_transform(self.transform, image, target)
        return image, target


# ------------------------------------------------------------------------------------------------ CSV

_HEADER_NAMES = {"path", "image", "file", "filename", "file_name", "image_path"}


class MultilabelCSV(Dataset):
    """Multi-label images listed in a CSV, one ``path,label|label|...`` line per image (an optional header
    line whose first field is ``path``/``image``/``filename`` is skipped; an empty label field means no
    label). Paths are relative to ``root`` (default: the CSV's folder).

    Items are ``(transform(image), multi-hot float vector)``; ``.classes`` (sorted labels found unless
    given), ``.paths``, ``.targets`` (N×C).
    """

    def __init__(self, csv_path: str | os.PathLike, root: str | os.PathLike | None = None,
                 classes: Sequence[str] | None = None, transform: Callable | None = None) -> None:
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise UserError(f"label CSV not found: {self.csv_path}")
        self.root = Path(root) if root is not None else self.csv_path.parent
        rows: list[tuple[str, list[str]]] = []
        try:
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                for lineno, rec in enumerate(csv.reader(f), start=1):
                    if not rec or all(not c.strip() for c in rec):
                        continue
                    if not rows and lineno == 1 and rec[0].strip().lower() in _HEADER_NAMES:
                        continue
                    if len(rec) != 2:
                        raise UserError(f"{self.csv_path}:{lineno}: expected 'path,label|label|...', "
                                        f"got {len(rec)} fields")
                    labels = [s.strip() for s in rec[1].split("|") if s.strip()]
                    rows.append((rec[0].strip(), labels))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise UserError(f"cannot read label CSV {self.csv_path}: {e}") from None
        if not rows:
            raise UserError(f"label CSV {self.csv_path} lists no images")
        if classes is None:
            classes = sorted({lb for _, labels in rows for lb in labels})
        self.classes = list(classes)
        index = {c: i for i, c in enumerate(self.classes)}
        targets = torch.zeros(len(rows), len(self.classes))
        for n, (path, labels) in enumerate(rows):
            for lb in labels:
                if lb not in index:
                    raise UserError(f"{self.csv_path}: image {path!r} has label {lb!r}, not among the "
                                    f"{len(self.classes)} given classes")
                targets[n, index[lb]] = 1.0
        self.paths = [path_inside(self.root, p, f"{self.csv_path}: row {n + 1}") for n, (p, _) in enumerate(rows)]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise UserError(f"{self.csv_path}: {len(missing)} listed image(s) not found, e.g. "
                            + ", ".join(missing[:3]))
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return read_transformed(self.paths[i], self.transform), self.targets[i]
