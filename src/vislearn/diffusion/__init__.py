"""Diffusion math that imports no model (layer 1): noise schedules and samplers.

``schedules``: the variance-preserving cosine schedule in continuous time with logSNR helpers;
``samplers``: DDPM, DDIM and Heun for an x-predicting ``denoise(x_t, t, cond)`` callable.
"""

from vislearn.diffusion.samplers import SAMPLERS, ddim, ddim_step, ddpm, get_sampler, heun, sample, time_grid
from vislearn.diffusion.schedules import (
                                          CosineSchedule,
                                          alpha_sigma,
                                          discrete_alphas_cumprod,
                                          discrete_timestep_to_t,
                                          logsnr,
                                          t_from_logsnr,
)

__all__ = ["SAMPLERS", "CosineSchedule", "alpha_sigma", "ddim", "ddim_step", "ddpm", "discrete_alphas_cumprod",
           "discrete_timestep_to_t", "get_sampler", "heun", "logsnr", "sample", "t_from_logsnr", "time_grid"]
