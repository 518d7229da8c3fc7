"""Class-disjoint metric-learning datasets: CUB-200-2011, Cars196, Stanford Online Products, shapes.

The zero-shot protocol (Song et al. 2016; Proxy-NCA, Movshovitz-Attias et al. 2017, Sec. 5) trains on
the first half of the classes and evaluates retrieval on the other half:

* CUB-200-2011: classes 1-100 train, 101-200 test. Layout (the official tarball)::

      ROOT/images.txt               "<image_id> <relative path>"
      ROOT/image_class_labels.txt   "<image_id> <class_id>"
      ROOT/classes.txt              "<class_id> <name>"   (optional; names default to the folder)
      ROOT/images/<relative path>

* Cars196: classes 1-98 train, 99-196 test. Layout: ``ROOT/cars_annos.mat`` (fields
  ``annotations`` with ``relative_im_path``, ``class`` per image, and ``class_names``) and the images
  it names (``ROOT/car_ims/000001.jpg``...). Read with ``scipy.io.loadmat``.
* Stanford Online Products: ``ROOT/Ebay_train.txt`` (classes 1-11,318) and ``ROOT/Ebay_test.txt``
  (11,319-22,634), each with the header ``image_id class_id super_class_id path`` and paths relative
  to ``ROOT``.

``ROOT`` may also be the folder that contains the usual top folder (``CUB_200_2011``,
``Stanford_Online_Products``). Targets are 0-based and contiguous *within the split* (``.targets``);
the dataset's own class ids are kept in ``.class_ids``. Images are read lazily with
:func:`vislearn.data.formats.read_transformed` (uint8 through ``transform``, float in [0, 1] last).

The embedded default, :func:`shapes_retrieval`, is a many-class ``shapes_classification`` split
the same way (first half of the classes for training, second half for testing), so nothing
needs downloading.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vislearn.data._checks import path_inside
from vislearn.errors import UserError

__all__ = ["RetrievalImageSet", "cars196", "cub200", "shapes_retrieval", "stanford_online_products"]

SPLITS = ("train", "test", "all")


class RetrievalImageSet(Dataset):
    """Image paths and labels; ``dataset[i] -> (image 3×H×W in [0, 1] after transform, target)``."""

    def __init__(self, paths: Sequence[Path], class_ids: Sequence[int], class_names: dict[int, str] | None = None,
                 transform: Callable | None = None, name: str = "dataset") -> None:
        if len(paths) != len(class_ids):
            raise UserError(f"{name}: {len(paths)} images but {len(class_ids)} labels")
        if not paths:
            raise UserError(f"{name}: no images in this split")
        self.paths = [Path(p) for p in paths]
        self.class_ids = torch.as_tensor(list(class_ids), dtype=torch.long)
        uniq, self.targets = torch.unique(self.class_ids, sorted=True, return_inverse=True)
        names = class_names or {}
        self.classes = [names.get(int(c), str(int(c))) for c in uniq]
        self.transform, self.name = transform, name

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        if not path.is_file():
            raise UserError(f"{self.name}: image {path} listed in the index does not exist")
        from vislearn.data.formats import read_transformed

        return read_transformed(path, self.transform), self.targets[i]


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"{name}: split must be one of {', '.join(SPLITS)}, got {split!r}")


def _find_root(root: str | os.PathLike, marker: str, subdirs: Sequence[str], name: str, expected: str) -> Path:
    r = Path(root).expanduser()
    if not r.exists():
        raise UserError(f"{name}: {r} does not exist (expected {expected})")
    for cand in (r, *(r / s for s in subdirs)):
        if (cand / marker).is_file():
            return cand
    raise UserError(f"{name}: no {marker} under {r} (expected {expected})")


def _read_table(path: Path, ncols: int, name: str, header: bool = False) -> list[list[str]]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: {path} is not UTF-8 text ({e})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if header and lineno == 1:
            continue
        line = line.strip()
        if not line:
            continue
        parts = line.split(maxsplit=ncols - 1)
        if len(parts) != ncols:
            raise UserError(f"{name}: {path}:{lineno}: expected {ncols} fields, got {line!r}")
        rows.append(parts)
    return rows


def _int(text: str, path: Path, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{name}: {path}: expected an integer, got {text!r}") from None


def _select(class_id: int, split: str, n_train_classes: int) -> bool:
    return split == "all" or (class_id <= n_train_classes) == (split == "train")


def cub200(root: str | os.PathLike, split: str = "train", transform: Callable | None = None) -> RetrievalImageSet:
    """CUB-200-2011 with the zero-shot split: classes 1-100 ``train``, 101-200 ``test``."""
    name = "CUB-200-2011"
    _check_split(name, split)
    r = _find_root(root, "images.txt", ("CUB_200_2011",), name,
                   "images.txt, image_class_labels.txt and images/ from CUB_200_2011.tgz")
    labels_file = r / "image_class_labels.txt"
    if not labels_file.is_file():
        raise UserError(f"{name}: missing {labels_file}")
    images = {_int(i, r / "images.txt", name): p for i, p in _read_table(r / "images.txt", 2, name)}
    labels = {_int(i, labels_file, name): _int(c, labels_file, name) for i, c in _read_table(labels_file, 2, name)}
    missing = set(images) - set(labels)
    if missing:
        raise UserError(f"{name}: image id {min(missing)} has no label in {labels_file}")
    names: dict[int, str] = {}
    if (r / "classes.txt").is_file():
        names = {_int(c, r / "classes.txt", name): n for c, n in _read_table(r / "classes.txt", 2, name)}
    else:
        for i, p in images.items():
            names.setdefault(labels[i], p.split("/")[0])
    ids = sorted(i for i in images if _select(labels[i], split, 100))
    paths = [path_inside(r / "images", images[i], f"{name}: {r / 'images.txt'} id {i}") for i in ids]
    return RetrievalImageSet(paths, [labels[i] for i in ids], names,
                             transform, name)


def cars196(root: str | os.PathLike, split: str = "train", transform: Callable | None = None) -> RetrievalImageSet:
    """Stanford Cars (196 classes) with the zero-shot split: classes 1-98 ``train``, 99-196 ``test``."""
    import numpy as np
    import scipy.io

    name = "Cars196"
    _check_split(name, split)
    r = _find_root(root, "cars_annos.mat", ("stanford_cars", "cars196"), name, "cars_annos.mat and car_ims/")
    try:
        mat = scipy.io.loadmat(str(r / "cars_annos.mat"), squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises several types for a corrupt file
        raise UserError(f"{name}: cannot read {r / 'cars_annos.mat'}: {e}") from None
    if "annotations" not in mat:
        raise UserError(f"{name}: {r / 'cars_annos.mat'} has no 'annotations' field")
    annos = np.atleast_1d(mat["annotations"])
    names: dict[int, str] = {}
    if "class_names" in mat:
        names = {i + 1: str(n) for i, n in enumerate(np.atleast_1d(mat["class_names"]))}
    paths, ids = [], []
    for a in annos:
        try:
            rel, cls = str(a.relative_im_path), int(getattr(a, "class"))
        except AttributeError:
            raise UserError(f"{name}: annotations need 'relative_im_path' and 'class' fields") from None
        except (TypeError, ValueError):
            raise UserError(f"{name}: annotation class {getattr(a, 'class')!r} is not an integer") from None
        if _select(cls, split, 98):
            paths.append(path_inside(r, rel, f"{name}: {r / 'cars_annos.mat'}"))
            ids.append(cls)
    return RetrievalImageSet(paths, ids, names, transform, name)


def stanford_online_products(root: str | os.PathLike, split: str = "train",
                             transform: Callable | None = None) -> RetrievalImageSet:
    """Stanford Online Products: ``Ebay_train.txt`` (11,318 classes) / ``Ebay_test.txt`` (11,316 classes)."""
    name = "Stanford Online Products"
    _check_split(name, split)
    r = _find_root(root, "Ebay_train.txt" if split != "test" else "Ebay_test.txt", ("Stanford_Online_Products",),
                   name, "Ebay_train.txt, Ebay_test.txt and the image folders")
    files = {"train": ["Ebay_train.txt"], "test": ["Ebay_test.txt"], "all": ["Ebay_train.txt", "Ebay_test.txt"]}
    paths, ids = [], []
    for fname in files[split]:
        f = r / fname
        if not f.is_file():
            raise UserError(f"{name}: missing {f}")
        for _, cls, _, rel in _read_table(f, 4, name, header=True):
            paths.append(path_inside(r, rel, f"{name}: {f}"))
            ids.append(_int(cls, f, name))
    return RetrievalImageSet(paths, ids, None, transform, name)


def shapes_retrieval(split: str = "train", num_classes: int = 100, samples_per_class: int = 40,
                     image_size: int = 32, seed: int = 0, transform: Callable | None = None):
    """Embedded class-disjoint split of ``shapes_classification``: first half of classes ``train``.

    Returns a :class:`~vislearn.data.embedded.TensorImageDataset` with targets 0-based within the
    split (``.class_ids`` keeps the original class index). ``num_classes`` >= 100 matches the paper's
    many-class regime (CUB/Cars have 100/98 test classes).
    """
    from vislearn.data.embedded import TensorImageDataset, shapes_classification

    _check_split("shapes_retrieval", split)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise UserError(f"shapes_retrieval: num_classes must be an int >= 2, got {num_classes!r}")
    base = shapes_classification("train", num_classes=num_classes, samples_per_class=samples_per_class,
                                 image_size=image_size, seed=seed)
    half = num_classes // 2
    y = base.targets
    keep = torch.ones_like(y, dtype=torch.bool) if split == "all" else ((y < half) if split == "train" else (y >= half))
    idx = keep.nonzero().squeeze(1)
    offset = half if split == "test" else 0
    classes = base.classes[offset:half] if split == "train" else base.classes[offset:]
    ds = TensorImageDataset(base.images[idx], y[idx] - offset, transform, classes=list(classes))
    ds.class_ids = y[idx]
    return ds
