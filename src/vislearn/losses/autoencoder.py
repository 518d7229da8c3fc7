"""Losses of the two baseline autoencoders SWYCC is compared with (PAPERS.md section 8).

**MSE autoencoder**: ``λ_mse ‖x − D(E(x))‖² + λ_perceptual P(D(E(x)), x)`` (:func:`mse_autoencoder_loss`).

**GAN autoencoder, SD-VAE style** (Rombach et al. 2022; the loss of taming-transformers' VQGAN,
Esser et al. 2021, Eq. 7, with a KL term instead of a codebook), :class:`GANAutoencoderLoss`::

    L_rec  = mean |x − x̂| + λ_perceptual P(x̂, x)                 (L1 + perceptual, per pixel)
    L_G    = −mean D(x̂)                                             (hinge generator loss)
    λ_adv  = disc_weight · clamp(‖∇_w L_rec‖ / (‖∇_w L_G‖ + 1e-4), 0, 1e4)     (w: last decoder layer)
    L_KL   = Σ_latent KL(N(μ, σ²) ‖ N(0, I)) / (pixels per image), mean over the batch
    L_D    = ½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂)))           (hinge discriminator loss)
    loss   = L_rec + λ_kl L_KL + f(step) λ_adv L_G  +  f(step) L_D

with ``f(step) = 1`` from ``disc_start`` on and 0 before (taming's ``adopt_weight``); ``λ_adv`` is
detached. Facts checked against taming-transformers' ``calculate_adaptive_weight`` (the clamp to
[0, 1e4], ``1e-4`` in the denominator, the detach, the final ``× disc_weight``) and SD's
``LPIPSWithDiscriminator`` (disc_weight 0.5, kl_weight 1e-6, hinge losses with the ½).

Normalisation (our choice, equal to SD's up to one overall factor): SD *sums* its L1+LPIPS loss over
pixels and its KL over latent elements, each divided by the batch. We take per-pixel means (so λ's
are comparable to the MSE and SWYCC arms) and divide the summed KL by the same pixel count, which
keeps SD's ratio of KL to reconstruction, so ``kl_weight = 1e-6`` means what it means in SD. The
adaptive weight is invariant to that factor. SD's learned scalar output log-variance (``logvar``,
initialised to 0) is omitted: the reconstruction term is the plain L1 + perceptual loss.

**One optimizer, gradient isolation.** The engine steps one optimizer over all parameters once per
``module(batch)`` call, so both players' losses are added into one ``loss`` whose gradient reaches
each network only from its own objective:

* ``L_G`` is computed through the discriminator with *detached* parameters
  (:func:`torch.func.functional_call`), so it sends gradient into the autoencoder and none into D;
* ``L_D`` is computed on ``x̂.detach()``, so it sends gradient into D and none into the autoencoder.

Then ``∂loss/∂θ_AE = ∂(L_rec + λ_kl L_KL + λ_adv L_G)/∂θ_AE`` and ``∂loss/∂θ_D = ∂L_D/∂θ_D``; Adam
(or SGD) updates each parameter from its own gradient and state only, so one optimizer step over the
union equals one step of a generator optimizer and one of a discriminator optimizer with the same
hyperparameters, both taken from the same parameters (simultaneous updates). taming alternates
instead: its discriminator step sees reconstructions of the generator already updated in that
iteration, a one-step lag we accept (it is the usual single-pass GAN step). Caveat: a global
gradient-norm clip (``clip_grad``) is taken over both networks' gradients together.

Example::

    loss_fn = GANAutoencoderLoss(PatchDiscriminator(), perceptual=None, lambda_perceptual=0.0, disc_start=0)
    terms = loss_fn(x, x_hat, last_layer_weight, mean=mu, logvar=logvar, step=100)
    terms["loss"].backward()
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.losses._tensors import real_tensor

__all__ = ["GANAutoencoderLoss", "MSEAutoencoderLoss", "adaptive_weight", "disc_factor", "gaussian_kl",
           "hinge_d_loss", "hinge_g_loss", "mse_autoencoder_loss"]

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ADAPTIVE_EPS = 1e-4  # taming's denominator constant
ADAPTIVE_MAX = 1e4  # taming's clamp


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂)))``, the discriminator's hinge loss."""
    for name, t in (("logits_real", logits_real), ("logits_fake", logits_fake)):
        real_tensor(t, name, "hinge_d_loss", tuple(range(1, 9)))
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """``−mean D(x̂)``, the generator's loss against a hinge-trained discriminator."""
    real_tensor(logits_fake, "logits_fake", "hinge_g_loss", tuple(range(1, 9)))
    return -logits_fake.mean()


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor, normalizer: float = 1.0) -> torch.Tensor:
    """``KL(N(μ, e^logvar) ‖ N(0, 1))`` summed over all but the batch dim, divided by ``normalizer``, batch mean.

    Closed form per element: ``½ (μ² + e^logvar − 1 − logvar)``.
    """
    if mean.shape != logvar.shape:
        raise UserError(f"mean and logvar must have the same shape, got {tuple(mean.shape)} and {tuple(logvar.shape)}")
    per_sample = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
    return per_sample.mean() / normalizer


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    disc_weight: float = 1.0) -> torch.Tensor:
    """``disc_weight · clamp(‖∇_w rec_loss‖ / (‖∇_w gan_loss‖ + 1e-4), 0, 1e4)``, detached (VQGAN Eq. 7).

    ``last_layer`` is the weight tensor of the decoder's last layer; both losses must depend on it.
    The graphs are retained (the caller backpropagates the total afterwards).
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    w = torch.linalg.vector_norm(g_rec) / (torch.linalg.vector_norm(g_gan) + ADAPTIVE_EPS)
    return w.clamp(0.0, ADAPTIVE_MAX).detach() * disc_weight


def disc_factor(step: int, disc_start: int) -> float:
    """1 from optimizer step ``disc_start`` on, 0 before (taming's ``adopt_weight`` with factor 1)."""
    return 1.0 if step >= disc_start else 0.0


def mse_autoencoder_loss(images: torch.Tensor, recon: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor,
                         lambda_mse: float = 1.0, lambda_perceptual: float = 0.0,
                         perceptual: Perceptual | None = None) -> dict[str, torch.Tensor]:
    """``λ_mse mean (x − x̂)² + λ_perceptual P(recon, images)``.

    ``x``/``x_hat`` are on the networks' scale (where SWYCC's MSE term is taken, so the arms' MSE terms
    are the same number), ``images``/``recon`` the [0, 1] images the perceptual network sees.
    """
    mse = (x - x_hat).square().mean()
    perc = _perceptual(perceptual, lambda_perceptual, recon, images, mse)
    return {"loss": lambda_mse * mse + lambda_perceptual * perc, "mse": mse.detach(), "perceptual": perc.detach()}


def _perceptual(perceptual: Perceptual | None, weight: float, recon: torch.Tensor, images: torch.Tensor,
                like: torch.Tensor) -> torch.Tensor:
    if perceptual is None or weight <= 0:
        return torch.zeros((), device=like.device, dtype=like.dtype)
    return perceptual(recon, images)


def _check_weight(name: str, v: float) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
        raise UserError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


def _check_perceptual(perceptual: Perceptual | None, weight: float) -> None:
    if perceptual is not None and not callable(perceptual):
        raise UserError(f"perceptual must be a callable (pred, target) -> scalar, got {type(perceptual).__name__}")
    if weight > 0 and perceptual is None:
        raise UserError(f"lambda_perceptual={weight} needs a perceptual callable (pass perceptual=..., "
                        "or lambda_perceptual=0)")


class MSEAutoencoderLoss(nn.Module):
    """The MSE autoencoder's loss with validated weights (:func:`mse_autoencoder_loss`).

    ``forward(images, recon, x, x_hat) -> {"loss", "mse", "perceptual"}``.
    """

    def __init__(self, lambda_mse: float = 1.0, lambda_perceptual: float = 0.0,
                 perceptual: Perceptual | None = None) -> None:
        super().__init__()
        self.lambda_mse = _check_weight("lambda_mse", lambda_mse)
        self.lambda_perceptual = _check_weight("lambda_perceptual", lambda_perceptual)
        _check_perceptual(perceptual, self.lambda_perceptual)
        object.__setattr__(self, "perceptual", perceptual)  # not a submodule: never trained, never saved

    def forward(self, images: torch.Tensor, recon: torch.Tensor, x: torch.Tensor,
                x_hat: torch.Tensor) -> dict[str, torch.Tensor]:
        return mse_autoencoder_loss(images, recon, x, x_hat, self.lambda_mse, self.lambda_perceptual,
                                    self.perceptual)


class GANAutoencoderLoss(nn.Module):
    """SD-VAE's L1 + perceptual + KL + adaptive-weight PatchGAN hinge loss (module docstring).

    Owns the discriminator (its parameters are trained by ``L_D`` only).

    Args:
        discriminator: e.g. :class:`vislearn.models.patchgan.PatchDiscriminator`, fed the networks' scale.
        perceptual: ``perceptual(pred, target) -> scalar`` on [0, 1] images, or ``None``.
        lambda_l1: weight of the L1 term (1, SD).
        lambda_perceptual: weight of the perceptual term (SD: 1.0 with LPIPS).
        kl_weight: weight of the KL term (SD: 1e-6, with the normalisation of the module docstring).
        disc_weight: the adaptive weight's factor (SD: 0.5).
        disc_start: first optimizer step with the adversarial terms on (SD's f8 config: 50001).
        adaptive: ``False`` uses ``disc_weight`` as a fixed ``λ_adv``.

    ``forward(x, x_hat, last_layer, mean=None, logvar=None, images=None, recon=None, step=0)``:
    ``x``/``x_hat`` on the networks' scale (what L1 and D see), ``images``/``recon`` in [0, 1] (what the
    perceptual network sees; needed only when it is on), ``mean``/``logvar`` the posterior (KL only
    when given). Returns ``{"loss", "l1", "perceptual", "kl", "g_loss", "d_loss", "adaptive_weight",
    "logits_real", "logits_fake"}``.
    """

    def __init__(self, discriminator: nn.Module, perceptual: Perceptual | None = None, lambda_l1: float = 1.0,
                 lambda_perceptual: float = 1.0, kl_weight: float = 1e-6, disc_weight: float = 0.5,
                 disc_start: int = 0, adaptive: bool = True) -> None:
        super().__init__()
        if not isinstance(discriminator, nn.Module):
            raise UserError(f"discriminator must be an nn.Module, got {type(discriminator).__name__}")
        self.discriminator = discriminator
        self.lambda_l1 = _check_weight("lambda_l1", lambda_l1)
        self.lambda_perceptual = _check_weight("lambda_perceptual", lambda_perceptual)
        self.kl_weight = _check_weight("kl_weight", kl_weight)
        self.disc_weight = _check_weight("disc_weight", disc_weight)
        if not isinstance(disc_start, int) or isinstance(disc_start, bool) or disc_start < 0:
            raise UserError(f"disc_start must be an int >= 0, got {disc_start!r}")
        self.disc_start, self.adaptive = disc_start, bool(adaptive)
        _check_perceptual(perceptual, self.lambda_perceptual)
        object.__setattr__(self, "perceptual", perceptual)

    def extra_repr(self) -> str:
        return (f"lambda_l1={self.lambda_l1}, lambda_perceptual={self.lambda_perceptual}, kl_weight={self.kl_weight}, "
                f"disc_weight={self.disc_weight}, disc_start={self.disc_start}, adaptive={self.adaptive}")

    def discriminate_frozen(self, x: torch.Tensor) -> torch.Tensor:
        """D(x) with D's parameters detached: the gradient reaches ``x`` only (buffers update as usual)."""
        params = {k: p.detach() for k, p in self.discriminator.named_parameters()}
        return torch.func.functional_call(self.discriminator, params, (x,), strict=False)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, last_layer: torch.Tensor,
                mean: torch.Tensor | None = None, logvar: torch.Tensor | None = None,
                images: torch.Tensor | None = None, recon: torch.Tensor | None = None,
                step: int = 0) -> dict[str, torch.Tensor]:
        if x.shape != x_hat.shape:
            raise UserError(f"x and x_hat must have the same shape, got {tuple(x.shape)} and {tuple(x_hat.shape)}")
        zero = torch.zeros((), device=x.device, dtype=torch.float32)
        l1 = (x - x_hat).abs().mean()
        if self.lambda_perceptual > 0 and (images is None or recon is None):
            raise UserError("GANAutoencoderLoss: the perceptual term needs images= and recon= in [0, 1]")
        perc = _perceptual(self.perceptual, self.lambda_perceptual, recon, images, zero)
        rec = self.lambda_l1 * l1 + self.lambda_perceptual * perc
        kl = gaussian_kl(mean, logvar, normalizer=x[0].numel()) if mean is not None else zero
        total = rec + self.kl_weight * kl
        factor = disc_factor(step, self.disc_start)
        g_loss = d_loss = weight = logits_real_mean = logits_fake_mean = zero
        if factor > 0:
            g_loss = hinge_g_loss(self.discriminate_frozen(x_hat))
            if self.adaptive and torch.is_grad_enabled():
                weight = adaptive_weight(rec, g_loss, last_layer, self.disc_weight)
            else:
                weight = torch.tensor(self.disc_weight, device=x.device)
            logits_real = self.discriminator(x.detach())
            logits_fake = self.discriminator(x_hat.detach())
            d_loss = hinge_d_loss(logits_real, logits_fake)
            total = total + factor * weight * g_loss + factor * d_loss
            logits_real_mean, logits_fake_mean = logits_real.detach().mean(), logits_fake.detach().mean()
        return {"loss": total, "l1": l1.detach(), "perceptual": perc.detach(), "kl": kl.detach(),
                "g_loss": g_loss.detach(), "d_loss": d_loss.detach(), "adaptive_weight": weight.detach(),
                "logits_real": logits_real_mean, "logits_fake": logits_fake_mean}
