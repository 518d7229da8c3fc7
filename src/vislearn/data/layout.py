"""Which dataset layout a ``--data`` folder holds, from the files that mark each layout.

:func:`detect_layout` looks only at names (no image is opened), so a recipe can pick its dataset
reader before building anything and refuse a folder it cannot read with one line naming what it
found. The markers are the ones the readers in :mod:`vislearn.data` require.
"""

from __future__ import annotations

import os
from pathlib import Path

from vislearn.errors import UserError

__all__ = ["LAYOUTS", "detect_layout"]

# layout name -> what marks it (shown when a folder matches none)
LAYOUTS: dict[str, str] = {
    "imagefolder": "train/ and val/ folders of class sub-folders",
    "coco": "annotations/instances_<split>*.json beside the image folders",
    "voc": "Annotations/, JPEGImages/ and ImageSets/Main/",
    "nuswide": "Concepts81.txt (NUS-WIDE)",
    "multilabel_csv": "train.csv and val.csv (or test.csv) of path,label|label rows",
    "cub200": "images.txt (CUB-200-2011)",
    "cars196": "cars_annos.mat (Cars196)",
    "sop": "Ebay_train.txt (Stanford Online Products)",
    "iqa": "mos_with_names.txt (TID2013), dmos.csv (KADID-10k) or ref/, p0/, p1/, judge/ (BAPPS 2AFC)",
}


def _has_class_dirs(folder: Path) -> bool:
    return folder.is_dir() and any(e.is_dir() for e in os.scandir(folder))


def _probe(root: Path) -> str | None:
    if (root / "annotations").is_dir() and any((root / "annotations").glob("instances_*.json")):
        return "coco"
    if all((root / s).is_dir() for s in ("Annotations", "JPEGImages", "ImageSets/Main")):
        return "voc"
    if (root / "Concepts81.txt").is_file() or (root / "ConceptsList" / "Concepts81.txt").is_file():
        return "nuswide"
    if (root / "train.csv").is_file() and ((root / "val.csv").is_file() or (root / "test.csv").is_file()):
        return "multilabel_csv"
    if (root / "images.txt").is_file():
        return "cub200"
    if (root / "cars_annos.mat").is_file():
        return "cars196"
    if (root / "Ebay_train.txt").is_file():
        return "sop"
    if (root / "mos_with_names.txt").is_file() or (root / "dmos.csv").is_file() or \
            all((root / s).is_dir() for s in ("ref", "p0", "p1", "judge")):
        return "iqa"
    if _has_class_dirs(root / "train") and _has_class_dirs(root / "val"):
        return "imagefolder"
    return None


def detect_layout(root: str | os.PathLike) -> str:
    """The :data:`LAYOUTS` name of the folder at ``root`` (or of its one dataset sub-folder, e.g.
    ``CUB_200_2011/``); a missing folder or one that matches no layout is a ``UserError``.

    A packed dataset (a folder with a shard ``index.json``, or a ``.tar`` brace pattern of its shards;
    :mod:`vislearn.data.shards`) has the layout of the format it was packed from."""
    from vislearn.data.shards import LAYOUT_OF, is_packed, read_index

    if is_packed(root):
        return LAYOUT_OF[read_index(root)[0]["format"]]
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"--data {root}: {'not a folder' if path.exists() else 'does not exist'}")
    found = _probe(path)
    if found is None:
        subs = [p for p in path.iterdir() if p.is_dir()]
        inner = [(s, _probe(s)) for s in subs] if len(subs) == 1 else []
        found = next((kind for _, kind in inner if kind not in (None, "imagefolder")), None)
    if found is None:
        known = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
        raise UserError(f"--data {root}: no dataset layout recognised (looked for {known})")
    return found
