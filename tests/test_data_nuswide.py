"""NUS-WIDE layout loader on a tiny fake layout in tmp_path."""

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.data.nuswide import NUSWIDE, read_nuswide_concepts
from vislearn.errors import UserError

CONCEPTS = ["animal", "sky", "water"]
TRAIN = [("animal", "0001_11.jpg", [1, 0, 0]), ("sky", "0002_12.jpg", [0, 1, 1]),
         ("water", "0003_13.jpg", [0, 0, 0]), ("sky", "0004_14.jpg", [1, 1, 0])]
TEST = [("water", "0005_15.jpg", [0, 0, 1]), ("animal", "0006_16.jpg", [1, 0, 1])]


def make_layout(root, train=TRAIN, test=TEST, windows_prefix=False):
    (root / "ImageList").mkdir(parents=True)
    labels = root / "Groundtruth" / "TrainTestLabels"
    labels.mkdir(parents=True)
    (root / "Concepts81.txt").write_text("\n".join(CONCEPTS) + "\n")
    rng = np.random.default_rng(0)
    for split, rows in (("Train", train), ("Test", test)):
        prefix = "C:\\ImageData\\Flickr\\" if windows_prefix else ""
        (root / "ImageList" / f"{split}Imagelist.txt").write_text(
            "".join(f"{prefix}{folder}\\{name}\r\n" for folder, name, _ in rows))
        for j, c in enumerate(CONCEPTS):
            (labels / f"Labels_{c}_{split}.txt").write_text("".join(f"{r[2][j]}\n" for r in rows))
        for folder, name, _ in rows:
            (root / "Flickr" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / "Flickr" / folder / name)


def test_reads_layout_targets_and_images(tmp_path):
    make_layout(tmp_path)
    ds = NUSWIDE(tmp_path, "train", drop_unlabeled=False)
    assert ds.classes == CONCEPTS == read_nuswide_concepts(tmp_path)
    assert len(ds) == 4 and ds.num_dropped == 0
    assert ds.targets.tolist() == [r[2] for r in TRAIN]
    assert ds.paths[1] == tmp_path / "Flickr" / "sky" / "0002_12.jpg"
    image, target = ds[1]
    assert image.shape == (3, 20, 24) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert target.tolist() == [0, 1, 1]
    assert ds.label_frequencies().tolist() == [2, 2, 1]
    test = NUSWIDE(tmp_path, "test", transform=lambda x: x[:, :8, :8])
    assert test[0][0].shape == (3, 8, 8) and test.targets.tolist() == [r[2] for r in TEST]


def test_drop_unlabeled_and_windows_paths(tmp_path):
    make_layout(tmp_path, windows_prefix=True)
    ds = NUSWIDE(tmp_path, "train")  # drop_unlabeled=True: the unlabeled "water" image goes
    assert len(ds) == 3 and ds.num_dropped == 1
    assert [p.parent.name for p in ds.paths] == ["animal", "sky", "sky"]


def test_label_anomaly_is_counted_and_warned(tmp_path):
    make_layout(tmp_path)
    f = tmp_path / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Train.txt"
    f.write_text("0\n-1130179\n0\n1\n")
    with pytest.warns(UserWarning, match="other than 0/1"):
        ds = NUSWIDE(tmp_path, "train", drop_unlabeled=False)
    assert ds.label_anomalies == [(str(f), 2, -1130179)]
    assert ds.targets[1].tolist() == [0, 0, 1]


@pytest.mark.parametrize("breakage,match", [
    (lambda r: (r / "Groundtruth" / "TrainTestLabels" / "Labels_water_Train.txt").unlink(), "Labels_water_Train"),
    (lambda r: (r / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Train.txt").write_text("0\n1\n"), "has 2 labels"),
    (lambda r: (r / "Groundtruth" / "TrainTestLabels" / "Labels_sky_Train.txt").write_text("0\nx\n0\n1\n"),
     "Labels_sky_Train.txt:2"),
    (lambda r: (r / "Concepts81.txt").unlink(), "concept list"),
    (lambda r: (r / "ImageList" / "TrainImagelist.txt").unlink(), "train image list"),
    (lambda r: (r / "Flickr" / "animal" / "0001_11.jpg").unlink(), "0001_11.jpg"),
])
def test_broken_layouts_raise_clear_errors(tmp_path, breakage, match):
    make_layout(tmp_path)
    breakage(tmp_path)
    with pytest.raises(UserError, match=match):
        NUSWIDE(tmp_path, "train")


def test_bad_arguments_and_corrupt_image(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        NUSWIDE(tmp_path / "missing")
    make_layout(tmp_path)
    with pytest.raises(UserError, match="split"):
        NUSWIDE(tmp_path, "val")
    ds = NUSWIDE(tmp_path, "train")
    ds.paths[0].write_bytes(b"not an image")
    with pytest.raises(UserError, match="0001_11.jpg"):
        ds[0]
