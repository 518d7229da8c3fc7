"""The variance-preserving cosine noise schedule in continuous time ``t ∈ [0, 1]``.

SWYCC (Birodkar et al., arXiv 2409.02529) corrupts an image as ``x_t = α_t x + σ_t ε`` with a
"cosine schedule" (PAPERS.md section 8). The paper body is not available to us, so the exact
parameterisation is **our choice** (wave2-methods.md 4.3): the variance-preserving cosine schedule
of Nichol & Dhariwal 2021 in the continuous form of Kingma et al. 2021 and Hoogeboom et al. 2023::

    θ(t) = θ_min + t (θ_max − θ_min)
    α_t = cos θ(t),   σ_t = sin θ(t)            (so α_t² + σ_t² = 1 exactly)
    logSNR(t) = log(α_t² / σ_t²) = −2 log tan θ(t)

Without clipping ``θ_min = 0`` and ``θ_max = π/2``, i.e. ``α_t = cos(πt/2)``, ``σ_t = sin(πt/2)``,
whose logSNR is +∞ at ``t = 0`` and −∞ at ``t = 1``. The end points are **clipped** to
``[logsnr_min, logsnr_max]`` by choosing ``θ_min = atan(exp(−logsnr_max / 2))`` and
``θ_max = atan(exp(−logsnr_min / 2))``: the schedule is the same cosine, traversed over a slightly
shorter arc, so ``t = 0`` is almost clean (``σ_0 ≈ exp(−logsnr_max/2)``) and ``t = 1`` almost pure noise
(``α_1 ≈ exp(logsnr_min/2)``), and the logSNR stays finite for an embedding of the noise level.
The default ``±15`` follows simple diffusion (Hoogeboom et al. 2023); the SWYCC paper does not say.
Pass ``logsnr_min=-math.inf, logsnr_max=math.inf`` for the unclipped closed form.

The samplers (:mod:`vislearn.diffusion.samplers`) end at ``α = 1, σ = 0`` (they return the
denoiser's ``x0`` estimate at the last step), so clipping only affects the noisy end points.

:func:`discrete_alphas_cumprod` maps the schedule onto the ``alphas_cumprod`` table of a discrete
scheduler (diffusers' DDPM/DDIM schedulers), for side-by-side comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vislearn.errors import UserError

__all__ = ["DEFAULT_LOGSNR_MAX", "DEFAULT_LOGSNR_MIN", "CosineSchedule", "alpha_sigma", "discrete_alphas_cumprod",
           "discrete_timestep_to_t", "logsnr", "t_from_logsnr"]

# The clipping of the end points (simple diffusion, Hoogeboom et al. 2023; SWYCC is silent).
DEFAULT_LOGSNR_MIN = -15.0
DEFAULT_LOGSNR_MAX = 15.0


@dataclass(frozen=True)
class CosineSchedule:
    """A VP cosine schedule whose logSNR is clipped to ``[logsnr_min, logsnr_max]`` (see the module docstring).

    Example::

        schedule = CosineSchedule()
        alpha, sigma = schedule.alpha_sigma(torch.rand(8))
        x_t = alpha.view(-1, 1, 1, 1) * x + sigma.view(-1, 1, 1, 1) * torch.randn_like(x)
    """

    logsnr_min: float = DEFAULT_LOGSNR_MIN
    logsnr_max: float = DEFAULT_LOGSNR_MAX

    def __post_init__(self) -> None:
        lo, hi = self.logsnr_min, self.logsnr_max
        if lo != lo or hi != hi or not lo < hi:
            raise UserError(f"logsnr_min must be below logsnr_max, got logsnr_min={lo!r}, logsnr_max={hi!r}")

    @property
    def theta_range(self) -> tuple[float, float]:
        """``(θ_min, θ_max)``: the angles at ``t = 0`` and ``t = 1`` (``(0, π/2)`` without clipping)."""
        return math.atan(math.exp(-self.logsnr_max / 2)), math.atan(math.exp(-self.logsnr_min / 2))

    def theta(self, t: torch.Tensor | float) -> torch.Tensor:
        """The angle ``θ(t)``, linear in ``t``; ``t`` outside [0, 1] is an error."""
        t = _as_time(t)
        lo, hi = self.theta_range
        return lo + t * (hi - lo)

    def alpha_sigma(self, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α_t, σ_t) = (cos θ(t), sin θ(t))``, elementwise, in ``t``'s floating dtype."""
        theta = self.theta(t)
        return torch.cos(theta), torch.sin(theta)

    def logsnr(self, t: torch.Tensor | float) -> torch.Tensor:
        """``log(α_t² / σ_t²) = −2 log tan θ(t)``; finite on [0, 1] unless the clipping is ±∞."""
        return -2.0 * torch.log(torch.tan(self.theta(t)))

    def t_from_logsnr(self, lam: torch.Tensor | float) -> torch.Tensor:
        """The inverse of :meth:`logsnr`. A logSNR outside the clipping range is clamped into it first
        (so the result lies in [0, 1]); NaN is an error."""
        lam = torch.as_tensor(lam)
        if not torch.is_floating_point(lam):
            lam = lam.to(torch.get_default_dtype())
        if torch.isnan(lam).any():
            raise UserError("t_from_logsnr: logSNR contains NaN")
        lam = lam.clamp(self.logsnr_min, self.logsnr_max)
        lo, hi = self.theta_range
        return (torch.atan(torch.exp(-lam / 2)) - lo) / (hi - lo)


_DEFAULT = CosineSchedule()


def alpha_sigma(t: torch.Tensor | float, schedule: CosineSchedule = _DEFAULT) -> tuple[torch.Tensor, torch.Tensor]:
    """``(α_t, σ_t)`` of ``schedule`` (default: the clipped VP cosine); see :meth:`CosineSchedule.alpha_sigma`."""
    return schedule.alpha_sigma(t)


def logsnr(t: torch.Tensor | float, schedule: CosineSchedule = _DEFAULT) -> torch.Tensor:
    """``log(α_t²/σ_t²)`` of ``schedule``; see :meth:`CosineSchedule.logsnr`."""
    return schedule.logsnr(t)


def t_from_logsnr(lam: torch.Tensor | float, schedule: CosineSchedule = _DEFAULT) -> torch.Tensor:
    """The time at which ``schedule`` reaches logSNR ``lam``; see :meth:`CosineSchedule.t_from_logsnr`."""
    return schedule.t_from_logsnr(lam)


def discrete_timestep_to_t(k: torch.Tensor | int, num_train_timesteps: int) -> torch.Tensor:
    """Continuous time of discrete timestep ``k ∈ {0, …, N−1}``: ``t = (k + 1) / N``.

    With this map diffusers' ``timestep_spacing="trailing"`` visits ``t = 1, 1 − 1/S, …, 1/S`` for
    ``S`` inference steps and steps from the last to its ``final_alpha_cumprod = 1`` (``t = 0``): the
    same uniform grid as :func:`vislearn.diffusion.samplers.time_grid`.
    """
    _check_num_timesteps(num_train_timesteps)
    return (torch.as_tensor(k, dtype=torch.float64) + 1) / num_train_timesteps


def discrete_alphas_cumprod(num_train_timesteps: int = 1000, schedule: CosineSchedule = _DEFAULT) -> torch.Tensor:
    """``ᾱ_k = α_t²`` at ``t = (k + 1)/N``, ``k = 0 … N−1`` (float64): a diffusers ``alphas_cumprod`` table.

    This is the continuous schedule sampled on a grid, not Nichol & Dhariwal's discrete cosine
    (which has an offset ``s = 0.008`` and clips β at 0.999).
    """
    t = discrete_timestep_to_t(torch.arange(num_train_timesteps), num_train_timesteps)
    alpha, _ = schedule.alpha_sigma(t)
    return alpha.square()


def _check_num_timesteps(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f"num_train_timesteps must be a positive int, got {n!r}")


def _as_time(t: torch.Tensor | float) -> torch.Tensor:
    t = torch.as_tensor(t)
    if not torch.is_floating_point(t):
        t = t.to(torch.get_default_dtype())
    if t.numel():
        lo, hi = float(t.min()), float(t.max())
        if lo != lo or hi != hi or lo < 0 or hi > 1:
            raise UserError(f"diffusion time t must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return t
