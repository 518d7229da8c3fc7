"""VOC-XML loader on a tiny fake VOCdevkit layout."""

import pytest
from PIL import Image

from vislearn.data.voc import VOCDetection, parse_voc_xml
from vislearn.errors import UserError

XML = """<annotation><filename>{id}.jpg</filename><size><width>40</width><height>30</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = ("<object><name>{name}</name><difficult>{diff}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
       "<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>")


def _layout(tmp_path, anns):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    for i, objs in anns.items():
        body = "".join(OBJ.format(name=n, diff=d, b=b) for n, d, b in objs)
        (tmp_path / "Annotations" / f"{i}.xml").write_text(XML.format(id=i, objects=body))
        Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "JPEGImages" / f"{i}.jpg")
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("\n".join(anns) + "\n")
    return tmp_path


def test_voc_targets_and_difficult(tmp_path):
    root = _layout(tmp_path, {"a": [("dog", 0, (1, 1, 10, 20)), ("cat", 1, (5, 5, 40, 30))],
                              "b": [], "c": [("dog", 0, (12, 3, 10, 9)), ("cat", 0, (-3, 2, 60, 9))]})
    ds = VOCDetection(root, "train")
    assert len(ds) == 3
    img, t = ds[0]
    assert img.shape == (3, 30, 40) and 0 <= float(img.min()) and float(img.max()) <= 1
    assert t["boxes"].tolist() == [[0, 0, 10, 20], [4, 4, 40, 30]]
    assert t["labels"].tolist() == [11, 7] and t["difficult"].tolist() == [False, True]
    assert ds[1][1]["boxes"].shape == (0, 4)
    # image c: a negative-width box is dropped and counted; an out-of-image box is clipped
    assert ds[2][1]["boxes"].tolist() == [[0, 1, 40, 9]]
    assert ds.skipped["degenerate_boxes"] == 1
    ds2 = VOCDetection(root, "train", keep_difficult=False)
    assert len(ds2[0][1]["boxes"]) == 1 and ds2.skipped["difficult"] == 1


def test_voc_errors(tmp_path):
    with pytest.raises(UserError, match="missing Annotations"):
        VOCDetection(tmp_path)
    root = _layout(tmp_path, {"a": [("unicorn", 0, (1, 1, 5, 5))]})
    with pytest.raises(UserError, match="split file not found.*available: train"):
        VOCDetection(root, "val")
    with pytest.raises(UserError, match="unknown class 'unicorn'"):
        VOCDetection(root, "train")
    ds = VOCDetection(root, "train", skip_unknown=True)
    assert ds.skipped["unknown_class"] == 1 and ds[0][1]["labels"].numel() == 0
    ds = VOCDetection(root, "train", classes=["unicorn"])
    assert ds[0][1]["labels"].tolist() == [0]
    (root / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(UserError, match="malformed XML"):
        VOCDetection(root, "train", classes=["unicorn"])
    (root / "Annotations" / "a.xml").write_text("<annotation><object><name>x</name></object></annotation>")
    with pytest.raises(UserError, match="no <bndbox>"):
        parse_voc_xml(root / "Annotations" / "a.xml")
    (root / "ImageSets" / "Main" / "train.txt").write_text("zzz\n")
    with pytest.raises(UserError, match="annotation file not found"):
        VOCDetection(root, "train")
