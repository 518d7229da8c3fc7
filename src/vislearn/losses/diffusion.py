"""The SWYCC training loss: a weighted x-prediction diffusion loss plus MSE and perceptual terms on D_initial.

Birodkar et al., "Sample what you can't compress", arXiv 2409.02529 (PAPERS.md section 8;
wave2-methods.md 4.2). With ``x`` the image on the networks' scale and ``x_init = D_initial(E(x))``::

    L = λ_diffusion E_{t ~ U[0,1], ε ~ N(0,I)} [ w_t ‖x − D_refine(α_t x + σ_t ε, t, x_init)‖² ]
      + λ_mse ‖x − x_init‖² + λ_perceptual P(x_init, x)

All norms are means over pixels and channels, then over the batch. E, D_initial and D_refine train
jointly through this one loss: the diffusion term reaches E and D_initial through the conditioning
``x_init`` (no stop-gradient), as joint training in one graph implies.

Paper facts vs our choices:

* **w_t is unverified.** ``weighting`` chooses it, as a function of the schedule's
  ``SNR_t = α_t²/σ_t²``: ``"x"`` (w = 1, plain x-MSE, **our default**), ``"eps"`` (w = SNR_t: equal to
  the ε-prediction MSE of the same network) or ``"v"`` (w = SNR_t + 1: equal to the v-prediction MSE).
  Why ``"x"``: it is the loss as the summaries write it when w_t is dropped; it never vanishes at high
  noise (ε-weighting goes to 0 as ``t → 1``, where sampling starts) and is bounded (ε- and
  v-weighting reach ``e^15`` at ``t = 0`` with the default clipping, a hazard while an encoder is being
  learned through the same loss). ``max_weight`` truncates any weighting (min-SNR-γ, Hang et al. 2023).
* **t ~ U[0, 1]** per sample and the VP cosine schedule (:mod:`vislearn.diffusion.schedules`).
* **λ's**: λ_mse = 1 and λ_perceptual = 0.1 are what a summary reports (low confidence); λ_diffusion
  = 1 is implied by the formula.
* **Which output gets MSE and the perceptual term**: D_initial's (the summaries; DiTo says its coarse
  prediction is supervised by LPIPS). The perceptual network itself is contested (ResNet, VGG or
  LPIPS); here it is any callable ``perceptual(pred, target) -> scalar`` on [0, 1] images, e.g. our
  perceptual metric's distance; D_initial's output is clamped to [0, 1] before it (saturated pixels get
  their gradient from the MSE term).
* **Scale**: the diffusion and MSE terms are on the networks' scale (``2x − 1`` for SWYCC's default
  normalisation), where the noise has unit variance.

Example::

    loss_fn = SWYCCLoss(weighting="x", lambda_mse=1.0)
    terms = loss_fn(model, images, generator=torch.Generator().manual_seed(0))
    terms.loss.backward()
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from vislearn.diffusion.schedules import CosineSchedule
from vislearn.errors import UserError

__all__ = ["SWYCCLoss", "SWYCCLossTerms", "WEIGHTINGS", "denoising_loss", "swycc_loss", "time_weight",
           "x_prediction_loss"]

WEIGHTINGS = ("x", "eps", "v")
_DEFAULT = CosineSchedule()

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SWYCCLossTerms(NamedTuple):
    """The total ``loss`` (to backpropagate) and its unweighted terms (to log)."""

    loss: torch.Tensor
    diffusion: torch.Tensor
    mse: torch.Tensor
    perceptual: torch.Tensor


def time_weight(t: torch.Tensor, weighting: str = "x", schedule: CosineSchedule = _DEFAULT,
                max_weight: float | None = None) -> torch.Tensor:
    """``w_t`` per element of ``t``: 1 (``"x"``), SNR_t (``"eps"``) or SNR_t + 1 (``"v"``); then ``min(w, max_weight)``.

    ``t`` must lie in [0, 1]."""
    _check_weighting(weighting, max_weight)
    lam = schedule.logsnr(t)  # also checks t ∈ [0, 1]
    if weighting == "x":
        w = torch.ones_like(lam)
    else:
        w = lam.exp() if weighting == "eps" else lam.exp() + 1
    return w if max_weight is None else w.clamp(max=max_weight)


def x_prediction_loss(x0: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor, weighting: str = "x",
                      schedule: CosineSchedule = _DEFAULT, max_weight: float | None = None,
                      reduction: str = "mean") -> torch.Tensor:
    """``w_t · mean_pixels (x0 − x0_hat)²`` per sample (``t`` has shape (N,)); mean over the batch by default.

    ``reduction``: ``"mean"``, ``"sum"`` or ``"none"`` (per sample, shape (N,)).
    """
    if reduction not in ("mean", "sum", "none"):
        raise UserError(f"reduction must be mean, sum or none, got {reduction!r}")
    if x0.shape != x0_hat.shape:
        raise UserError(f"x0 and x0_hat must have the same shape, got {tuple(x0.shape)} and {tuple(x0_hat.shape)}")
    if t.shape != (x0.shape[0],):
        raise UserError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
    per_sample = (x0 - x0_hat).square().flatten(1).mean(1)
    losses = time_weight(t, weighting, schedule, max_weight).to(per_sample.dtype) * per_sample
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def denoising_loss(denoise: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor], x: torch.Tensor,
                   cond: Any = None, weighting: str = "x", max_weight: float | None = None,
                   schedule: CosineSchedule = _DEFAULT, generator: torch.Generator | None = None) -> torch.Tensor:
    """``E_{t ~ U[0,1], ε} w_t ‖x − denoise(α_t x + σ_t ε, t, cond)‖²`` for one draw of ``t`` and ``ε`` per sample.

    The diffusion term of :func:`swycc_loss` and the latent diffusion model's training loss
    (:mod:`vislearn.recipes.latent_diffusion`): ``denoise`` is any x-prediction callable of
    :mod:`vislearn.diffusion.samplers`. ``generator`` draws ``t`` and then ``ε``.
    """
    n = x.shape[0]
    t = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    alpha, sigma = schedule.alpha_sigma(t)
    x_t = alpha.view(-1, *[1] * (x.dim() - 1)) * x + sigma.view(-1, *[1] * (x.dim() - 1)) * eps
    return x_prediction_loss(x, denoise(x_t, t, cond), t, weighting, schedule, max_weight)


def swycc_loss(model: Any, images: torch.Tensor, weighting: str = "x", max_weight: float | None = None,
               lambda_diffusion: float = 1.0, lambda_mse: float = 1.0, lambda_perceptual: float = 0.0,
               perceptual: Perceptual | None = None, schedule: CosineSchedule = _DEFAULT,
               generator: torch.Generator | None = None) -> SWYCCLossTerms:
    """The stateless SWYCC loss (module docstring) of ``model`` on [0, 1] ``images``.

    ``model`` needs ``prepare_input`` (images → network scale), ``encode``, ``initial`` (D_initial on the
    network scale), ``denoise(x_t, t, cond)`` and ``to_images`` — :class:`vislearn.models.swycc.SWYCC`.
    ``generator`` draws ``t`` and ``ε`` (``None``: torch's global generator).
    """
    x = model.prepare_input(images)
    x_init = model.initial(model.encode(images))
    diffusion = denoising_loss(model.denoise, x, x_init, weighting, max_weight, schedule, generator)
    mse = (x - x_init).square().mean()
    if perceptual is not None and lambda_perceptual > 0:
        perc = perceptual(model.to_images(x_init), images)
    else:
        perc = torch.zeros((), device=x.device, dtype=x.dtype)
    total = lambda_diffusion * diffusion + lambda_mse * mse + lambda_perceptual * perc
    return SWYCCLossTerms(total, diffusion.detach(), mse.detach(), perc.detach())


class SWYCCLoss(nn.Module):
    """The SWYCC loss with validated weights; ``forward(model, images, generator=None) -> SWYCCLossTerms``.

    Args:
        weighting: ``"x"`` (default), ``"eps"`` or ``"v"``; see the module docstring (w_t is unverified).
        max_weight: optional truncation of w_t (positive).
        lambda_diffusion, lambda_mse: non-negative term weights (1 and 1; λ_mse from a summary).
        lambda_perceptual: weight of ``perceptual``; default 0.1 (a summary's value) when a perceptual
            callable is given, 0 otherwise. A positive value without ``perceptual`` is an error.
        perceptual: ``perceptual(pred, target) -> scalar`` on [0, 1] images, or ``None``.
        schedule: the noise schedule (default: the clipped VP cosine).
    """

    def __init__(self, weighting: str = "x", max_weight: float | None = None, lambda_diffusion: float = 1.0,
                 lambda_mse: float = 1.0, lambda_perceptual: float | None = None,
                 perceptual: Perceptual | None = None, schedule: CosineSchedule = _DEFAULT) -> None:
        super().__init__()
        _check_weighting(weighting, max_weight)
        if perceptual is not None and not callable(perceptual):
            raise UserError(f"perceptual must be a callable (pred, target) -> scalar, got {type(perceptual).__name__}")
        if lambda_perceptual is None:
            lambda_perceptual = 0.1 if perceptual is not None else 0.0
        for name, v in (("lambda_diffusion", lambda_diffusion), ("lambda_mse", lambda_mse),
                        ("lambda_perceptual", lambda_perceptual)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise UserError(f"{name} must be a finite number >= 0, got {v!r}")
        if lambda_perceptual > 0 and perceptual is None:
            raise UserError(f"lambda_perceptual={lambda_perceptual} needs a perceptual callable "
                            "(pass perceptual=..., or lambda_perceptual=0)")
        if not isinstance(schedule, CosineSchedule):
            raise UserError(f"schedule must be a CosineSchedule, got {type(schedule).__name__}")
        self.weighting, self.max_weight, self.schedule = weighting, max_weight, schedule
        self.lambda_diffusion, self.lambda_mse = float(lambda_diffusion), float(lambda_mse)
        self.lambda_perceptual = float(lambda_perceptual)
        # kept out of the module tree on purpose: an optimizer built from this loss's parameters must not
        # train the perceptual network, and moving it to a device is the caller's job
        object.__setattr__(self, "perceptual", perceptual)

    def extra_repr(self) -> str:
        return (f"weighting={self.weighting!r}, max_weight={self.max_weight}, "
                f"lambda_diffusion={self.lambda_diffusion}, lambda_mse={self.lambda_mse}, "
                f"lambda_perceptual={self.lambda_perceptual}")

    def forward(self, model: Any, images: torch.Tensor, generator: torch.Generator | None = None) -> SWYCCLossTerms:
        return swycc_loss(model, images, self.weighting, self.max_weight, self.lambda_diffusion, self.lambda_mse,
                          self.lambda_perceptual, self.perceptual, self.schedule, generator)


def _check_weighting(weighting: str, max_weight: float | None) -> None:
    if weighting not in WEIGHTINGS:
        close = difflib.get_close_matches(str(weighting), WEIGHTINGS, n=1, cutoff=0.3)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown weighting {weighting!r}{hint} (known: {', '.join(WEIGHTINGS)})")
    if max_weight is not None and (not isinstance(max_weight, (int, float)) or isinstance(max_weight, bool)
                                   or not max_weight > 0):
        raise UserError(f"max_weight must be a positive number or None, got {max_weight!r}")
