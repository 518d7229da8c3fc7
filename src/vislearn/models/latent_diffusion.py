"""A small latent diffusion model: a U-Net that denoises an autoencoder's latents (SWYCC claim (c)).

Birodkar et al. (arXiv 2409.02529; PAPERS.md section 8) claim that SWYCC's latents are "easier for a
latent diffusion model" than a GAN autoencoder's. To test that we train the same small diffusion
model on either autoencoder's latents (Rombach et al. 2022's two-stage setup) and compare the images
its samples decode to. The paper gives no details of its latent model; everything here is our choice:

* **Network**: diffusers' ``UNet2DModel`` on the latent grid (so the config is a diffusers config),
  ``latent_channels`` in and out, no class conditioning, self-attention in the mid block.
* **Prediction**: **x-prediction** (the network outputs the clean scaled latent ``x0_hat``), the same
  parameterisation as SWYCC's ``D_refine``, so the same :mod:`vislearn.diffusion` samplers call
  :meth:`LatentDiffusion.denoise` unchanged. The training weighting is the recipe's
  (:mod:`vislearn.recipes.latent_diffusion`).
* **Schedule and time input**: the VP cosine schedule of :mod:`vislearn.diffusion.schedules`, ``t ~
  U[0, 1]``; the U-Net sees ``1000 t`` (diffusers' timestep range), as SWYCC's ``D_refine``.
* **Latent scaling**: the model works on ``scaling_factor · z``. As Stable Diffusion's 0.18215 (the
  reciprocal of the standard deviation of its VAE's latents on a batch of training images),
  ``scaling_factor`` is ``1 / std(z)`` over a sample of the training latents (all elements pooled),
  set by :meth:`LatentDiffusion.fit_scaling_factor` and stored as a buffer, so it travels with the
  weights file. Without it the unit-variance noise of the schedule would be on a different scale than
  the data for every autoencoder, and the comparison would measure the latents' scale, not their shape.

Example::

    ldm = create_model("latent_diffusion", latent_channels=4, latent_size=4)
    ldm.fit_scaling_factor(z_train)                       # 1/std of the latents
    z = ldm.sample(16, steps=32, sampler="ddim", generator=torch.Generator().manual_seed(0))
    images = autoencoder.decode_initial(z)                # unscaled latents, ready for the decoder
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from vislearn.diffusion.samplers import get_sampler, sample
from vislearn.errors import UserError
from vislearn.models.registry import register_model

__all__ = ["LatentDiffusion", "latent_scaling_factor"]

TIMESTEP_SCALE = 1000.0  # the U-Net sees 1000 t (diffusers' timestep range), as SWYCC's D_refine


def latent_scaling_factor(z: torch.Tensor) -> float:
    """``1 / std(z)`` over every element of a sample of latents (how SD's 0.18215 was derived).

    ``UserError`` for fewer than two elements, non-finite values or a constant sample.
    """
    if not isinstance(z, torch.Tensor) or z.numel() < 2:
        raise UserError("latent_scaling_factor needs a tensor of at least 2 latent values")
    if not torch.isfinite(z).all():
        raise UserError("latent_scaling_factor: the latents contain NaN or inf")
    std = float(z.detach().double().std())
    if not std > 0:
        raise UserError("latent_scaling_factor: the latents are constant (std 0); the autoencoder is degenerate")
    return 1.0 / std


class LatentDiffusion(nn.Module):
    """An x-predicting U-Net on ``scaling_factor · z`` (module docstring).

    Args:
        latent_channels: channels of the autoencoder's latent.
        latent_size: side of the (square) latent grid the U-Net is configured for (it accepts any side
            divisible by ``2^(len(channel_mult) − 1)``).
        width, channel_mult, layers_per_block: the U-Net's widths (``width × channel_mult``) and depth.
        attention: self-attention in the mid block.
        norm_groups: GroupNorm groups (every width must divide by it).
        scaling_factor: the initial latent scale (1.0 until :meth:`fit_scaling_factor`).
    """

    def __init__(self, latent_channels: int = 4, latent_size: int = 4, width: int = 64,
                 channel_mult: Sequence[int] = (1, 2), layers_per_block: int = 1, attention: bool = True,
                 norm_groups: int = 8, scaling_factor: float = 1.0) -> None:
        super().__init__()
        for name, v in (("latent_channels", latent_channels), ("latent_size", latent_size), ("width", width),
                        ("layers_per_block", layers_per_block), ("norm_groups", norm_groups)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"{name} must be a positive int, got {v!r}")
        mult = tuple(channel_mult)
        if not mult or any(not isinstance(m, int) or m < 1 for m in mult):
            raise UserError(f"channel_mult must be a non-empty sequence of positive ints, got {channel_mult!r}")
        self.min_latent_size = 2 ** (len(mult) - 1)
        if latent_size % self.min_latent_size:
            raise UserError(f"latent_size {latent_size} must divide by {self.min_latent_size} "
                            f"(the U-Net downsamples {len(mult) - 1} times for channel_mult={mult})")
        widths = [width * m for m in mult]
        bad = [w for w in widths if w % norm_groups]
        if bad:
            raise UserError(f"every width must be divisible by norm_groups={norm_groups}, got {bad}")
        if not scaling_factor > 0:
            raise UserError(f"scaling_factor must be positive, got {scaling_factor!r}")
        from diffusers import UNet2DModel  # imported here: it costs seconds at `import vislearn`

        self.latent_channels, self.latent_size = latent_channels, latent_size
        self.unet = UNet2DModel(sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
                                block_out_channels=tuple(widths), down_block_types=("DownBlock2D",) * len(widths),
                                up_block_types=("UpBlock2D",) * len(widths), layers_per_block=layers_per_block,
                                norm_num_groups=norm_groups, add_attention=attention, attention_head_dim=8,
                                act_fn="silu")
        self.register_buffer("scaling_factor", torch.tensor(float(scaling_factor)))

    # -- latent scale --------------------------------------------------------------------------------
    def fit_scaling_factor(self, z: torch.Tensor) -> float:
        """Set ``scaling_factor = 1 / std(z)`` from a sample of (unscaled) training latents; returns it."""
        self.check_latent(z)
        value = latent_scaling_factor(z)
        self.scaling_factor.fill_(value)
        return value

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        """Autoencoder latent → the diffusion model's scale (``scaling_factor · z``)."""
        return z * self.scaling_factor.to(z.dtype)

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        """The diffusion model's scale → autoencoder latent."""
        return x / self.scaling_factor.to(x.dtype)

    def check_latent(self, z: torch.Tensor) -> None:
        """``UserError`` unless ``z`` is a finite float N×latent_channels×h×w with h, w divisible as the U-Net needs."""
        if not isinstance(z, torch.Tensor) or not torch.is_floating_point(z) or z.dim() != 4 \
                or z.shape[1] != self.latent_channels:
            got = f"shape {tuple(z.shape)}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise UserError(f"latent_diffusion: expected a float latent N×{self.latent_channels}×h×w, got {got}")
        h, w = z.shape[-2:]
        if h % self.min_latent_size or w % self.min_latent_size:
            raise UserError(f"latent_diffusion: latent side {h}×{w} must divide by {self.min_latent_size}")
        if not torch.isfinite(z).all():
            raise UserError("latent_diffusion: the latent contains NaN or inf")

    # -- the denoiser --------------------------------------------------------------------------------
    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x0_hat`` (scaled latent) from the noisy scaled latent ``x_t`` at times ``t`` ∈ [0, 1], shape (N,)."""
        self.check_latent(x_t)
        t = torch.as_tensor(t, device=x_t.device, dtype=x_t.dtype).reshape(-1).expand(x_t.shape[0])
        return self.unet(x_t, TIMESTEP_SCALE * t).sample

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The ``denoise(x_t, t, cond) -> x0_hat`` callable of :mod:`vislearn.diffusion.samplers` (``cond`` unused)."""
        return self(x_t, t)

    @torch.no_grad()
    def sample(self, n: int, steps: int = 32, sampler: str = "ddim", generator: torch.Generator | None = None,
               latent_size: int | None = None, eta: float = 0.0) -> torch.Tensor:
        """``n`` latents sampled with a :mod:`vislearn.diffusion` sampler, **unscaled** (ready for the decoder)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UserError(f"n must be a positive int, got {n!r}")
        get_sampler(sampler)
        side = latent_size or self.latent_size
        device, dtype = self.scaling_factor.device, next(self.parameters()).dtype
        kwargs: dict[str, Any] = {"eta": eta} if sampler == "ddim" else {}
        x = sample(sampler, self.denoise, (n, self.latent_channels, side, side), None, steps=steps,
                   generator=generator, device=device, dtype=dtype, **kwargs)
        return self.unscale(x)


@register_model("latent_diffusion", input_size=(4, 4, 4), paper="Rombach et al. 2022 (LDM); SWYCC claim (c)")
def latent_diffusion(**kwargs) -> LatentDiffusion:
    return LatentDiffusion(**kwargs)
