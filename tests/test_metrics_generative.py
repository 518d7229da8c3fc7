"""vislearn.metrics.generative against scikit-image, torchmetrics, numpy and hand cases."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.image.fid import _compute_fid

from vislearn.errors import UserError
from vislearn.metrics.generative import frechet_distance, high_frequency_ratio, mmd, psnr, ssim


def images(seed, shape=(3, 3, 24, 20)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def blur(x):
    k = torch.tensor([0.25, 0.5, 0.25])
    k2 = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 3, 3)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular"), k2,
                                      groups=x.shape[1])


def test_psnr_equals_skimage():
    a, b = images(0), images(1)
    ours = psnr(a, b)
    for i in range(a.shape[0]):
        ref = peak_signal_noise_ratio(b[i].double().numpy(), a[i].double().numpy(), data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, rel=1e-5)
    assert psnr(a, a)[0].item() == math.inf


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_equals_skimage_gaussian(channels):
    a = images(2, (2, channels, 24, 20))
    b = (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    ours = ssim(b, a)
    for i in range(a.shape[0]):
        ref = structural_similarity(a[i].double().numpy(), b[i].double().numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-4)
    assert torch.allclose(ssim(a, a), torch.ones(2))


def test_high_frequency_ratio_hand_cases():
    x = images(4, (4, 3, 32, 32))
    assert high_frequency_ratio(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert high_frequency_ratio(blur(x), x).item() < 0.5
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5)))
    assert high_frequency_ratio(noisy.clamp(0, 1), x.clamp(0, 1)).item() > 1.0


def test_high_frequency_ratio_band_is_radius_above_half_nyquist():
    # a cosine at 0.375 cycles/pixel (above 0.25) scaled by 1/2 keeps 1/4 of the energy; at 0.125 it has none
    n = torch.arange(32, dtype=torch.float64)
    hi = (0.5 + 0.5 * torch.cos(2 * math.pi * 0.375 * n)).expand(1, 1, 32, 32).contiguous()
    lo = (0.5 + 0.5 * torch.cos(2 * math.pi * 0.125 * n)).expand(1, 1, 32, 32).contiguous()
    assert high_frequency_ratio(0.5 + 0.5 * (hi - 0.5), hi).item() == pytest.approx(0.25, rel=1e-9)
    # a diagonal wave at (0.1875, 0.1875): radius 0.265 > 0.25, although each axis is below it
    diag = (0.5 + 0.5 * torch.cos(2 * math.pi * 0.1875 * (n.view(-1, 1) + n.view(1, -1)))).view(1, 1, 32, 32)
    half = high_frequency_ratio(0.5 + 0.5 * (diag - 0.5), diag, reduction="none")
    assert half.shape == (1,) and half.item() == pytest.approx(0.25, rel=1e-9)
    with pytest.raises(UserError, match="no energy above the cutoff"):
        high_frequency_ratio(hi, lo)


def test_frechet_distance_equals_torchmetrics():
    g = torch.Generator().manual_seed(6)
    a = torch.randn(200, 16, generator=g, dtype=torch.float64)
    b = 0.7 * torch.randn(150, 16, generator=g, dtype=torch.float64) @ torch.randn(16, 16, generator=g,
                                                                                  dtype=torch.float64) + 0.3
    ref = _compute_fid(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))
    assert frechet_distance(a, b).item() == pytest.approx(ref.item(), rel=1e-8)
    assert frechet_distance(a, a).item() == pytest.approx(0.0, abs=1e-8)


def test_mmd_hand_computed_three_vs_three():
    a = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    b = np.array([[10.0, 0.0], [0.0, 5.0], [2.0, 2.0]])

    def mean_k(x, y):  # the CMMD estimator written out with loops
        return sum(math.exp(-np.sum((p - q) ** 2) / (2 * 10.0**2)) for p in x for q in y) / (len(x) * len(y))

    expected = 1000 * (mean_k(a, a) + mean_k(b, b) - 2 * mean_k(a, b))
    assert mmd(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(expected, rel=1e-10)
    assert mmd(torch.tensor(a), torch.tensor(a)).item() == pytest.approx(0.0, abs=1e-10)


def test_errors():
    x = images(7)
    with pytest.raises(UserError, match="same shape"):
        psnr(x, x[:, :, :10])
    with pytest.raises(UserError, match=r"values must be in \[0, 1\]"):
        ssim(x * 3, x)
    with pytest.raises(UserError, match="at least 11×11"):
        ssim(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(UserError, match="widths differ"):
        mmd(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(UserError, match="sigma must be a positive number, got 0"):
        mmd(torch.zeros(3, 2), torch.zeros(3, 2), sigma=0)
    with pytest.raises(UserError, match="at least 2 rows"):
        frechet_distance(torch.zeros(1, 2), torch.zeros(3, 2))
    with pytest.raises(UserError, match="cutoff"):
        high_frequency_ratio(x, x, cutoff=0.9)
