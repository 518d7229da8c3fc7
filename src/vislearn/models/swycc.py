"""SWYCC: an autoencoder whose decoder samples the detail the latent cannot hold.

Birodkar, Barcik, Lyon, Ioffe, Minnen, Dillon, "Sample what you can't compress", arXiv 2409.02529
(PAPERS.md section 8; the paper body is not available to us, wave2-methods.md 4). Three networks::

    z      = E(x)                          encoder: ResNet blocks, GroupNorm, GELU, downsampling
    x_init = D_initial(z)                  a plain upsampling decoder, depth-to-space (PixelShuffle)
    x0_hat = D_refine(x_t, t, x_init)      a U-Net that predicts x from x_t = α_t x + σ_t ε

``D_refine`` is conditioned on ``x_init`` by channel concatenation with ``x_t`` and on the noise level
by a sinusoidal embedding. Decoding samples ``x`` with a :mod:`vislearn.diffusion` sampler that calls
``D_refine`` as its x-prediction ``denoise``; all three networks train jointly under one loss
(:mod:`vislearn.losses.diffusion`), so the encoder learns a latent for a *stochastic* decoder.

What the paper (as far as we can read it) fixes: the three parts above, x-prediction, a cosine
schedule, concatenation conditioning [S], GELU + GroupNorm ResNet blocks, depth-to-space
upsampling, and a deterministic latent regularised only by its channel count (no KL).

Our choices where the paper is silent or unavailable (each an option of :class:`SWYCC`):

* **Pixel scale**: the networks work on ``2x − 1`` (``normalization=(0.5, 0.5)``), where the
  diffusion's unit-variance noise is on the scale of the data. Public methods take and return [0, 1].
* **Encoder**: a stem 3×3 convolution, then per level ``layers_per_block`` ResNet blocks (diffusers'
  ``ResnetBlock2D`` with GELU) and a 2×2 average pool between levels (MaskGIT-style pooling, as the
  summaries say), then GroupNorm, GELU and a 1×1 convolution to ``latent_channels``. Widths
  ``width × channel_mult``; ``log2(downsample)`` pools.
* **D_initial**: the encoder mirrored: a 3×3 convolution from the latent, ResNet blocks per level,
  and each 2× upsampling a 3×3 convolution to 4× the channels followed by ``PixelShuffle(2)``.
* **D_refine**: diffusers' ``UNet2DModel`` (so its config is a diffusers config), input channels
  3 (``x_t``) + 3 (``x_init``), no class conditioning, attention only in the mid block
  (``refine_attention``). Its timestep input is ``1000 t`` (diffusers' convention for a 1000-step
  table; a continuous ``t`` goes through the same sinusoidal embedding). It predicts ``x`` directly,
  not a residual over ``x_init``.
* **Defaults** are small (32×32 CPU training); the paper's widths, latent shapes and step counts
  are not known to us. ``latent_channels=4`` and ``downsample=8`` match SD-VAE's f8c4 for comparison.
* **Decoding**: ``decode`` samples with DDIM (η = 0) in 8 steps by default, clamps the result to
  [0, 1], and runs without gradients; train through :meth:`SWYCC.denoise` instead.

The baselines of the paper's comparison use the same family (:mod:`vislearn.recipes.swycc`):

* ``refine=False``: no D_refine; ``decode`` is D_initial (deterministic; ``steps``/``sampler`` are
  validated and ignored). The MSE and GAN autoencoders are E + D_initial of the same widths and
  latent size.
* ``posterior="gaussian"`` (SD-VAE style, for the GAN arm's KL term): E's last 1×1 convolution
  predicts ``2 × latent_channels`` maps, a mean and a log-variance (clamped to [−30, 20] as SD
  does); :meth:`SWYCC.posterior` returns both, ``encode`` returns the mean (the posterior's mode).
  SWYCC itself keeps the deterministic latent (``"deterministic"``, the default).

``forward(x)`` is the encoder (``z``), and ``forward_features`` returns the encoder's levels with
``feature_info``: the model fits the backbone contract of :class:`VisionModel` as an encoder. It
has no classifier (``num_classes`` is not an option) and no BatchNorm.

Example::

    model = create_model("swycc", latent_channels=4, downsample=8)
    z = model.encode(images)                                   # N×4×H/8×W/8
    recon = model.decode(z, steps=8, sampler="ddim", generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from vislearn.diffusion.samplers import check_steps, get_sampler, sample
from vislearn.errors import UserError
from vislearn.models.base import FeatureInfo, VisionModel
from vislearn.models.registry import register_model

__all__ = ["SWYCC", "SWYCCDecoderInitial", "SWYCCEncoder"]

SWYCC_MEAN = (0.5, 0.5, 0.5)  # [0, 1] → [−1, 1]
SWYCC_STD = (0.5, 0.5, 0.5)
TIMESTEP_SCALE = 1000.0  # D_refine sees 1000 t (diffusers' timestep range)
POSTERIORS = ("deterministic", "gaussian")
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # SD's DiagonalGaussianDistribution clamp


def _res_block(in_chans: int, out_chans: int, groups: int) -> nn.Module:
    # diffusers is imported here, not at module level: it costs seconds, and `import vislearn` imports every model
    from diffusers.models.resnet import ResnetBlock2D

    return _NoTemb(ResnetBlock2D(in_channels=in_chans, out_channels=out_chans, temb_channels=None, groups=groups,
                                 non_linearity="gelu", eps=1e-6))


class _NoTemb(nn.Module):
    """A diffusers ``ResnetBlock2D`` called without a time embedding (so it fits in ``nn.Sequential``)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x, None)


class SWYCCEncoder(nn.Module):
    """E: ResNet blocks (GroupNorm, GELU) per level, 2×2 average pooling between levels, 1×1 to the latent.

    ``stages[i]`` is level ``i`` (stride ``2^i``); the last stage maps to ``latent_channels``.
    """

    def __init__(self, widths: Sequence[int], latent_channels: int, layers_per_block: int, groups: int) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        prev = widths[0]
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [nn.Conv2d(3, w, 3, padding=1)] if i == 0 else [nn.AvgPool2d(2)]
            for _ in range(layers_per_block):
                layers.append(_res_block(prev, w, groups))
                prev = w
            stages.append(nn.Sequential(*layers))
        to_latent = nn.Sequential(nn.GroupNorm(groups, prev, eps=1e-6), nn.GELU(), nn.Conv2d(prev, latent_channels, 1))
        stages.append(to_latent)
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


class SWYCCDecoderInitial(nn.Module):
    """D_initial: the encoder mirrored, upsampling by depth-to-space (3×3 conv to 4C, ``PixelShuffle(2)``)."""

    def __init__(self, widths: Sequence[int], latent_channels: int, layers_per_block: int, groups: int) -> None:
        super().__init__()
        rev = list(reversed(widths))
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, rev[0], 3, padding=1)]
        prev = rev[0]
        for i, w in enumerate(rev):
            if i > 0:
                layers += [nn.Conv2d(prev, 4 * w, 3, padding=1), nn.PixelShuffle(2)]
                prev = w
            for _ in range(layers_per_block):
                layers.append(_res_block(prev, w, groups))
        layers += [nn.GroupNorm(groups, prev, eps=1e-6), nn.GELU(), nn.Conv2d(prev, 3, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


def _refine_unet(widths: Sequence[int], layers_per_block: int, groups: int, attention: bool) -> nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(in_channels=6, out_channels=3, block_out_channels=tuple(widths),
                       down_block_types=("DownBlock2D",) * len(widths), up_block_types=("UpBlock2D",) * len(widths),
                       layers_per_block=layers_per_block, norm_num_groups=groups, add_attention=attention,
                       attention_head_dim=8, act_fn="silu")


class SWYCC(VisionModel):
    """The SWYCC autoencoder (module docstring): ``encode``, ``decode_initial``, ``decode``, ``reconstruct``.

    Args:
        latent_channels: channels of ``z`` (the only regulariser of the latent).
        downsample: spatial factor of ``z``: 8 or 16.
        width: base width of E and D_initial; level widths are ``width × channel_mult``.
        channel_mult: one multiplier per level (``log2(downsample) + 1`` levels); default
            ``(1, 1, 2, 2)`` for 8 and ``(1, 1, 2, 2, 4)`` for 16.
        layers_per_block: ResNet blocks per level in E and D_initial.
        refine_width, refine_channel_mult, refine_layers_per_block: the D_refine U-Net (its levels
            may not exceed E's: the image size must divide by its total downsampling).
        refine_attention: self-attention in the U-Net's mid block.
        norm_groups: GroupNorm groups everywhere (every width must divide by it).
        normalization: ``(mean, std)`` mapping [0, 1] images to the networks' scale (default → [−1, 1]).
        refine: build D_refine (``False``: an E + D_initial autoencoder, the baselines).
        posterior: ``"deterministic"`` (``z = E(x)``) or ``"gaussian"`` (E predicts mean and log-variance).
    """

    in_chans = 3

    def __init__(self, latent_channels: int = 4, downsample: int = 8, width: int = 32,
                 channel_mult: Sequence[int] | None = None, layers_per_block: int = 1, refine_width: int = 32,
                 refine_channel_mult: Sequence[int] = (1, 2, 2), refine_layers_per_block: int = 1,
                 refine_attention: bool = True, norm_groups: int = 8,
                 normalization=(SWYCC_MEAN, SWYCC_STD), refine: bool = True,
                 posterior: str = "deterministic") -> None:
        super().__init__(normalization=normalization)
        if posterior not in POSTERIORS:
            raise UserError(f"posterior must be one of {', '.join(POSTERIORS)}, got {posterior!r}")
        if not isinstance(refine, bool):
            raise UserError(f"refine must be true or false, got {refine!r}")
        _positive_int("latent_channels", latent_channels)
        if downsample not in (8, 16):
            raise UserError(f"downsample must be 8 or 16, got {downsample!r}")
        levels = int(math.log2(downsample)) + 1
        if channel_mult is None:
            channel_mult = (1, 1, 2, 2, 4)[:levels]
        if len(channel_mult) != levels:
            raise UserError(f"channel_mult needs {levels} entries for downsample={downsample}, "
                            f"got {tuple(channel_mult)}")
        if not 1 <= len(refine_channel_mult) <= levels:
            raise UserError(f"refine_channel_mult needs 1 to {levels} entries for downsample={downsample}, "
                            f"got {tuple(refine_channel_mult)}")
        for name, v in (("width", width), ("refine_width", refine_width), ("layers_per_block", layers_per_block),
                        ("refine_layers_per_block", refine_layers_per_block), ("norm_groups", norm_groups)):
            _positive_int(name, v)
        widths = [width * m for m in channel_mult]
        refine_widths = [refine_width * m for m in refine_channel_mult]
        bad = [w for w in widths + refine_widths if w % norm_groups]
        if bad:
            raise UserError(f"every width must be divisible by norm_groups={norm_groups}, got {bad}")
        self.latent_channels = latent_channels
        self.downsample = downsample
        self.min_input_size = downsample
        self.posterior_kind = posterior
        moments = 2 if posterior == "gaussian" else 1
        self.encoder = SWYCCEncoder(widths, moments * latent_channels, layers_per_block, norm_groups)
        self.decoder_initial = SWYCCDecoderInitial(widths, latent_channels, layers_per_block, norm_groups)
        self.decoder_refine = (_refine_unet(refine_widths, refine_layers_per_block, norm_groups, refine_attention)
                               if refine else None)
        self.feature_info = [FeatureInfo(f"level{i}", w, 2**i) for i, w in enumerate(widths)]
        self.feature_info.append(FeatureInfo("latent" if moments == 1 else "moments", moments * latent_channels,
                                             downsample))

    @property
    def stages(self) -> nn.ModuleList:
        """The encoder's levels, which :meth:`VisionModel.forward_features` runs (not registered twice)."""
        return self.encoder.stages

    # -- validation --------------------------------------------------------------------------------
    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate [0, 1] images whose height and width divide by ``downsample``; map to the network scale."""
        x = super().prepare_input(x)
        h, w = x.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise UserError(f"SWYCC: image size {h}×{w} is not divisible by the downsample factor "
                            f"{self.downsample} (crop or pad to a multiple, e.g. "
                            f"{h // self.downsample * self.downsample}×{w // self.downsample * self.downsample})")
        return x

    def check_latent(self, z: torch.Tensor) -> None:
        """``UserError`` unless ``z`` is a float N×latent_channels×h×w tensor."""
        if not isinstance(z, torch.Tensor) or not torch.is_floating_point(z) or z.dim() != 4 \
                or z.shape[1] != self.latent_channels:
            got = f"shape {tuple(z.shape)}, dtype {z.dtype}" if isinstance(z, torch.Tensor) else type(z).__name__
            raise UserError(f"SWYCC: expected a float latent of shape N×{self.latent_channels}×h×w, got {got}")
        if not torch.isfinite(z).all():
            raise UserError("SWYCC: the latent contains NaN or inf")

    # -- the three networks in the network scale (what the loss trains) ----------------------------
    @property
    def has_refine(self) -> bool:
        """Whether the model has a diffusion decoder D_refine (``False`` for the baselines)."""
        return self.decoder_refine is not None

    @property
    def last_decoder_layer(self) -> nn.Conv2d:
        """D_initial's output convolution (where the GAN arm's adaptive weight compares gradients)."""
        return self.decoder_initial.layers[-1]

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)`` of the latent for [0, 1] images (``posterior="gaussian"`` only)."""
        if self.posterior_kind != "gaussian":
            raise UserError("SWYCC: this model has a deterministic latent (posterior='deterministic'); "
                            "build it with posterior='gaussian' for a mean and log-variance")
        mean, logvar = self.encoder(self.prepare_input(x)).chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images → latent ``z`` (the encoder; the posterior mean when it is Gaussian)."""
        z = self.encoder(self.prepare_input(x))
        return z[:, :self.latent_channels] if self.posterior_kind == "gaussian" else z

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (H, W divisible by ``downsample``) → ``z``, N×latent_channels×H/ds×W/ds."""
        return self(x)

    def initial(self, z: torch.Tensor) -> torch.Tensor:
        """D_initial in the network scale ([−1, 1] for the default normalisation), unclamped: for losses."""
        self.check_latent(z)
        return self.decoder_initial(z)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """D_refine: ``x0_hat`` from ``x_t`` at times ``t`` (shape (N,), in [0, 1]) given ``cond = initial(z)``.

        The x-prediction ``denoise(x_t, t, cond)`` callable of :mod:`vislearn.diffusion.samplers`.
        """
        if self.decoder_refine is None:
            raise UserError("SWYCC: this autoencoder has no diffusion decoder (refine=False)")
        t = torch.as_tensor(t, device=x_t.device, dtype=x_t.dtype).reshape(-1).expand(x_t.shape[0])
        return self.decoder_refine(torch.cat([x_t, cond], 1), TIMESTEP_SCALE * t).sample

    # -- [0, 1] images ------------------------------------------------------------------------------
    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """Network scale → [0, 1] images (undo the normalisation, clamp)."""
        if self.norm_mean.numel():
            x = x * self.norm_std.to(x.dtype) + self.norm_mean.to(x.dtype)
        return x.clamp(0, 1)

    def decode_initial(self, z: torch.Tensor) -> torch.Tensor:
        """The deterministic rough reconstruction D_initial(z) as [0, 1] images."""
        return self.to_images(self.initial(z))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, steps: int = 8, sampler: str = "ddim", generator: torch.Generator | None = None,
               eta: float = 0.0) -> torch.Tensor:
        """Sample images for ``z`` with ``sampler`` (``"ddim"``, ``"ddpm"``, ``"heun"``) in ``steps`` steps.

        ``generator`` is the only source of randomness (same generator state → same images);
        ``eta`` only for DDIM. Returns [0, 1] images N×3×(h·ds)×(w·ds). No gradients.
        """
        get_sampler(sampler)  # an unknown name fails before any work
        check_steps(steps)
        cond = self.initial(z)
        if self.decoder_refine is None:  # a baseline autoencoder: D_initial is the decoder
            return self.to_images(cond)
        kwargs: dict[str, Any] = {"eta": eta} if sampler == "ddim" or eta else {}
        x0 = sample(sampler, self.denoise, tuple(cond.shape), cond, steps=steps, generator=generator,
                    device=cond.device, dtype=cond.dtype, **kwargs)
        return self.to_images(x0)

    def reconstruct(self, x: torch.Tensor, steps: int = 8, sampler: str = "ddim",
                    generator: torch.Generator | None = None, eta: float = 0.0) -> torch.Tensor:
        """``decode(encode(x), ...)``: a sampled reconstruction of [0, 1] images."""
        with torch.no_grad():
            z = self.encode(x)
        return self.decode(z, steps=steps, sampler=sampler, generator=generator, eta=eta)


def _positive_int(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise UserError(f"{name} must be a positive int, got {v!r}")


@register_model("swycc", input_size=(3, 32, 32), paper="Birodkar et al. 2024, arXiv 2409.02529")
def swycc(**kwargs) -> SWYCC:
    return SWYCC(**kwargs)
