"""Samplers for an x-predicting denoiser: DDPM ancestral, DDIM with η, and Heun (2nd order).

Every sampler takes a callable ``denoise(x_t, t, cond) -> x0_hat`` — the model's estimate of the
clean signal from the noisy ``x_t`` at times ``t`` (a tensor of shape ``(batch,)``) and an opaque
conditioning ``cond`` passed through unchanged (SWYCC: the ``D_initial`` image). It starts from
``x_1 ~ N(0, I)`` at ``t = 1`` (or ``x_init``) and walks a grid ``1 = t_0 > t_1 > … > t_S = 0`` in
``steps = S ≥ 1`` steps; it returns the final ``x0`` estimate. All randomness comes from the
``generator`` argument (``None``: torch's global generator).

Choices the SWYCC paper does not pin down (wave2-methods.md 4.3), ours:

* **the grid** is uniform in ``t`` of the cosine schedule (:func:`time_grid`), the same as diffusers'
  ``timestep_spacing="trailing"`` under :func:`~vislearn.diffusion.schedules.discrete_alphas_cumprod`.
* **the last step** goes to ``α = 1, σ = 0`` exactly and returns the denoiser's output, whatever the
  schedule's clipping (diffusers' ``set_alpha_to_one=True``).
* **no guidance**, no clipping or thresholding of ``x0_hat`` (reconstruction is conditioned on the
  latent; ε-VAE uses none either).

One step from ``t`` to ``s < t`` with ``ε_hat = (x_t − α_t x0_hat) / σ_t`` (Song et al. 2021, Eq. 12)::

    ddim:  x_s = α_s x0_hat + sqrt(σ_s² − c²) ε_hat + c ξ,   c² = η² σ_s² (1 − exp(λ_t − λ_s))

with ``λ`` the logSNR and ``ξ ~ N(0, I)``. ``η = 0`` is deterministic DDIM; ``η = 1`` samples the exact
posterior ``q(x_s | x_t, x0 = x0_hat)`` — that *is* the DDPM ancestral step with the posterior
variance β̃ (diffusers' ``variance_type="fixed_small"``), so :func:`ddpm` is :func:`ddim` at ``η = 1``.

``heun`` is a deterministic second-order step: the DDIM (η = 0) step as predictor, a second
denoiser call at its end point, and the exponential-integrator update with the mean of the two x0
estimates — DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1) with the intermediate point at the end
of the step (r = 1), i.e. Heun's trapezoid taken in logSNR time::

    h = (λ_s − λ_t) / 2,   x_s = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) (x0_hat(x_t, t) + x0_hat(x_s^ddim, s)) / 2

The last step into ``σ = 0`` stays first order (it returns ``x0_hat``), so ``steps`` steps cost
``2·steps − 1`` denoiser calls. Why not Karras et al.'s Heun in ``σ̃ = σ/α``: on a grid uniform in
the cosine's ``t`` the first step spans ``σ̃`` from ``e^{7.5}`` to order 1, and the trapezoid in ``σ̃``
then overshoots badly for few steps; in logSNR time the step is exact for a constant ``x0_hat``.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

from vislearn.diffusion.schedules import CosineSchedule
from vislearn.errors import UserError

__all__ = ["SAMPLERS", "Denoiser", "check_steps", "ddim", "ddim_step", "ddpm", "get_sampler", "heun", "sample",
           "time_grid"]

Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""``denoise(x_t, t, cond) -> x0_hat``: an x-prediction model; ``t`` has shape ``(batch,)``."""

_DEFAULT = CosineSchedule()


def time_grid(steps: int) -> list[float]:
    """``[1, 1 − 1/S, …, 1/S, 0]`` for ``S = steps`` (uniform in ``t``; our choice, see the module docstring)."""
    check_steps(steps)
    steps = int(steps)
    return [1.0 - i / steps for i in range(steps)] + [0.0]


def ddim_step(x_t: torch.Tensor, x0_hat: torch.Tensor, alpha_t: float, sigma_t: float, alpha_s: float,
              sigma_s: float, eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step from ``(α_t, σ_t)`` to ``(α_s, σ_s)`` (module docstring formula); ``noise`` is ``ξ``.

    ``noise`` is needed only when ``η > 0`` and ``σ_s > 0``. The coefficients are computed in float64.
    """
    _check_eta(eta)
    eps_hat = (x_t - alpha_t * x0_hat) / sigma_t
    if sigma_s == 0.0 or eta == 0.0:
        c = 0.0
    else:  # 1 − exp(λ_t − λ_s) = 1 − SNR_t / SNR_s
        snr_ratio = (alpha_t * sigma_s) ** 2 / (alpha_s * sigma_t) ** 2
        c = eta * sigma_s * math.sqrt(max(0.0, 1.0 - snr_ratio))
    x_s = alpha_s * x0_hat + math.sqrt(max(0.0, sigma_s**2 - c**2)) * eps_hat
    if c > 0.0:
        if noise is None:
            raise UserError("ddim_step: eta > 0 needs a noise tensor")
        x_s = x_s + c * noise
    return x_s


def ddim(denoise: Denoiser, shape: tuple[int, ...], cond: Any = None, steps: int = 50, eta: float = 0.0,
         generator: torch.Generator | None = None, schedule: CosineSchedule = _DEFAULT,
         device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
         x_init: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021) with stochasticity ``eta`` ∈ [0, 1]; ``steps`` denoiser calls.

    Args:
        denoise: ``denoise(x_t, t, cond) -> x0_hat``.
        shape: shape of a sample batch, ``(N, C, H, W)`` or any shape with the batch first.
        cond: passed to ``denoise`` unchanged.
        steps: number of steps ``S ≥ 1`` on :func:`time_grid`.
        eta: 0 deterministic; 1 the DDPM posterior (see :func:`ddpm`).
        generator: the only source of randomness (start noise and, for ``eta > 0``, step noise).
        schedule: the noise schedule (default: clipped VP cosine).
        device, dtype: of the samples; ignored when ``x_init`` is given.
        x_init: the start ``x_1``; default ``N(0, I)`` drawn from ``generator``.
    """
    _check_eta(eta)
    grid = time_grid(steps)
    x = _start(shape, generator, device, dtype, x_init)
    for t, s in zip(grid[:-1], grid[1:], strict=True):
        x0_hat = _denoise(denoise, x, t, cond)
        alpha_t, sigma_t = _alpha_sigma(schedule, t)
        alpha_s, sigma_s = _alpha_sigma(schedule, s)
        noise = None
        if eta > 0 and sigma_s > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = ddim_step(x, x0_hat, alpha_t, sigma_t, alpha_s, sigma_s, eta, noise)
    return x


def ddpm(denoise: Denoiser, shape: tuple[int, ...], cond: Any = None, steps: int = 50,
         generator: torch.Generator | None = None, schedule: CosineSchedule = _DEFAULT,
         device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
         x_init: torch.Tensor | None = None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020) with the posterior variance β̃: :func:`ddim` at ``eta = 1``."""
    return ddim(denoise, shape, cond, steps=steps, eta=1.0, generator=generator, schedule=schedule,
                device=device, dtype=dtype, x_init=x_init)


def heun(denoise: Denoiser, shape: tuple[int, ...], cond: Any = None, steps: int = 50,
         generator: torch.Generator | None = None, schedule: CosineSchedule = _DEFAULT,
         device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
         x_init: torch.Tensor | None = None) -> torch.Tensor:
    """Deterministic Heun (2nd order) on the probability-flow ODE; ``2·steps − 1`` denoiser calls.

    Randomness only in the start noise. Arguments as :func:`ddim`.
    """
    grid = time_grid(steps)
    x = _start(shape, generator, device, dtype, x_init)
    for t, s in zip(grid[:-1], grid[1:], strict=True):
        alpha_t, sigma_t = _alpha_sigma(schedule, t)
        alpha_s, sigma_s = _alpha_sigma(schedule, s)
        x0_t = _denoise(denoise, x, t, cond)
        x_euler = ddim_step(x, x0_t, alpha_t, sigma_t, alpha_s, sigma_s)
        if sigma_s == 0.0:
            x = x_euler
            continue
        # DPM-Solver++(2S) with r = 1: the exponential integrator applied to the mean of the two x0 estimates
        x0_s = _denoise(denoise, x_euler, s, cond)
        h = math.log(alpha_s / sigma_s) - math.log(alpha_t / sigma_t)
        x = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * (0.5 * (x0_t + x0_s))
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ddim": ddim, "ddpm": ddpm, "heun": heun}


def sample(name: str, denoise: Denoiser, shape: tuple[int, ...], cond: Any = None, steps: int = 50,
           **kwargs: Any) -> torch.Tensor:
    """Run the sampler called ``name`` (``"ddim"``, ``"ddpm"`` or ``"heun"``); ``kwargs`` go to it.

    ``eta`` is accepted by ``"ddim"`` only. An unknown name raises ``UserError`` with the closest names.
    """
    fn = get_sampler(name)
    if "eta" in kwargs and fn is not ddim:
        raise UserError(f"sampler {name!r} takes no eta (only 'ddim' does), got eta={kwargs['eta']!r}")
    return fn(denoise, shape, cond, steps=steps, **kwargs)


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler function registered as ``name``; ``UserError`` naming the closest names otherwise."""
    if name not in SAMPLERS:
        close = difflib.get_close_matches(str(name), list(SAMPLERS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UserError(f"unknown sampler {name!r}{hint} (known: {', '.join(SAMPLERS)})")
    return SAMPLERS[name]


def check_steps(steps: int) -> None:
    """``UserError`` unless ``steps`` is an int >= 1."""
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
        raise UserError(f"steps must be an int >= 1, got {steps!r}")


def _check_eta(eta: float) -> None:
    if not isinstance(eta, numbers.Real) or isinstance(eta, bool) or not 0.0 <= eta <= 1.0:
        raise UserError(f"eta must be a number in [0, 1], got {eta!r}")


def _alpha_sigma(schedule: CosineSchedule, t: float) -> tuple[float, float]:
    """Python floats (float64); the grid's end ``t = 0`` is exactly clean: ``(1, 0)``."""
    if t == 0.0:
        return 1.0, 0.0
    alpha, sigma = schedule.alpha_sigma(torch.tensor(t, dtype=torch.float64))
    return float(alpha), float(sigma)


def _start(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None,
           dtype: torch.dtype, x_init: torch.Tensor | None) -> torch.Tensor:
    if x_init is not None:
        if tuple(x_init.shape) != tuple(shape):
            raise UserError(f"x_init has shape {tuple(x_init.shape)}, expected {tuple(shape)}")
        return x_init
    if device is None and generator is not None:
        device = generator.device
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def _denoise(denoise: Denoiser, x: torch.Tensor, t: float, cond: Any) -> torch.Tensor:
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
    x0_hat = denoise(x, tt, cond)
    if not isinstance(x0_hat, torch.Tensor) or x0_hat.shape != x.shape:
        got = tuple(x0_hat.shape) if isinstance(x0_hat, torch.Tensor) else type(x0_hat).__name__
        raise UserError(f"denoise(x_t, t, cond) must return x0_hat of shape {tuple(x.shape)}, got {got}")
    return x0_hat
