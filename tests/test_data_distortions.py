"""Distortions: severity monotone in level, determinism, oracles (scipy blur, PIL JPEG), regions."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from vislearn.data.distortions import DISTORTIONS, LEVELS, distort, distort_region
from vislearn.data.embedded import photos, shapes_classification
from vislearn.errors import UserError


@pytest.fixture(scope="module")
def images():
    p = photos(["astronaut", "coffee", "text"], size=48)
    ph = torch.stack([im[:, :48, :48] for im in p.values()])
    sh = shapes_classification("train", num_classes=4, samples_per_class=1, image_size=32).images
    return ph, sh


@pytest.mark.parametrize("kind", DISTORTIONS)
def test_severity_strictly_increases_with_level(images, kind):
    for batch in images:
        for img in batch:
            mse = [float(((distort(img, kind, lv) - img) ** 2).mean()) for lv in range(1, 6)]
            assert all(a < b for a, b in zip(mse[:-1], mse[1:], strict=True)), (kind, mse)
            assert mse[0] > 0


@pytest.mark.parametrize("kind", DISTORTIONS)
def test_shape_range_and_batch_consistency(images, kind):
    ph, _ = images
    out = distort(ph, kind, 3, seed=5)
    assert out.shape == ph.shape and out.dtype == ph.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, distort(ph, kind, 3, seed=5))  # deterministic
    if kind != "noise":  # deterministic per image: batch == one by one
        one = torch.stack([distort(im, kind, 3) for im in ph])
        torch.testing.assert_close(out, one, atol=1e-6, rtol=0)


def test_noise_seed_and_std(images):
    ph, _ = images
    x = torch.full((3, 64, 64), 0.5)
    a, b = distort(x, "noise", 2, seed=0), distort(x, "noise", 2, seed=1)
    assert not torch.equal(a, b)
    assert abs(float((a - x).std()) - LEVELS["noise"][1]) < 0.003  # no clipping around 0.5


def test_blur_matches_scipy_gaussian_filter(images):
    ph, _ = images
    for lv in (1, 3, 5):
        sigma = LEVELS["blur"][lv - 1]
        ours = distort(ph[0], "blur", lv).numpy()
        ref = np.stack([gaussian_filter(c, sigma, mode="nearest", truncate=3.0)
                        for c in ph[0].numpy().astype(np.float64)])
        np.testing.assert_allclose(ours, np.clip(ref, 0, 1), atol=2e-6)


def test_jpeg_matches_pil_roundtrip(images):
    ph, _ = images
    arr = (ph[1] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=LEVELS["jpeg"][3])
    ref = torch.from_numpy(np.array(Image.open(io.BytesIO(buf.getvalue())))).permute(2, 0, 1).float() / 255
    assert torch.equal(distort(ph[1], "jpeg", 4), ref)


def test_contrast_color_block_closed_forms():
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    m = float((x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0).mean())
    torch.testing.assert_close(distort(x, "contrast", 5), m + 0.12 * (x - m))
    grey = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
    torch.testing.assert_close(distort(x, "color", 5),
                               (grey * torch.tensor([1.3, 1.0, 0.7])[:, None, None]).clamp(0, 1))
    b = distort(x, "block", 2)  # 4×4 blocks on 8×8
    torch.testing.assert_close(b[:, :4, :4], x[:, :4, :4].mean((1, 2), keepdim=True).expand(3, 4, 4))
    y = torch.rand(3, 7, 5)
    b = distort(y, "block", 2)  # 4×4 blocks, the ragged edge averages what it has
    torch.testing.assert_close(b[:, 4:, 4:], y[:, 4:, 4:].mean((1, 2), keepdim=True).expand(3, 3, 1))


@pytest.mark.parametrize("kind", ["blur", "noise", "jpeg"])
def test_distort_region_mask_and_box(images, kind):
    ph, _ = images
    img = ph[0]
    full = distort(img, kind, 4, seed=2)
    out = distort_region(img, kind, 4, (8, 10, 30, 20), seed=2)
    inside = torch.zeros(48, 48, dtype=torch.bool)
    inside[10:20, 8:30] = True
    assert torch.equal(out[:, ~inside], img[:, ~inside])
    torch.testing.assert_close(out[:, inside], full[:, inside])
    assert torch.equal(out, distort_region(img, kind, 4, inside, seed=2))
    # a batch with one box per image
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 48, 48], [0, 0, 0, 0]])
    outb = distort_region(ph, kind, 4, boxes, seed=2)
    assert torch.equal(outb[2], ph[2]) and torch.equal(outb[0, :, 10:], ph[0, :, 10:])
    assert not torch.equal(outb[1, :, 5:, 5:], ph[1, :, 5:, 5:])


def test_bad_arguments(images):
    ph, _ = images
    with pytest.raises(UserError, match="unknown distortion"):
        distort(ph, "fog", 1)
    with pytest.raises(UserError, match="level"):
        distort(ph, "blur", 6)
    with pytest.raises(UserError, match="3×H×W"):
        distort(ph[:, :1], "blur", 1)
    with pytest.raises(UserError, match="mask"):
        distort_region(ph[0], "blur", 1, torch.ones(10, 10))
    with pytest.raises(UserError, match="box"):
        distort_region(ph[0], "blur", 1, (10, 10, 5, 20))


def test_photos():
    p = photos(size=40)
    assert "astronaut" in p and "text" in p and len(p) == 10
    for name, im in p.items():
        assert im.dim() == 3 and im.shape[0] == 3 and min(im.shape[1:]) == 40, name
        assert 0 <= float(im.min()) and float(im.max()) <= 1
    full = photos("camera")["camera"]
    assert full.shape == (3, 512, 512) and torch.equal(full[0], full[2])  # grey repeated
    import skimage.data
    np.testing.assert_allclose(photos("coffee")["coffee"].permute(1, 2, 0).numpy() * 255, skimage.data.coffee(),
                               atol=1e-3)
    with pytest.raises(UserError, match="available"):
        photos(["lena"])


def test_photo_crops_deterministic():
    from vislearn.data.embedded import photo_crops
    a = photo_crops(20, 16, names=["astronaut", "coffee"], seed=1)
    b = photo_crops(20, 16, names=["astronaut", "coffee"], seed=1)
    assert a.images.shape == (20, 3, 16, 16) and torch.equal(a.images, b.images)
    assert set(a.targets.tolist()) <= {0, 1} and a.classes == ["astronaut", "coffee"]
