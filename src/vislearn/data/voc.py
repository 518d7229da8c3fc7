"""PASCAL VOC detection data from its XML layout: ``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main``.

Layout (as in ``VOCdevkit/VOC2007``)::

    ROOT/Annotations/000001.xml        <object><name>dog</name><difficult>0</difficult>
                                         <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax>
    ROOT/JPEGImages/000001.jpg
    ROOT/ImageSets/Main/trainval.txt   one image id per line

Items are ``(image 3×H×W float in [0, 1], {"boxes": K×4 float xyxy pixels, "labels": K long,
"difficult": K bool})``, like :func:`vislearn.data.embedded.shapes_detection`. VOC corners are
1-based and inclusive; they become continuous 0-based coordinates ``(xmin − 1, ymin − 1, xmax, ymax)``
so a box's width is ``xmax − xmin + 1`` pixels, as VOC defines it.

Bad input: a missing folder or split file, an id without its XML or image, or malformed XML raise
``UserError`` naming the file. Objects with an unknown class name raise (listing the known classes)
unless ``skip_unknown=True``. Degenerate boxes (zero/negative size after clipping to the image) are
dropped, and objects marked difficult are dropped when ``keep_difficult=False``; both are counted in
``dataset.skipped`` (``{"degenerate_boxes": n, "difficult": n, "unknown_class": n}``), so a caller
can report them.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vislearn.data._checks import path_inside
from vislearn.errors import UserError

__all__ = ["VOC_CLASSES", "VOCDetection", "parse_voc_xml"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def _text(node: ET.Element, tag: str, path: Path, required: bool = True) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise UserError(f"{path}: <{node.tag}> has no <{tag}>")
        return None
    return child.text.strip()


def _number(node: ET.Element, tag: str, path: Path) -> float:
    text = _text(node, tag, path)
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{path}: <{tag}> must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise UserError(f"{path}: <{tag}> must be a finite number, got {text!r}")
    return value


def parse_voc_xml(path: str | os.PathLike) -> dict:
    """One annotation file → ``{"filename", "size": (H, W) or None, "objects": [{"name", "bbox", "difficult"}]}``.

    ``bbox`` is the raw VOC ``(xmin, ymin, xmax, ymax)`` (1-based, inclusive).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise UserError(f"annotation file not found: {path}") from None
    except ET.ParseError as e:
        raise UserError(f"{path}: malformed XML ({e})") from None
    if root.tag != "annotation":
        raise UserError(f"{path}: expected an <annotation> root element, got <{root.tag}>")
    size = None
    sz = root.find("size")
    if sz is not None and sz.find("width") is not None and sz.find("height") is not None:
        size = (int(_number(sz, "height", path)), int(_number(sz, "width", path)))
    objects = []
    for obj in root.findall("object"):
        name = _text(obj, "name", path)
        bb = obj.find("bndbox")
        if bb is None:
            raise UserError(f"{path}: object {name!r} has no <bndbox>")
        box = tuple(_number(bb, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        diff = _text(obj, "difficult", path, required=False)
        objects.append({"name": name, "bbox": box, "difficult": diff not in (None, "0")})
    return {"filename": _text(root, "filename", path, required=False), "size": size, "objects": objects}


class VOCDetection(Dataset):
    """VOC-style detection dataset (see the module docstring).

    Args:
        root: the folder holding ``Annotations``, ``JPEGImages`` and ``ImageSets/Main``.
        split: a file name in ``ImageSets/Main`` without ``.txt`` (``train``, ``val``, ``trainval``, ``test``).
        classes: category names in label order (default: the 20 VOC classes).
        keep_difficult: keep objects flagged difficult (their flag is in the target).
        skip_unknown: drop objects whose class is not in ``classes`` instead of raising.
        transform: optional ``fn(image, target) -> (image, target)``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "trainval", classes: Sequence[str] = VOC_CLASSES,
                 keep_difficult: bool = True, skip_unknown: bool = False,
                 transform: Callable | None = None) -> None:
        self.root = Path(root)
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            if not (self.root / sub).is_dir():
                raise UserError(f"{self.root} is not a VOC folder: missing {sub}/ (expected Annotations/, "
                                "JPEGImages/ and ImageSets/Main/)")
        split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            have = sorted(p.stem for p in (self.root / "ImageSets" / "Main").glob("*.txt"))
            raise UserError(f"split file not found: {split_file} (available: {', '.join(have) or 'none'})")
        try:
            text = split_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"cannot read split file {split_file}: {e}") from None
        ids = [line.split()[0] for line in text.splitlines() if line.strip()]
        for i in ids:
            path_inside(self.root / "Annotations", f"{i}.xml", f"{split_file}: id {i!r}")
        if not ids:
            raise UserError(f"{split_file} lists no images")
        self.classes = list(classes)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.keep_difficult, self.transform = keep_difficult, transform
        self.skipped = {"degenerate_boxes": 0, "difficult": 0, "unknown_class": 0}
        self.ids, self.image_paths, self.targets = [], [], []
        for i in ids:
            ann = parse_voc_xml(self.root / "Annotations" / f"{i}.xml")
            img = path_inside(self.root / "JPEGImages", ann["filename"] or f"{i}.jpg", f"{i}.xml <filename>")
            if not img.is_file():
                alt = self.root / "JPEGImages" / f"{i}.jpg"
                if not alt.is_file():
                    raise UserError(f"image for id {i!r} not found: {img}")
                img = alt
            self.ids.append(i)
            self.image_paths.append(img)
            self.targets.append(self._target(ann, i, skip_unknown))

    def _target(self, ann: dict, image_id: str, skip_unknown: bool) -> dict[str, torch.Tensor]:
        boxes, labels, diff = [], [], []
        for o in ann["objects"]:
            if o["name"] not in self.class_index:
                if skip_unknown:
                    self.skipped["unknown_class"] += 1
                    continue
                raise UserError(f"{image_id}.xml: unknown class {o['name']!r}; known: {', '.join(self.classes)} "
                                "(pass classes=... or skip_unknown=True)")
            if o["difficult"] and not self.keep_difficult:
                self.skipped["difficult"] += 1
                continue
            x1, y1, x2, y2 = o["bbox"]
            x1, y1 = x1 - 1, y1 - 1
            if ann["size"] is not None:
                h, w = ann["size"]
                x1, x2 = min(max(x1, 0), w), min(max(x2, 0), w)
                y1, y2 = min(max(y1, 0), h), min(max(y2, 0), h)
            if x2 <= x1 or y2 <= y1:
                self.skipped["degenerate_boxes"] += 1
                continue
            boxes.append((x1, y1, x2, y2)), labels.append(self.class_index[o["name"]]), diff.append(o["difficult"])
        return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.long), "difficult": torch.tensor(diff, dtype=torch.bool)}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        from vislearn.data.formats import load_image

        image = load_image(self.image_paths[i])
        target = {k: v.clone() for k, v in self.targets[i].items()}
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
