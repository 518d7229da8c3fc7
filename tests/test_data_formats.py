"""On-disk formats and transforms: image loading, ImageFolder, COCO json (vs pycocotools), CSV."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.data.formats import CocoDetection, ImageFolderDataset, MultilabelCSV, image_folder_splits, load_image
from vislearn.data.transforms import eval_transform, inception_eval_transform, train_transform
from vislearn.errors import UserError


def _png(path, h=12, w=16, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return arr


# ------------------------------------------------------------------------------------------ load_image

def test_load_image_roundtrip_and_modes(tmp_path):
    arr = _png(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (3, 12, 16) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    g = _png(tmp_path / "g.png", mode="L")
    y = load_image(str(tmp_path / "g.png"))
    assert y.shape == (3, 12, 16) and torch.equal(y[0], y[2]) and torch.equal(y[1], torch.from_numpy(g) / 255)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert torch.allclose(load_image(tmp_path / "t.png")[0], torch.full((4, 5), 200 / 255))


def test_load_image_corrupt_truncated_missing(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 3)
    with pytest.raises(UserError, match="broken.jpg"):
        load_image(bad)
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:400])
    with pytest.raises(UserError, match="cut.jpg"):
        load_image(cut)
    with pytest.raises(UserError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(UserError, match="not an image file"):
        load_image(tmp_path)


# ----------------------------------------------------------------------------------------- ImageFolder

def test_image_folder_matches_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder
    for c, n in (("dog", 3), ("cat", 2), ("emu", 1)):
        for i in range(n):
            _png(tmp_path / c / f"{i}.png", seed=i)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path)
    ref = ImageFolder(str(tmp_path))
    assert ds.classes == ref.classes == ["cat", "dog", "emu"]
    assert [(str(p), t) for p, t in ds.samples] == [(str(p), t) for p, t in ref.samples]
    img, t = ds[0]
    assert img.shape == (3, 12, 16) and t == 0
    tf = ImageFolderDataset(tmp_path, transform=eval_transform(8))
    assert tf[3][0].shape == (3, 8, 8)


def test_image_folder_empty_or_missing_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(UserError, match="no images"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    with pytest.raises(UserError, match="no images"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(UserError, match="train/ and val/"):
        image_folder_splits(tmp_path / "nowhere", 8)
    with pytest.raises(UserError, match="missing: train, val"):
        image_folder_splits(tmp_path, 8)


def test_image_folder_splits(tmp_path):
    for c in ("a", "b", "c"):
        for i in range(2):
            _png(tmp_path / "train" / c / f"{i}.png", h=20, w=24, seed=i)
    _png(tmp_path / "val" / "c" / "0.png", h=20, w=24)
    train, val = image_folder_splits(tmp_path, 16)
    assert train.classes == val.classes == ["a", "b", "c"]
    assert len(train) == 6 and len(val) == 1 and val.targets == [2]
    x, _ = train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert val[0][0].shape == (3, 16, 16)
    _png(tmp_path / "val" / "zebra" / "0.png")
    with pytest.raises(UserError, match="zebra"):
        image_folder_splits(tmp_path, 16)


# ------------------------------------------------------------------------------------------------ COCO

def _coco_files(tmp_path):
    root = tmp_path / "imgs"
    for n, (h, w) in enumerate([(40, 50), (30, 30), (20, 60)], start=1):
        _png(root / f"im{n}.png", h=h, w=w, seed=n)
    data = {
        "images": [{"id": 11, "file_name": "im1.png", "width": 50, "height": 40},
                   {"id": 5, "file_name": "im2.png", "width": 30, "height": 30},
                   {"id": 99, "file_name": "im3.png", "width": 60, "height": 20}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 11, "category_id": 7, "bbox": [1.5, 2.0, 10.0, 5.5], "iscrowd": 0, "area": 55},
            {"id": 2, "image_id": 11, "category_id": 3, "bbox": [20, 10, 4, 25], "iscrowd": 0, "area": 100},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 50, 40], "iscrowd": 1, "area": 2000},
            {"id": 4, "image_id": 5, "category_id": 3, "bbox": [3, 4, 5, 6], "iscrowd": 0, "area": 30},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, root, data


def test_coco_roundtrip_against_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    path, root, _ = _coco_files(tmp_path)
    ds = CocoDetection(path, root, include_crowd=False)
    coco = COCO(str(path))
    assert ds.skipped == {"crowd": 1}
    assert ds.ids == [11, 5, 99] and ds.category_ids == sorted(coco.getCatIds()) == [3, 7]
    assert ds.classes == [c["name"] for c in coco.loadCats(sorted(coco.getCatIds()))] == ["dog", "cat"]
    for i, img_id in enumerate(ds.ids):
        img, t = ds[i]
        info = coco.loadImgs(img_id)[0]
        assert img.shape == (3, info["height"], info["width"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False))
        expect = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                               for a in anns], dtype=torch.float32).reshape(-1, 4)
        assert torch.equal(t["boxes"], expect)
        assert [ds.category_ids[lb] for lb in t["labels"].tolist()] == [a["category_id"] for a in anns]
        assert int(t["image_id"]) == img_id and not t["iscrowd"].any()
    with_crowd = CocoDetection(path, root, include_crowd=True)
    assert with_crowd.skipped == {} and with_crowd.target(0)["iscrowd"].tolist() == [False, False, True]
    # v2 transforms move the boxes
    from torchvision.transforms import v2
    img, t = CocoDetection(path, root, transform=v2.RandomHorizontalFlip(1.0))[0]
    assert torch.equal(t["boxes"][0], torch.tensor([50 - 11.5, 2.0, 50 - 1.5, 7.5]))


def test_coco_keeps_crowd_regions_and_annotation_areas(tmp_path):
    from pycocotools.coco import COCO
    path, root, data = _coco_files(tmp_path)
    # segment areas that differ from the boxes' w·h, as in COCO; one annotation without an area
    areas = {1: 41.25, 2: 63.5, 3: 1234.5}
    for ann in data["annotations"]:
        if ann["id"] in areas:
            ann["area"] = areas[ann["id"]]
            ann["segmentation"] = [[0, 0, 1, 0, 1, 1]]
        else:
            del ann["area"]
    path.write_text(json.dumps(data))
    ds = CocoDetection(path, root)  # crowds are kept by default
    coco = COCO(str(path))
    assert ds.skipped == {}
    for i, img_id in enumerate(ds.ids):
        t = ds.target(i)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert t["iscrowd"].tolist() == [bool(a["iscrowd"]) for a in anns]
        assert t["area"].dtype == torch.float64
        assert t["area"].tolist() == [a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns]
    assert ds.target(0)["iscrowd"].tolist() == [False, False, True]
    assert ds.target(0)["area"].tolist() == [41.25, 63.5, 1234.5]
    assert ds.target(1)["area"].tolist() == [30.0]  # no "area" in the file: the box's 5 × 6
    _, t = ds[0]  # the image path carries them too
    assert t["iscrowd"].tolist() == [False, False, True] and t["area"].tolist() == [41.25, 63.5, 1234.5]


def test_coco_bad_annotations_are_counted_and_reported(tmp_path):
    path, root, data = _coco_files(tmp_path)
    data["annotations"] += [
        {"id": 10, "image_id": 12345, "category_id": 3, "bbox": [1, 1, 2, 2]},  # unknown image
        {"id": 11, "image_id": 5, "category_id": 42, "bbox": [1, 1, 2, 2]},  # unknown category
        {"id": 12, "image_id": 5, "category_id": 3},  # no bbox
        {"id": 13, "image_id": 5, "category_id": 3, "bbox": [1, 2, 3]},  # malformed bbox
        {"id": 14, "image_id": 5, "category_id": 3, "bbox": [4, 4, 0, 5]},  # empty
        {"id": 15, "image_id": 5, "category_id": 3, "bbox": [25, 25, 10, 10]},  # clipped to 30×30
    ]
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="skipped 5 unusable annotation"):
        ds = CocoDetection(path, root, include_crowd=False)
    assert ds.skipped == {"crowd": 1, "unknown_image": 1, "unknown_category": 1, "malformed": 2, "empty_box": 1}
    assert ds.target(1)["boxes"].tolist() == [[3, 4, 8, 10], [25, 25, 30, 30]]


def test_coco_structural_errors(tmp_path):
    path, root, data = _coco_files(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        CocoDetection(bad, root)
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(UserError, match="'images'"):
        CocoDetection(bad, root)
    bad.write_text(json.dumps({"images": [{"id": 1}], "categories": []}))
    with pytest.raises(UserError, match=r"images\[0\]"):
        CocoDetection(bad, root)
    with pytest.raises(UserError, match="not found"):
        CocoDetection(tmp_path / "none.json", root)
    with pytest.raises(UserError, match="image folder"):
        CocoDetection(path, tmp_path / "noimgs")
    (root / "im2.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="im2.png"):
        CocoDetection(path, root)[1]


# ------------------------------------------------------------------------------------------------- CSV

def test_multilabel_csv(tmp_path):
    for n in range(3):
        _png(tmp_path / "pics" / f"{n}.png", seed=n)
    (tmp_path / "labels.csv").write_text("path,labels\npics/0.png,sky|tree\n\npics/1.png,tree\n"
                                         "\"pics/2.png\",\n")
    ds = MultilabelCSV(tmp_path / "labels.csv")
    assert ds.classes == ["sky", "tree"] and len(ds) == 3
    assert ds.targets.tolist() == [[1, 1], [0, 1], [0, 0]]
    img, y = ds[1]
    assert img.shape == (3, 12, 16) and torch.equal(y, torch.tensor([0.0, 1.0]))
    given = MultilabelCSV(tmp_path / "labels.csv", classes=["tree", "sky", "sea"], transform=eval_transform(8))
    assert given.targets.tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 0]] and given[0][0].shape == (3, 8, 8)
    with pytest.raises(UserError, match="'sky'"):
        MultilabelCSV(tmp_path / "labels.csv", classes=["tree"])
    (tmp_path / "miss.csv").write_text("pics/0.png,a\npics/404.png,b\n")
    with pytest.raises(UserError, match="404.png"):
        MultilabelCSV(tmp_path / "miss.csv")
    (tmp_path / "bad.csv").write_text("pics/0.png,a,b\n")
    with pytest.raises(UserError, match="bad.csv:1"):
        MultilabelCSV(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("path,labels\n")
    with pytest.raises(UserError, match="no images"):
        MultilabelCSV(tmp_path / "empty.csv")


# ------------------------------------------------------------------------------------------ transforms

def test_transforms_shapes_and_ranges():
    torch.manual_seed(0)
    x = torch.rand(3, 40, 60)
    for tf in (train_transform(24), train_transform(24, scale=(0.5, 1.0), flip=False, color_jitter=0.4)):
        y = tf(x)
        assert y.shape == (3, 24, 24) and y.dtype == torch.float32 and 0 <= float(y.min()) and float(y.max()) <= 1
    u8 = (x * 255).to(torch.uint8)
    assert train_transform(24)(u8).dtype == torch.float32
    e = eval_transform(28)(x)  # resize short side to 32, centre crop 28
    from torchvision.transforms.v2 import functional as TF
    ref = TF.center_crop(TF.resize(x, 32, antialias=True), 28)
    torch.testing.assert_close(e, ref)
    assert inception_eval_transform()(torch.rand(3, 300, 400)).shape == (3, 299, 299)
    # the eval transform is deterministic, the train transform is not
    assert torch.equal(eval_transform(28)(x), e)
    assert not torch.equal(train_transform(24)(x), train_transform(24)(x))
    with pytest.raises(UserError):
        train_transform(24, scale=(0.0, 1.0))
    with pytest.raises(UserError):
        eval_transform(28, resize=20)
