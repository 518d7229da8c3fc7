"""NUS-WIDE (Chua et al. 2009) in its distributed layout: 81 concepts, the standard train/test split.

Gong et al. (arXiv 1312.4894, Sec. 5.1) evaluate on NUS-WIDE's 81 ground-truth concepts. The
dataset is not downloaded (offline-first); point ``root`` at the folder the official archives
were unpacked into::

    root/
      Concepts81.txt                       # one concept name per line (81 lines)
      ImageList/TrainImagelist.txt         # one image per line, e.g. "actor\\0001_2124494179.jpg"
      ImageList/TestImagelist.txt          #   (Imagelist.txt-style "C:\\ImageData\\Flickr\\actor\\…" also works)
      Groundtruth/TrainTestLabels/Labels_<concept>_Train.txt   # one 0/1 per line, aligned with the list
      Groundtruth/TrainTestLabels/Labels_<concept>_Test.txt
      Flickr/<concept folder>/<file>.jpg   # the images (or images/, Images/, or pass image_root)

``TrainTestLabels/`` directly under ``root`` and ``ConceptsList/Concepts81.txt`` are accepted too.
Image paths keep their last two components (``<folder>/<file>``) with Windows separators turned
into ``/``. Missing files, misaligned label files and non-integer labels raise a
:class:`~vislearn.errors.UserError` naming the file (and line). The official files hold a few
integers other than 0/1 (e.g. a stray large number in one concept's train labels); such a value
is counted in ``label_anomalies`` (file, line, value), treated as 0 and reported with a warning.

Gong et al. drop images without any of the 81 labels (``drop_unlabeled=True``; the multilabel
losses would skip them anyway) and use their own random train/test partition (size unverified);
we use the official split files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vislearn.data._checks import path_inside
from vislearn.errors import UserError

__all__ = ["NUSWIDE", "read_nuswide_concepts"]

_SPLITS = {"train": ("TrainImagelist.txt", "Train"), "test": ("TestImagelist.txt", "Test")}


def _first_existing(candidates: list[Path], what: str) -> Path:
    for c in candidates:
        if c.exists():
            return c
    raise UserError(f"NUS-WIDE {what} not found; looked for " + ", ".join(str(c) for c in candidates))


def read_nuswide_concepts(root: str | os.PathLike) -> list[str]:
    """The concept names of ``root/Concepts81.txt`` (or ``ConceptsList/Concepts81.txt``), in file order."""
    root = Path(root)
    path = _first_existing([root / "Concepts81.txt", root / "ConceptsList" / "Concepts81.txt"], "concept list")
    names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise UserError(f"{path} lists no concepts")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{path} lists concepts more than once: {', '.join(dup)}")
    return names


def _read_labels(path: Path, expected: int, anomalies: list[tuple[str, int, int]]) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"NUS-WIDE label file not found: {path}")
    tokens = path.read_text(encoding="utf-8", errors="replace").split()
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        line = next(i for i, t in enumerate(tokens, 1) if not t.lstrip("+-").isdigit())
        raise UserError(f"{path}:{line}: expected an integer label 0/1, got {tokens[line - 1]!r}") from None
    if values.size != expected:
        raise UserError(f"{path} has {values.size} labels but the image list has {expected} images")
    bad = np.flatnonzero((values != 0) & (values != 1))
    for i in bad:
        anomalies.append((str(path), int(i) + 1, int(values[i])))
    return values == 1


class NUSWIDE(Dataset):
    """NUS-WIDE images with 81-dimensional multi-hot targets (module docstring for the layout).

    Args:
        root: the unpacked dataset folder.
        split: ``"train"`` or ``"test"`` (the official split files).
        transform: applied to each image, a uint8 3×H×W tensor for 8-bit files (float in [0, 1] otherwise);
            its output is converted to float last (:func:`vislearn.data.formats.read_transformed`).
        image_root: folder holding ``<concept folder>/<file>``; default: the first of
            ``root/Flickr``, ``root/images``, ``root/Images``, ``root`` holding the first image.
        drop_unlabeled: drop images without any of the concepts (Gong et al.'s protocol).

    Attributes:
        classes: concept names; ``targets``: N×C float multi-hot; ``paths``: image paths;
        ``num_dropped``: images dropped by ``drop_unlabeled``; ``label_anomalies``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None,
                 image_root: str | os.PathLike | None = None, drop_unlabeled: bool = True) -> None:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"NUS-WIDE root is not a folder: {root}")
        if split not in _SPLITS:
            raise UserError(f"NUS-WIDE split must be 'train' or 'test', got {split!r}")
        list_name, tag = _SPLITS[split]
        self.classes = read_nuswide_concepts(root)
        list_path = _first_existing([root / "ImageList" / list_name, root / list_name], f"{split} image list")
        rel = []
        for line in list_path.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line:
                parts = [p for p in line.replace("\\", "/").split("/") if p]
                rel.append("/".join(parts[-2:]))
        if not rel:
            raise UserError(f"{list_path} lists no images")
        label_dir = _first_existing([root / "Groundtruth" / "TrainTestLabels", root / "TrainTestLabels"],
                                    "label folder (Groundtruth/TrainTestLabels)")
        self.label_anomalies: list[tuple[str, int, int]] = []
        for n, r in enumerate(rel, 1):
            path_inside(root, r, f"{list_path}:{n}")
        columns = [_read_labels(path_inside(label_dir, f"Labels_{c}_{tag}.txt", f"concept {c!r}"), len(rel),
                                self.label_anomalies)
                   for c in self.classes]
        if self.label_anomalies:
            f, line, v = self.label_anomalies[0]
            warnings.warn(f"NUS-WIDE: {len(self.label_anomalies)} label(s) other than 0/1 treated as 0 "
                          f"(first: {f}:{line} = {v})", stacklevel=2)
        targets = np.stack(columns, axis=1)
        if image_root is None:
            candidates = [root / "Flickr", root / "images", root / "Images", root]
            image_root = next((c for c in candidates if (c / rel[0]).is_file()), None)
            if image_root is None:
                raise UserError(f"NUS-WIDE image {rel[0]!r} (first of {list_path.name}) not found under "
                                + ", ".join(str(c) for c in candidates) + "; pass image_root")
        self.image_root = Path(image_root)
        keep = targets.any(1) if drop_unlabeled else np.ones(len(rel), dtype=bool)
        self.num_dropped = int((~keep).sum())
        self.paths = [self.image_root / r for r, k in zip(rel, keep, strict=True) if k]
        self.targets = torch.from_numpy(targets[keep].astype(np.float32))
        self.transform = transform
        self.split = split

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from vislearn.data.formats import read_transformed

        path = self.paths[index]
        if not path.is_file():
            raise UserError(f"NUS-WIDE image not found: {path}")
        return read_transformed(path, self.transform), self.targets[index]

    def label_frequencies(self) -> torch.Tensor:
        """Images per concept (the skew that makes per-class recall hard)."""
        return self.targets.sum(0)
