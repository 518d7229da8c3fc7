"""CUB-200-2011, Cars196 and Stanford Online Products loaders on tiny fake layouts; embedded shapes split."""

import numpy as np
import pytest
import torch

from vislearn.data.retrieval_sets import cars196, cub200, shapes_retrieval, stanford_online_products
from vislearn.errors import UserError


def _write_image(path, value):
    from torchvision.io import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.full((3, 6, 5), value, dtype=torch.uint8), str(path))


def _fake_cub(root, classes=(1, 2, 100, 101, 150, 200)):
    (root / "images").mkdir(parents=True)
    lines, labels, names = [], [], []
    for i, c in enumerate(classes, 1):
        rel = f"{c:03d}.Bird_{c}/img_{i}.png"
        _write_image(root / "images" / rel, 10 * i)
        lines.append(f"{i} {rel}")
        labels.append(f"{i} {c}")
    for c in sorted(set(classes)):
        names.append(f"{c} {c:03d}.Bird_{c}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "classes.txt").write_text("\n".join(names) + "\n")


def test_cub_split_and_load(tmp_path):
    _fake_cub(tmp_path / "CUB_200_2011")
    tr = cub200(tmp_path, "train")  # the parent folder works too
    te = cub200(tmp_path / "CUB_200_2011", "test")
    assert tr.class_ids.tolist() == [1, 2, 100] and tr.targets.tolist() == [0, 1, 2]
    assert te.class_ids.tolist() == [101, 150, 200] and te.targets.tolist() == [0, 1, 2]
    assert te.classes[0] == "101.Bird_101"
    assert len(cub200(tmp_path, "all")) == 6
    x, t = te[1]
    assert x.shape == (3, 6, 5) and int(t) == 1
    assert x.max().item() == pytest.approx(50 / 255, abs=1e-6)


def test_cub_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        cub200(tmp_path / "nope")
    with pytest.raises(UserError, match="no images.txt"):
        cub200(tmp_path)
    _fake_cub(tmp_path)
    with pytest.raises(UserError, match="split"):
        cub200(tmp_path, "val")
    (tmp_path / "image_class_labels.txt").write_text("1 1\n")
    with pytest.raises(UserError, match="image id 2 has no label"):
        cub200(tmp_path)
    (tmp_path / "image_class_labels.txt").write_text("1\n")
    with pytest.raises(UserError, match=r"image_class_labels.txt:1: expected 2 fields"):
        cub200(tmp_path)


def test_cars196(tmp_path):
    import scipy.io

    rows = [("car_ims/000001.jpg", 1, 0), ("car_ims/000002.jpg", 98, 1), ("car_ims/000003.jpg", 99, 0),
            ("car_ims/000004.jpg", 196, 1)]
    annos = np.zeros((1, len(rows)), dtype=[("relative_im_path", "O"), ("class", "O"), ("test", "O")])
    for i, (p, c, t) in enumerate(rows):
        annos[0, i] = (p, np.array([[c]], dtype=np.uint8 if c < 256 else np.uint16), np.array([[t]]))
    names = np.empty((1, 196), dtype=object)
    for i in range(196):
        names[0, i] = f"Car {i + 1}"
    scipy.io.savemat(tmp_path / "cars_annos.mat", {"annotations": annos, "class_names": names})
    tr, te = cars196(tmp_path, "train"), cars196(tmp_path, "test")
    assert tr.class_ids.tolist() == [1, 98] and te.class_ids.tolist() == [99, 196]
    assert te.targets.tolist() == [0, 1] and te.classes == ["Car 99", "Car 196"]
    assert te.paths[0] == tmp_path / "car_ims/000003.jpg"
    with pytest.raises(UserError, match="does not exist"):
        te[0]
    (tmp_path / "cars_annos.mat").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read"):
        cars196(tmp_path)


def test_stanford_online_products(tmp_path):
    root = tmp_path / "Stanford_Online_Products"
    root.mkdir()
    head = "image_id class_id super_class_id path\n"
    (root / "Ebay_train.txt").write_text(head + "1 1 1 bicycle_final/a_0.JPG\n2 1 1 bicycle_final/a_1.JPG\n"
                                                "3 11318 12 toaster_final/b_0.JPG\n")
    (root / "Ebay_test.txt").write_text(head + "4 11319 1 bicycle_final/c_0.JPG\n5 22634 12 toaster_final/d_0.JPG\n")
    tr, te = stanford_online_products(tmp_path, "train"), stanford_online_products(root, "test")
    assert tr.targets.tolist() == [0, 0, 1] and tr.class_ids.tolist() == [1, 1, 11318]
    assert te.class_ids.tolist() == [11319, 22634] and te.paths[1] == root / "toaster_final/d_0.JPG"
    assert len(stanford_online_products(root, "all")) == 5
    (root / "Ebay_test.txt").write_text(head + "4 x 1 bicycle_final/c_0.JPG\n")
    with pytest.raises(UserError, match="expected an integer"):
        stanford_online_products(root, "test")


def test_shapes_retrieval_class_disjoint():
    tr = shapes_retrieval("train", num_classes=100, samples_per_class=2, image_size=16)
    te = shapes_retrieval("test", num_classes=100, samples_per_class=2, image_size=16)
    assert len(tr) == 100 and len(te) == 100
    assert tr.targets.min() == 0 and tr.targets.max() == 49 and te.targets.max() == 49
    assert set(tr.class_ids.tolist()).isdisjoint(te.class_ids.tolist())
    assert len(tr.classes) == 50 and not set(tr.classes) & set(te.classes)
    assert tr.images.shape[1:] == (3, 16, 16)
    with pytest.raises(UserError, match="num_classes"):
        shapes_retrieval(num_classes=1)
