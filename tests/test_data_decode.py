"""The uint8 data path: decoding (torchvision.io or PIL) and crop/resize on uint8 with float last, against
PIL decoding, the old float-first path and torchvision's transforms v2 applied to a PIL image."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from vislearn.data.decode import decode_image_bytes, read_image, to_float_image
from vislearn.data.formats import ImageFolderDataset, load_image
from vislearn.data.transforms import eval_transform, train_transform
from vislearn.errors import UserError


def _photo(h: int = 61, w: int = 83, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 70 * np.sin(x[..., None] / 9.0 * np.array([1.0, 1.4, 0.7]) + y[..., None] / 13.0)
    return (base + rng.normal(0, 10, (h, w, 3))).clip(0, 255).astype(np.uint8)


def _encode(arr: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    im = Image.fromarray(arr)
    if mode:
        im = im.convert(mode)
    b = io.BytesIO()
    im.save(b, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return b.getvalue()


@pytest.mark.parametrize("fmt,mode", [("PNG", None), ("PNG", "L"), ("PNG", "P"), ("PNG", "RGBA"), ("JPEG", None),
                                      ("JPEG", "L"), ("JPEG", "CMYK"), ("BMP", None), ("WEBP", None)])
def test_uint8_decode_equals_pil(fmt, mode):
    data = _encode(_photo(), fmt, mode)
    got = decode_image_bytes(data, "x")
    ref = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    assert got.dtype == torch.uint8 and got.shape == ref.shape == (3, 61, 83)
    diff = (got.int() - ref.int()).abs()
    if fmt == "JPEG":  # libjpeg-turbo in torchvision vs Pillow's: the same IDCT on this machine, allow ±2
        assert diff.max() <= 2 and diff.float().mean() < 0.1
    else:
        assert diff.max() == 0


def test_high_bit_depth_stays_float_and_load_image_keeps_its_scale(tmp_path):
    arr = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    got = read_image(tmp_path / "deep.png")
    assert got.dtype == torch.float32
    assert torch.allclose(got[0], torch.from_numpy(arr.astype(np.float32) / 65535), atol=1e-6)
    Image.fromarray(_photo()).save(tmp_path / "rgb.png")
    assert torch.equal(load_image(tmp_path / "rgb.png"), read_image(tmp_path / "rgb.png").float() / 255)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(UserError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")


@pytest.mark.parametrize("name", ["train", "eval"])
def test_uint8_path_matches_the_old_float_first_path_within_resize_rounding(name):
    u8 = torch.from_numpy(_photo(97, 131)).permute(2, 0, 1).contiguous()
    tf = train_transform(48, color_jitter=0.0) if name == "train" else eval_transform(48)
    diffs = []
    for seed in range(8):
        torch.manual_seed(seed)
        new = to_float_image(tf(u8))
        torch.manual_seed(seed)
        old = tf(u8.float() / 255)  # the old path: float32 at full resolution before the crop
        assert new.dtype == old.dtype == torch.float32 and new.shape == old.shape == (3, 48, 48)
        diffs.append((new - old).abs())
    d = torch.stack(diffs)
    assert d.max() <= 1.5 / 255  # uint8 output rounds the resize: at most about one level
    assert d.mean() < 0.5 / 255


def test_dataset_item_equals_transforms_v2_on_the_pil_image(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(_photo(seed=ord(c))).save(tmp_path / c / "0.jpg", quality=92)
    tf = train_transform(32)
    ds = ImageFolderDataset(tmp_path, tf)
    oracle = v2.Compose([v2.PILToTensor(), *tf.transforms[1:]])  # torchvision's own pipeline from PIL
    for i in range(len(ds)):
        torch.manual_seed(i)
        got, _ = ds[i]
        torch.manual_seed(i)
        ref = oracle(Image.open(ds.samples[i][0]).convert("RGB"))
        assert got.dtype == torch.float32
        assert (got - ref).abs().max() <= 2 / 255  # the two JPEG decoders: at most ±2 levels, then identical ops
