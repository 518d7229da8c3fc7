"""vislearn.diffusion.samplers against diffusers' schedulers, an oracle denoiser and Gaussian data."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from vislearn.diffusion.samplers import ddim, ddpm, heun, sample, time_grid
from vislearn.diffusion.schedules import CosineSchedule, alpha_sigma, discrete_alphas_cumprod
from vislearn.errors import UserError

N_TRAIN = 1000
SHAPE = (2, 3, 4, 4)


def toy_denoiser(x, t, cond):
    """A nonlinear x-predictor that depends on x_t, t and cond (all three must reach it)."""
    return torch.tanh(x) * (1 - t).view(-1, 1, 1, 1) + 0.3 * cond


def diffusers_loop(scheduler, steps, x, cond, step_kwargs):
    scheduler.alphas_cumprod = discrete_alphas_cumprod(N_TRAIN)  # our α's, float64
    scheduler.set_timesteps(steps)
    for k in scheduler.timesteps:
        t = torch.full((x.shape[0],), (int(k) + 1) / N_TRAIN, dtype=x.dtype)
        x = scheduler.step(toy_denoiser(x, t, cond), int(k), x, **step_kwargs(int(k))).prev_sample
    return x


@pytest.mark.parametrize("steps", [1, 4, 10])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_equals_diffusers_ddim_prediction_sample(steps, eta):
    cond = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = ddim(toy_denoiser, SHAPE, cond, steps=steps, eta=eta, generator=torch.Generator().manual_seed(0),
                dtype=torch.float64)
    sched = DDIMScheduler(num_train_timesteps=N_TRAIN, clip_sample=False, set_alpha_to_one=True,
                          prediction_type="sample", timestep_spacing="trailing")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    last = N_TRAIN // steps - 1  # the final step lands on alpha = 1: no noise drawn by our sampler

    def kwargs(k):
        noise = torch.randn(SHAPE, generator=g, dtype=torch.float64) if eta > 0 and k != last else None
        return {"eta": eta, "variance_noise": noise if noise is not None else torch.zeros(SHAPE, dtype=torch.float64)}

    theirs = diffusers_loop(sched, steps, x, cond, kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 5, 20])
def test_ddpm_equals_diffusers_ddpm_fixed_small(steps):
    # DDPMScheduler's variance_type="fixed_small" is the posterior variance β̃: our ddpm (= ddim at eta 1)
    cond = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = ddpm(toy_denoiser, SHAPE, cond, steps=steps, generator=torch.Generator().manual_seed(0),
                dtype=torch.float64)
    sched = DDPMScheduler(num_train_timesteps=N_TRAIN, clip_sample=False, prediction_type="sample",
                          variance_type="fixed_small", timestep_spacing="trailing")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    theirs = diffusers_loop(sched, steps, x, cond, lambda k: {"generator": g})
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "heun"])
@pytest.mark.parametrize("steps", [1, 3])
def test_oracle_denoiser_returns_x0_exactly(name, steps):
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(3))
    calls = []

    def oracle(x, t, cond):
        calls.append(float(t[0]))
        return cond

    out = sample(name, oracle, SHAPE, cond=x0, steps=steps, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x0)
    expected_calls = 2 * steps - 1 if name == "heun" else steps
    assert len(calls) == expected_calls and calls[0] == 1.0


S2 = 0.25  # data variance s²


def gaussian_denoiser(x, t, cond):
    """E[x0 | x_t] for x0 ~ N(0, s² I): α s² x_t / (α² s² + σ²)."""
    alpha, sigma = alpha_sigma(t.double())
    alpha, sigma = alpha.view(-1, 1).to(x.dtype), sigma.view(-1, 1).to(x.dtype)
    return alpha * S2 * x / (alpha**2 * S2 + sigma**2)


def test_gaussian_data_ddpm_variance():
    g = torch.Generator().manual_seed(0)
    out = ddpm(gaussian_denoiser, (10000, 1), steps=1000, generator=g, dtype=torch.float64)
    assert out.var().item() == pytest.approx(S2, rel=0.04)
    assert abs(out.mean().item()) < 0.02
    # one step returns the posterior mean at t = 1, which has almost no variance: steps matter
    assert ddpm(gaussian_denoiser, (1000, 1), steps=1, generator=g, dtype=torch.float64).var().item() < 1e-6


def test_gaussian_data_heun_matches_ode_closed_form():
    # The probability-flow ODE maps x_1 to x_1 · s / sqrt(α_1² s² + σ_1²) for Gaussian data.
    a1, s1 = alpha_sigma(torch.tensor(1.0, dtype=torch.float64))
    gain = math.sqrt(S2) / math.sqrt(a1**2 * S2 + s1**2)
    x1 = torch.ones(1, 1, dtype=torch.float64)
    err = {n: abs(heun(gaussian_denoiser, (1, 1), steps=n, x_init=x1).item() - gain) for n in (32, 64)}
    err_ddim = abs(ddim(gaussian_denoiser, (1, 1), steps=32, x_init=x1).item() - gain)
    assert err[64] < 0.005 * gain
    assert err[32] < err_ddim / 3  # second order beats first order at the same step count
    assert err[64] < err[32] / 2.5
    out = heun(gaussian_denoiser, (20000, 1), steps=64, generator=torch.Generator().manual_seed(0),
               dtype=torch.float64)
    assert out.var().item() == pytest.approx(S2, rel=0.04)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "heun"])
def test_determinism_under_fixed_generator(name):
    kw = {"eta": 0.7} if name == "ddim" else {}
    runs = [sample(name, toy_denoiser, SHAPE, cond=torch.zeros(SHAPE), steps=4,
                   generator=torch.Generator().manual_seed(s), **kw) for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


def test_clipping_changes_nothing_at_the_final_step():
    # with an oracle the schedule's clipping cannot leak into the output
    x0 = torch.rand(SHAPE)
    out = ddim(lambda x, t, c: c, SHAPE, x0, steps=2, schedule=CosineSchedule(-5.0, 5.0),
               generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x0)


def test_time_grid():
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_errors():
    with pytest.raises(UserError, match="steps must be an int >= 1, got 0"):
        sample("ddim", toy_denoiser, SHAPE, steps=0)
    with pytest.raises(UserError, match=r"unknown sampler 'ddmi'.*'ddim'"):
        sample("ddmi", toy_denoiser, SHAPE)
    with pytest.raises(UserError, match="eta must be a number in \\[0, 1\\], got 1.5"):
        sample("ddim", toy_denoiser, SHAPE, eta=1.5)
    with pytest.raises(UserError, match="-0.1"):
        ddim(toy_denoiser, SHAPE, steps=2, eta=-0.1)
    with pytest.raises(UserError, match="takes no eta"):
        sample("heun", toy_denoiser, SHAPE, eta=0.5)
    with pytest.raises(UserError, match="must return x0_hat of shape"):
        ddim(lambda x, t, c: x[:1], SHAPE, steps=1)
