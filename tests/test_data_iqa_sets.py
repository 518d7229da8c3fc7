"""TID2013 / KADID-10k / BAPPS-2AFC readers on tiny fake layouts."""

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.data.iqa_sets import bapps_2afc, kadid10k, open_judgments, tid2013
from vislearn.errors import UserError


def _img(path, seed, size=(20, 16)):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255


def test_tid2013_layout(tmp_path):
    r1 = _img(tmp_path / "reference_images" / "I01.BMP", 0)
    _img(tmp_path / "reference_images" / "I02.BMP", 1)
    d = _img(tmp_path / "distorted_images" / "i01_01_1.bmp", 2)
    _img(tmp_path / "distorted_images" / "i02_03_5.bmp", 3)
    _img(tmp_path / "distorted_images" / "I02_01_1.bmp", 4)  # case differs in some releases
    (tmp_path / "mos_with_names.txt").write_text("5.51429 i01_01_1.bmp\n2.5 i02_03_5.bmp\n4.0 i02_01_1.bmp\n")
    ds = open_judgments(tmp_path)
    assert ds.name == "tid2013" and len(ds) == 3 and ds.higher_is_better
    ref, dist, mos = ds[0]
    torch.testing.assert_close(ref, r1)
    torch.testing.assert_close(dist, d)
    assert mos == pytest.approx(5.51429)
    assert ds.ref_keys == ["i01.bmp", "i02.bmp", "i02.bmp"]
    small = tid2013(tmp_path, image_size=8, limit=2)
    assert len(small) == 2 and small[1][0].shape == (3, 8, 10)
    (tmp_path / "mos_with_names.txt").write_text("5.5 i01_02_1.bmp\n")
    with pytest.raises(UserError, match="i01_02_1.bmp is not in"):
        tid2013(tmp_path)
    (tmp_path / "mos_with_names.txt").write_text("oops\n")
    with pytest.raises(UserError, match="mos_with_names.txt:1"):
        tid2013(tmp_path)


def test_kadid10k_layout(tmp_path):
    _img(tmp_path / "images" / "I01.png", 0)
    d = _img(tmp_path / "images" / "I01_01_01.png", 1)
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.496\n")
    ds = kadid10k(tmp_path)
    _, dist, score = ds[0]
    torch.testing.assert_close(dist, d)
    assert score == pytest.approx(4.57) and len(ds) == 1
    (tmp_path / "dmos.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="expected columns"):
        kadid10k(tmp_path)


def test_bapps_layout(tmp_path):
    for sub in ("traditional", "cnn"):
        base = tmp_path / "val" / sub
        for i in range(2):
            for k, s in enumerate(("ref", "p0", "p1")):
                _img(base / s / f"{i:06d}.png", 10 * i + k, size=(16, 16))
            (base / "judge").mkdir(exist_ok=True)
            np.save(base / "judge" / f"{i:06d}.npy", np.array([0.25 * (i + 1)]))
    ds = open_judgments(tmp_path)
    assert len(ds) == 4
    ref, p0, p1, j = ds[1]
    assert ref.shape == p0.shape == p1.shape == (3, 16, 16) and j == pytest.approx(0.5)
    np.save(tmp_path / "val" / "cnn" / "judge" / "000000.npy", np.array([1.5]))
    with pytest.raises(UserError, match="not a fraction"):
        bapps_2afc(tmp_path)
    with pytest.raises(UserError, match="not a TID2013"):
        open_judgments(tmp_path / "val" / "cnn" / "ref")
