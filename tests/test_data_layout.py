"""``detect_layout``: which dataset a ``--data`` folder holds, from its marker files."""

from __future__ import annotations

import pytest

from vislearn.data.layout import LAYOUTS, detect_layout
from vislearn.errors import UserError

MARKERS = {
    "imagefolder": ["train/cat/", "val/cat/"],
    "coco": ["annotations/instances_train2017.json", "train2017/"],
    "voc": ["Annotations/", "JPEGImages/", "ImageSets/Main/"],
    "nuswide": ["Concepts81.txt"],
    "multilabel_csv": ["train.csv", "val.csv"],
    "cub200": ["CUB_200_2011/images.txt"],  # the archive's own top folder is looked into
    "cars196": ["cars_annos.mat"],
    "sop": ["Ebay_train.txt"],
    "iqa": ["mos_with_names.txt"],
}


def _make(root, entries):
    for e in entries:
        p = root / e
        if e.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("")
    return root


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_is_recognised(layout, tmp_path):
    assert layout in MARKERS
    assert detect_layout(_make(tmp_path, MARKERS[layout])) == layout


def test_unknown_and_missing_folders(tmp_path):
    with pytest.raises(UserError, match="no dataset layout recognised"):
        detect_layout(_make(tmp_path / "x", ["train/", "notes.txt"]))
    with pytest.raises(UserError, match="does not exist"):
        detect_layout(tmp_path / "nope")
