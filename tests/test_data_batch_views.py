"""The batched BYOL views equal torchvision's functional ops applied per sample with the same parameters."""

from __future__ import annotations

import random

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from vislearn.data.batch_views import ViewSpec, apply_view_params, draw_view_params, hsv_to_rgb, rgb_to_hsv
from vislearn.data.multicrop import MultiCrop, MultiCropDataset, TensorMultiCrop, collate_views, view_seed
from vislearn.errors import UserError


def _images(n=6, size=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def _torchvision_view(img, p, spec):
    """The oracle: torchvision's functional ops, in our documented fixed order, with our parameters."""
    x = TF.resized_crop(img, p["top"], p["left"], p["height"], p["width"], [spec.size, spec.size],
                        interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    if p["flip"]:
        x = TF.horizontal_flip(x)
    x = TF.adjust_brightness(x, p["brightness"])
    x = TF.adjust_contrast(x, p["contrast"])
    x = TF.adjust_saturation(x, p["saturation"])
    if p["hue"] != 0:
        x = TF.adjust_hue(x, p["hue"])
    if p["grayscale"]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p["blur"]:
        x = TF.gaussian_blur(x, [spec.blur_kernel] * 2, [p["sigma"]] * 2)
    if p["solarize"]:
        x = TF.solarize(x, 0.5)
    return x


@pytest.mark.parametrize("size,scale", [(16, (0.25, 1.0)), (8, (0.08, 0.25)), (24, (0.25, 1.0))])
def test_batched_view_equals_torchvision_functional_per_sample(size, scale):
    images = _images(8, 20)
    # probabilities 0.5 so that every branch is exercised on and off across the 8 x 3 draws
    spec = ViewSpec(size, scale, blur_p=0.5, solarize_p=0.5, color_jitter_p=0.7, grayscale_p=0.3)
    for trial in range(3):
        rngs = [random.Random(100 * trial + i) for i in range(len(images))]
        params = [draw_view_params(r, 20, 20, spec) for r in rngs]
        out = apply_view_params(images, params, spec)
        assert out.shape == (8, 3, size, size) and out.dtype == torch.float32
        for img, p, o in zip(images, params, out, strict=True):
            torch.testing.assert_close(o, _torchvision_view(img, p, spec), atol=2e-5, rtol=0)
    flags = {k: {p[k] for p in params} for k in ("flip", "grayscale", "blur", "solarize")}
    assert all(v == {0.0, 1.0} for v in flags.values())


def test_hsv_round_trip_and_torchvision_hue():
    x = _images(4, 8)
    x[0, :, 0, 0] = 0.5  # gray pixel (no hue), black pixel, two equal maxima
    x[0, :, 0, 1] = 0.0
    x[0, :, 0, 2] = torch.tensor([0.7, 0.7, 0.1])
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6, rtol=0)
    hsv = rgb_to_hsv(x)
    assert float(hsv[:, 0].min()) >= 0 and float(hsv[:, 0].max()) < 1
    shifted = hsv_to_rgb(torch.cat([torch.remainder(hsv[:, :1] + 0.3, 1.0), hsv[:, 1:]], 1))
    torch.testing.assert_close(shifted, torch.stack([TF.adjust_hue(i, 0.3) for i in x]), atol=2e-5, rtol=0)


def test_crop_box_area_and_aspect_within_ranges():
    spec = ViewSpec(8, (0.08, 0.25), 0.0, 0.0)
    rng = random.Random(0)
    for _ in range(200):
        p = draw_view_params(rng, 32, 32, spec)
        assert 0 <= p["top"] <= 32 - p["height"] and 0 <= p["left"] <= 32 - p["width"]
        assert 0.05 <= p["height"] * p["width"] / 1024 <= 0.3  # rounding of the side lengths


def test_views_depend_on_the_sample_seed_only():
    mc = TensorMultiCrop(16, 8, num_local=2)
    images = _images(5, 16)
    seeds = [11, 12, 13, 14, 15]
    batch = mc.batch_views(images, seeds)
    assert [tuple(v.shape) for v in batch] == [(5, 3, 16, 16)] * 2 + [(5, 3, 8, 8)] * 2
    single = mc(images[3], seed=14)
    for v, s in zip(batch, single, strict=True):
        torch.testing.assert_close(v[3], s, atol=1e-6, rtol=0)
    again = mc.batch_views(images[[3, 0]], [14, 11])
    torch.testing.assert_close(again[2][0], batch[2][3], atol=1e-6, rtol=0)
    assert not torch.allclose(mc(images[3], seed=99)[0], single[0])


def test_dataset_batches_by_seed_epoch_and_index():
    from vislearn.data.embedded import TensorImageDataset

    base = TensorImageDataset(_images(6, 16), torch.arange(6))
    ds = MultiCropDataset(base, TensorMultiCrop(16, 8, num_local=0), seed=3)
    items = ds.__getitems__([4, 1, 5])
    assert [lab for _, lab in items] == [4, 1, 5] and len(items[0][0]) == 2
    one = ds[1]
    torch.testing.assert_close(items[1][0][1], one[0][1], atol=1e-6, rtol=0)
    torch.testing.assert_close(one[0][0], ds.multicrop(base[1][0], seed=view_seed(3, 0, 1))[0])
    ds.clock.epoch = 1
    assert not torch.allclose(ds[1][0][0], one[0][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_views)
    views, labels = next(iter(loader))
    ds.clock.epoch = 0
    assert labels.tolist() == [0, 1, 2] and views[0].shape == (3, 3, 16, 16)
    plain = MultiCropDataset(base, MultiCrop(16, 8, num_local=1), seed=3)
    assert len(plain.__getitems__([0, 2])) == 2


def test_bad_input():
    with pytest.raises(UserError, match="blur_p"):
        ViewSpec(8, (0.5, 1.0), blur_p=1.5, solarize_p=0.0)
    with pytest.raises(UserError, match="jitter"):
        TensorMultiCrop(16, 8, jitter=(0.4, 0.4, 0.2, 0.7))
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        TensorMultiCrop(16, 8).batch_views(_images(2, 16) * 255, [0, 1])
    with pytest.raises(UserError, match="B, 3, H, W"):
        TensorMultiCrop(16, 8).batch_views(_images(2, 16)[:, :1], [0, 1])
