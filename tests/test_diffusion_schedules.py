"""vislearn.diffusion.schedules: the VP cosine schedule against its closed form."""

import math

import pytest
import torch

from vislearn.diffusion.schedules import (
    CosineSchedule,
    alpha_sigma,
    discrete_alphas_cumprod,
    discrete_timestep_to_t,
    logsnr,
    t_from_logsnr,
)
from vislearn.errors import UserError

T = torch.linspace(0, 1, 101, dtype=torch.float64)
UNCLIPPED = CosineSchedule(logsnr_min=-math.inf, logsnr_max=math.inf)


def test_unclipped_is_cos_sin_of_half_pi_t():
    alpha, sigma = UNCLIPPED.alpha_sigma(T)
    torch.testing.assert_close(alpha, torch.cos(math.pi * T / 2), rtol=0, atol=1e-15)
    torch.testing.assert_close(sigma, torch.sin(math.pi * T / 2), rtol=0, atol=1e-15)
    inner = T[1:-1]
    torch.testing.assert_close(UNCLIPPED.logsnr(inner), -2 * torch.log(torch.tan(math.pi * inner / 2)))


def test_variance_preserving_and_logsnr_consistent():
    alpha, sigma = alpha_sigma(T)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(T), rtol=0, atol=1e-15)
    torch.testing.assert_close(logsnr(T), torch.log(alpha**2 / sigma**2))
    assert (alpha[1:] < alpha[:-1]).all()  # monotone: more noise as t grows


def test_clipped_end_points_and_closed_form():
    sched = CosineSchedule(logsnr_min=-10.0, logsnr_max=6.0)
    torch.testing.assert_close(sched.logsnr(torch.tensor([0.0, 1.0], dtype=torch.float64)),
                               torch.tensor([6.0, -10.0], dtype=torch.float64))
    # closed form: θ(t) linear between atan(e^{-λmax/2}) and atan(e^{-λmin/2})
    lo, hi = math.atan(math.exp(-3.0)), math.atan(math.exp(5.0))
    alpha, sigma = sched.alpha_sigma(T)
    torch.testing.assert_close(alpha, torch.cos(lo + T * (hi - lo)), rtol=0, atol=1e-15)
    torch.testing.assert_close(sigma, torch.sin(lo + T * (hi - lo)), rtol=0, atol=1e-15)
    # the default clipping ±15: σ_0 = sqrt(sigmoid(-15)), α_1 = sqrt(sigmoid(-15))
    a, s = alpha_sigma(torch.tensor([0.0, 1.0], dtype=torch.float64))
    expected = math.sqrt(1 / (1 + math.exp(15)))
    assert s[0].item() == pytest.approx(expected, rel=1e-12) and a[1].item() == pytest.approx(expected, rel=1e-12)


def test_t_from_logsnr_inverts_and_clamps():
    torch.testing.assert_close(t_from_logsnr(logsnr(T)), T, rtol=0, atol=1e-12)
    out = t_from_logsnr(torch.tensor([100.0, -100.0], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=0, atol=1e-12)
    with pytest.raises(UserError, match="NaN"):
        t_from_logsnr(float("nan"))


def test_discrete_adapter_trailing_grid():
    table = discrete_alphas_cumprod(10)
    t = torch.arange(1, 11, dtype=torch.float64) / 10
    torch.testing.assert_close(table, alpha_sigma(t)[0] ** 2)
    assert discrete_timestep_to_t(9, 10).item() == 1.0
    with pytest.raises(UserError, match="num_train_timesteps"):
        discrete_alphas_cumprod(0)


def test_bad_arguments():
    with pytest.raises(UserError, match=r"\[0, 1\].*1\.5"):
        alpha_sigma(torch.tensor([0.5, 1.5]))
    with pytest.raises(UserError, match="logsnr_min"):
        CosineSchedule(logsnr_min=5.0, logsnr_max=-5.0)
