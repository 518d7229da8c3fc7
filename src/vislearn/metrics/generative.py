"""Reconstruction and distribution metrics for autoencoders and generative models (SWYCC, issue 13).

Pixel metrics take float images in [0, 1], N×C×H×W, and return one value per image (``psnr``,
``ssim``) or a pooled ratio (``high_frequency_ratio``). Distribution distances take two feature
matrices (N×D, one row per image) from a feature network chosen by the caller: the Fréchet distance
(FID's formula when the features are Inception pool features) and CMMD's MMD (when they are CLIP
embeddings). They never download or pick a network themselves.

* :func:`psnr`: ``10 log10(R² / MSE)`` per image, R the data range.
* :func:`ssim`: Wang et al. 2004 with an 11×11 Gaussian window (σ = 1.5, truncated at 3.5σ), K1 =
  0.01, K2 = 0.03, population (not sample) covariances, averaged over channels and over the pixels
  whose window lies inside the image: equal to ``skimage.metrics.structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=R, channel_axis=0)``
  (scikit-image crops the 5 border pixels, so its reflect padding never enters the mean).
* :func:`high_frequency_ratio`: high-frequency energy of the reconstructions over the originals'
  (band defined in the function's docstring). 1 means as much fine detail as the originals; an MSE
  autoencoder's blur gives < 1, noise or hallucinated texture > 1. SWYCC's claim (a) is that its
  decoder lands closer to 1 than an MSE autoencoder's; the band is our choice (the paper reports no
  such number).
* :func:`frechet_distance`: ``|μ_a − μ_b|² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})`` with unbiased
  covariances, in float64 (torchmetrics' ``FrechetInceptionDistance`` computes the same from the same
  features).
* :func:`mmd`: CMMD's estimator (Jayasumana et al. 2024; google-research ``cmmd/distance.py``):
  Gaussian RBF kernel ``exp(−|x − y|² / (2σ²))``, σ = 10, the biased (V-statistic) estimate
  ``mean K_aa + mean K_bb − 2 mean K_ab`` with the diagonals included, × 1000. CMMD's embeddings are
  L2-normalised CLIP vectors; :func:`mmd` uses the features as given.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.models.base import check_images

__all__ = ["frechet_distance", "high_frequency_energy", "high_frequency_ratio", "mmd", "psnr", "ssim"]

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # the window radius is int(3.5 σ + 0.5) = 5, as scipy.ndimage and scikit-image
SSIM_K1, SSIM_K2 = 0.01, 0.03
CMMD_SIGMA = 10.0
CMMD_SCALE = 1000.0


def psnr(recon: torch.Tensor, orig: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one value per image (N,); ``inf`` where the images are equal."""
    _check_pair(recon, orig, "psnr")
    mse = (recon.double() - orig.double()).square().flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).to(recon.dtype)


def _gaussian_window(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(recon: torch.Tensor, orig: torch.Tensor, data_range: float = 1.0, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean structural similarity per image (N,), as scikit-image with Gaussian weights (module docstring).

    Images must be at least as large as the window (11×11 for σ = 1.5). Computed in float64.
    """
    _check_pair(recon, orig, "ssim")
    w = _gaussian_window(sigma, SSIM_TRUNCATE, torch.float64, recon.device)
    if min(recon.shape[-2:]) < w.numel():
        raise UserError(f"ssim: images must be at least {w.numel()}×{w.numel()} for sigma={sigma}, "
                        f"got {tuple(recon.shape[-2:])}")
    n, c = recon.shape[:2]
    x = recon.double().reshape(n * c, 1, *recon.shape[-2:])
    y = orig.double().reshape(n * c, 1, *orig.shape[-2:])

    def blur(z: torch.Tensor) -> torch.Tensor:  # separable, 'valid': only windows inside the image
        return F.conv2d(F.conv2d(z, w.view(1, 1, 1, -1)), w.view(1, 1, -1, 1))

    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(n, -1).mean(1).to(recon.dtype)


def high_frequency_energy(images: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Per-image energy ``Σ |FFT(x)|² / (H W)`` over frequencies with radius ``sqrt(fx² + fy²) > cutoff``.

    ``fx, fy`` are in cycles per pixel (``torch.fft.fftfreq``, Nyquist = 0.5), summed over channels.
    An empty batch gives an empty result.
    """
    if not isinstance(images, torch.Tensor) or not torch.is_floating_point(images) or images.dim() != 4:
        raise UserError(f"high_frequency_energy: images must be a real floating N×C×H×W tensor, got "
                        f"{getattr(images, 'dtype', type(images).__name__)} "
                        f"shape {tuple(getattr(images, 'shape', ()))}")
    if images.shape[0] == 0:
        return images.new_zeros(0, dtype=torch.float64)
    h, w = images.shape[-2:]
    fy = torch.fft.fftfreq(h, device=images.device, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(w, device=images.device, dtype=torch.float64).view(1, -1)
    band = (fx.square() + fy.square()).sqrt() > cutoff
    power = torch.fft.fft2(images.double(), norm="ortho").abs().square()
    return (power * band).flatten(1).sum(1)


def high_frequency_ratio(recon: torch.Tensor, orig: torch.Tensor, cutoff: float = 0.25,
                         reduction: str = "pooled") -> torch.Tensor:
    """High-frequency energy of ``recon`` over that of ``orig``.

    The band: spatial frequencies whose radius ``sqrt(fx² + fy²)`` (cycles per pixel, from the 2-D DFT
    of each channel, no window, DC excluded) exceeds ``cutoff``; the default 0.25 is half the Nyquist
    frequency, i.e. detail finer than 4 pixels per cycle. The energy is Parseval-normalised (it is the
    pixel-domain energy of the band-passed image). Our choice of band; the SWYCC paper gives none.

    Args:
        recon, orig: N×C×H×W images in [0, 1], same shape.
        cutoff: in (0, √0.5); 0.25 = half Nyquist.
        reduction: ``"pooled"`` (default): total band energy of all reconstructions over that of all
            originals, one number robust to flat images; ``"none"``: the ratio per image (N,).

    Identical images give 1, a blur < 1, added white noise > 1. ``UserError`` if the originals have
    no energy in the band (e.g. constant images).
    """
    _check_pair(recon, orig, "high_frequency_ratio")
    if not 0 < cutoff < math.sqrt(0.5):
        raise UserError(f"cutoff must be in (0, {math.sqrt(0.5):.4f}) cycles per pixel, got {cutoff!r}")
    if reduction not in ("pooled", "none"):
        raise UserError(f"reduction must be 'pooled' or 'none', got {reduction!r}")
    num, den = high_frequency_energy(recon, cutoff), high_frequency_energy(orig, cutoff)
    if reduction == "pooled":
        num, den = num.sum(), den.sum()
    if (den <= 1e-20).any():
        raise UserError("high_frequency_ratio: the original images have no energy above the cutoff "
                        f"({cutoff} cycles/pixel); the ratio is undefined")
    return (num / den).to(recon.dtype)


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> torch.Tensor:
    """Fréchet distance of Gaussians fitted to two feature sets (N_a×D, N_b×D), float64 scalar.

    ``tr (Σ_a Σ_b)^{1/2}`` is computed as the sum of square roots of the eigenvalues of the symmetric
    ``Σ_a^{1/2} Σ_b Σ_a^{1/2}`` (the same spectrum as ``Σ_a Σ_b``; negative round-off clamped to 0).
    With fewer samples than dimensions the covariances are singular and the value is biased: compare
    only numbers computed from the same sample sizes and the same feature network.
    """
    a, b = _check_feats(feats_a, feats_b, "frechet_distance", min_rows=2)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    evals, evecs = torch.linalg.eigh(cov_a)
    root_a = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross


def mmd(feats_a: torch.Tensor, feats_b: torch.Tensor, sigma: float = CMMD_SIGMA) -> torch.Tensor:
    """CMMD's maximum mean discrepancy × 1000 (biased estimator, RBF kernel of bandwidth ``sigma``), float64.

    Example::

        cmmd = mmd(clip_embeddings_real, clip_embeddings_generated)  # sigma = 10 as CMMD
    """
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not sigma > 0:
        raise UserError(f"mmd: sigma must be a positive number, got {sigma!r}")
    a, b = _check_feats(feats_a, feats_b, "mmd", min_rows=1)
    gamma = 1.0 / (2.0 * sigma**2)

    def mean_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sq = (x.square().sum(1, keepdim=True) + y.square().sum(1) - 2 * x @ y.T).clamp_min(0)
        return torch.exp(-gamma * sq).mean()

    return CMMD_SCALE * (mean_kernel(a, a) + mean_kernel(b, b) - 2 * mean_kernel(a, b))


def _check_pair(recon: torch.Tensor, orig: torch.Tensor, where: str) -> None:
    check_images(recon, in_chans=None, where=f"{where}: recon")
    check_images(orig, in_chans=None, where=f"{where}: orig")
    if recon.shape != orig.shape:
        raise UserError(f"{where}: recon and orig must have the same shape, got {tuple(recon.shape)} "
                        f"and {tuple(orig.shape)}")


def _check_feats(a: torch.Tensor, b: torch.Tensor, where: str, min_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    for name, f in (("feats_a", a), ("feats_b", b)):
        if not isinstance(f, torch.Tensor) or f.dim() != 2:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise UserError(f"{where}: {name} must be an N×D tensor, got {got}")
        if f.shape[0] < min_rows:
            raise UserError(f"{where}: {name} needs at least {min_rows} rows, got {f.shape[0]}")
        if not torch.isfinite(f).all():
            raise UserError(f"{where}: {name} contains NaN or inf")
    if a.shape[1] != b.shape[1]:
        raise UserError(f"{where}: feature widths differ: {a.shape[1]} vs {b.shape[1]}")
    return a.double(), b.double()
